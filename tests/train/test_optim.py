"""Optimizer builders: schedules, batch scaling, decay masks, logged learning rate."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from ssl_jax import config as config_lib
from ssl_jax.train import optim


def opt_config(**kw):
  c = config_lib.base_config().optimizer
  c.update(kw)
  return c


PARAMS = {"conv": {"kernel": jnp.ones((3, 3, 2, 4)), "bias": jnp.ones(4)},
          "bn": {"scale": jnp.ones(4), "bias": jnp.ones(4)},
          "vit": {"pos_embed": jnp.ones((1, 5, 4)), "dense": {"kernel": jnp.ones((4, 4))}}}


def test_decay_mask_excludes_biases_norms_and_position_embeddings():
  mask = optim.decay_mask(PARAMS)
  assert mask == {"conv": {"kernel": True, "bias": False}, "bn": {"scale": False, "bias": False},
                  "vit": {"pos_embed": False, "dense": {"kernel": True}}}


@pytest.mark.parametrize("scaling, expected", [("linear", 0.3 * 512 / 256),
                                               ("sqrt", 0.3 * np.sqrt(512)), ("none", 0.3)])
def test_peak_learning_rate_scaling(scaling, expected):
  assert optim.peak_learning_rate(0.3, 512, scaling) == pytest.approx(expected)


def test_warmup_then_cosine():
  tx, schedule = optim.build_optimizer(opt_config(lr=0.1, warmup_epochs=1.0), batch_size=256,
                                       total_steps=100, steps_per_epoch=10)
  np.testing.assert_allclose([schedule(0), schedule(5), schedule(10), schedule(55), schedule(100)],
                             [0.0, 0.05, 0.1, 0.05, 0.0], atol=1e-7)


def test_a_run_no_longer_than_its_warmup_warns(caplog):
  with caplog.at_level("WARNING", logger="ssl_jax.train.optim"):
    _, schedule = optim.build_optimizer(opt_config(lr=0.1, warmup_steps=60), batch_size=256,
                                        total_steps=40, steps_per_epoch=10)
  assert float(schedule(39)) > 0.09  # ends at the peak: hence the warning
  [record] = caplog.records
  assert ("run's 40 steps (--config.total_steps / --config.epochs) are no longer than its "
          "learning-rate warm-up of 60 steps (--config.optimizer.warmup_steps)") in record.message
  assert "--config.optimizer.warmup_steps=4" in record.message
  caplog.clear()
  with caplog.at_level("WARNING", logger="ssl_jax.train.optim"):
    optim.build_optimizer(opt_config(lr=0.1, warmup_epochs=10.0), batch_size=256,
                          total_steps=50, steps_per_epoch=10)
    assert "--config.optimizer.warmup_epochs=10.0 (100 steps)" in caplog.records[0].message
    caplog.clear()
    optim.build_optimizer(opt_config(lr=0.1, warmup_steps=60), batch_size=256, total_steps=61,
                          steps_per_epoch=10)  # longer than the warm-up: no warning
  assert not caplog.records


@pytest.mark.parametrize("name", optim.OPTIMIZERS)
def test_every_optimizer_steps_and_reports_its_learning_rate(name):
  tx, schedule = optim.build_optimizer(opt_config(name=name, lr=0.1, warmup_steps=2,
                                                  weight_decay=0.1),
                                       batch_size=256, total_steps=10, steps_per_epoch=10)
  state = tx.init(PARAMS)
  grads = jax.tree.map(jnp.ones_like, PARAMS)
  params = PARAMS
  for step in range(3):
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    np.testing.assert_allclose(optim.current_learning_rate(state), schedule(step), rtol=1e-6)
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))


def test_weight_decay_skips_masked_leaves():
  # Zero gradients: only weight decay moves parameters, and only the decayed ones.
  tx, _ = optim.build_optimizer(opt_config(name="sgd", lr=0.1, momentum=0.0, warmup_steps=0,
                                           weight_decay=0.5, lr_scaling="none"),
                                batch_size=256, total_steps=10, steps_per_epoch=10)
  updates, _ = tx.update(jax.tree.map(jnp.zeros_like, PARAMS), tx.init(PARAMS), PARAMS)
  moved = jax.tree.map(lambda u: bool(jnp.any(u != 0)), updates)
  assert moved == optim.decay_mask(PARAMS)


def test_bad_names():
  with pytest.raises(ValueError, match="optimizer.name='adam'.*adamw"):
    optim.build_optimizer(opt_config(name="adam"), batch_size=8, total_steps=2, steps_per_epoch=1)
  with pytest.raises(ValueError, match="lr_scaling"):
    optim.peak_learning_rate(0.1, 8, "cubic")


def _old_build_optimizer(cfg, *, batch_size, total_steps, steps_per_epoch):
  """The implementation before schedules, weight-decay schedules and groups (reference)."""
  peak = optim.peak_learning_rate(cfg.lr, batch_size, cfg.lr_scaling, cfg.base_batch)
  warmup = cfg.warmup_steps if cfg.warmup_steps >= 0 else round(cfg.warmup_epochs * steps_per_epoch)
  warmup = min(warmup, max(total_steps - 1, 0))
  schedule = optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=peak, warmup_steps=warmup,
      decay_steps=max(total_steps, warmup + 1), end_value=peak * cfg.final_lr_fraction)

  def factory(learning_rate):
    mask = optim.decay_mask if cfg.exclude_bias_and_norm else None
    if cfg.name == "sgd":
      parts = []
      if cfg.weight_decay:
        parts.append(optax.add_decayed_weights(cfg.weight_decay, mask=mask))
      parts.append(optax.sgd(learning_rate, momentum=cfg.momentum or None, nesterov=cfg.nesterov))
      return optax.chain(*parts)
    if cfg.name == "adamw":
      return optax.adamw(learning_rate, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                         weight_decay=cfg.weight_decay, mask=mask)
    if cfg.name == "lars":
      return optax.lars(learning_rate, weight_decay=cfg.weight_decay, weight_decay_mask=mask,
                        trust_ratio_mask=mask, trust_coefficient=cfg.trust_coefficient,
                        momentum=cfg.momentum, nesterov=cfg.nesterov)
    return optax.lamb(learning_rate, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                      weight_decay=cfg.weight_decay, mask=mask)

  return optax.inject_hyperparams(factory)(learning_rate=schedule)


def _grads(seed, tree=PARAMS):
  keys = jax.random.split(jax.random.key(seed), len(jax.tree.leaves(tree)))
  leaves = [jax.random.normal(k, x.shape) for k, x in zip(keys, jax.tree.leaves(tree))]
  return jax.tree.unflatten(jax.tree.structure(tree), leaves)


def _run(tx, params, steps):
  """(params, opt_state) after each of ``steps`` updates with fixed random gradients."""
  state, out = tx.init(params), []
  for step in range(steps):
    updates, state = tx.update(_grads(step, params), state, params)
    params = optax.apply_updates(params, updates)
    out.append((params, state))
  return out


@pytest.mark.parametrize("name", optim.OPTIMIZERS)
def test_default_config_is_bit_identical_to_the_previous_implementation(name):
  cfg = opt_config(name=name, weight_decay=0.1, warmup_steps=2)
  kw = dict(batch_size=512, total_steps=6, steps_per_epoch=3)
  new, _ = optim.build_optimizer(cfg, **kw)
  old = _old_build_optimizer(cfg, **kw)
  for (p_new, s_new), (p_old, s_old) in zip(_run(new, PARAMS, 4), _run(old, PARAMS, 4)):
    assert jax.tree.structure(s_new) == jax.tree.structure(s_old)
    jax.tree.map(np.testing.assert_array_equal, (p_new, s_new), (p_old, s_old))


def test_schedule_shapes_against_hand_computed_values():
  steps = [0, 5, 10, 30, 60, 75, 100, 110, 200]
  constant = optim.make_schedule(2.0, total_steps=100, warmup_steps=10, kind="constant")
  np.testing.assert_allclose([constant(s) for s in steps], [0, 1, 2, 2, 2, 2, 2, 2, 2], atol=1e-6)
  linear = optim.make_schedule(1.0, total_steps=110, warmup_steps=10, final_lr_fraction=0.1,
                               kind="linear")  # 100 decay steps: 1 - 0.9 * (t - 10) / 100
  np.testing.assert_allclose([linear(s) for s in steps],
                             [0, 0.5, 1, 0.82, 0.55, 0.415, 0.19, 0.1, 0.1], atol=1e-6)
  # warmup 10, hold 40, exponential decay over 50 steps: 0.01 ** ((t - 50) / 50).
  tri = optim.make_schedule(1.0, total_steps=100, warmup_steps=999,  # unused: phases[0]
                            final_lr_fraction=0.01, kind="tri_stage", phases=(0.1, 0.4, 0.5))
  np.testing.assert_allclose([tri(s) for s in steps],
                             [0, 0.5, 1, 1, 0.01 ** 0.2, 0.1, 0.01, 0.01, 0.01], rtol=1e-5)
  with pytest.raises(ValueError, match="final_lr_fraction"):
    optim.make_schedule(1.0, total_steps=100, warmup_steps=0, kind="tri_stage")
  with pytest.raises(ValueError, match="schedule='cos'"):
    optim.make_schedule(1.0, total_steps=100, warmup_steps=0, kind="cos")


def test_weight_decay_schedule_is_a_cosine_and_reaches_the_update():
  wd = optim.weight_decay_schedule(0.04, 0.4, total_steps=100)
  expected = [0.04, 0.4 - 0.36 * 0.5 * (1 + np.cos(np.pi / 4)), 0.22, 0.4, 0.4]
  np.testing.assert_allclose([wd(s) for s in (0, 25, 50, 100, 150)], expected, rtol=1e-6)
  # SGD, constant lr 0.5, zero gradients: the update of a decayed leaf is -0.5 * wd(t) * p.
  tx, _ = optim.build_optimizer(
      opt_config(name="sgd", lr=0.5, lr_scaling="none", momentum=0.0, warmup_steps=0,
                 schedule="constant", weight_decay=0.04, weight_decay_end=0.4),
      batch_size=256, total_steps=4, steps_per_epoch=4)
  state, zeros = tx.init(PARAMS), jax.tree.map(jnp.zeros_like, PARAMS)
  wd4 = optim.weight_decay_schedule(0.04, 0.4, total_steps=4)
  for step in range(4):
    updates, state = tx.update(zeros, state, PARAMS)
    np.testing.assert_allclose(updates["conv"]["kernel"], -0.5 * wd4(step), rtol=1e-6)
    assert not np.any(updates["conv"]["bias"])


TOY = {"backbone": {"kernel": jnp.full((2, 2), 2.0), "bias": jnp.ones(2)},
       "projector": {"kernel": jnp.full((2, 3), -1.0)}}
GROUPS = {"proj": {"pattern": "^projector/", "lr_mult": 10.0, "wd_mult": 0.5}}


def _toy_optimizer(name, groups=GROUPS, **kw):
  cfg = opt_config(name=name, lr=0.1, lr_scaling="none", momentum=0.0, warmup_steps=0,
                   schedule="constant", weight_decay=0.2, **kw)
  cfg.groups = ml_collections.ConfigDict(groups)
  return optim.build_optimizer(cfg, batch_size=256, total_steps=10, steps_per_epoch=5)[0]


def test_group_multipliers_scale_sgd_and_adamw_updates():
  g = _grads(0, TOY)
  # SGD: u = -lr * (g + wd * p) on weights, -lr * g on the bias (no decay).
  tx = _toy_optimizer("sgd")
  updates, state = tx.update(g, tx.init(TOY), TOY)
  np.testing.assert_allclose(updates["backbone"]["kernel"],
                             -0.1 * (g["backbone"]["kernel"] + 0.2 * 2.0), rtol=1e-6)
  np.testing.assert_allclose(updates["backbone"]["bias"], -0.1 * g["backbone"]["bias"], rtol=1e-6)
  np.testing.assert_allclose(updates["projector"]["kernel"],
                             -1.0 * (g["projector"]["kernel"] + 0.1 * -1.0), rtol=1e-6)
  rates = optim.current_learning_rates(state)
  np.testing.assert_allclose([rates["default"], rates["proj"]], [0.1, 1.0], rtol=1e-6)
  np.testing.assert_allclose(optim.current_learning_rate(state), 0.1, rtol=1e-6)
  # AdamW, first step: m_hat = g, v_hat = g^2, u = -lr * (g / (|g| + eps) + wd * p).
  tx = _toy_optimizer("adamw")
  updates, _ = tx.update(g, tx.init(TOY), TOY)
  adam = lambda x: x / (np.abs(x) + 1e-8)
  np.testing.assert_allclose(updates["backbone"]["kernel"],
                             -0.1 * (adam(g["backbone"]["kernel"]) + 0.2 * 2.0), atol=1e-6)
  np.testing.assert_allclose(updates["projector"]["kernel"],
                             -1.0 * (adam(g["projector"]["kernel"]) + 0.1 * -1.0), atol=1e-5)


@pytest.mark.parametrize("name, frozen", [("adamw", {"frozen_until_step": 3}),
                                          ("lars", {"frozen_until_epoch": 0.6})])  # 0.6 * 5 = 3
def test_a_frozen_group_is_bit_identical_until_its_step_then_moves(name, frozen):
  tx = _toy_optimizer(name, {"proj": {**GROUPS["proj"], **frozen}})
  init_state = tx.init(TOY)
  history = _run(tx, TOY, 5)
  for step, (params, state) in enumerate(history):
    head, head_state = params["projector"], state.inner_states["proj"]
    if step < 3:  # parameters and the group's whole optimizer state untouched
      jax.tree.map(np.testing.assert_array_equal, head, TOY["projector"])
      held = lambda s: s.inner_state.inner_state  # MaskedState -> HoldState -> group state
      jax.tree.map(np.testing.assert_array_equal, held(head_state),
                   held(init_state.inner_states["proj"]))
      assert float(optim.current_learning_rates(state)["proj"]) == 0.0
    else:
      assert not np.array_equal(head["kernel"], TOY["projector"]["kernel"])
      np.testing.assert_allclose(optim.current_learning_rates(state)["proj"], 1.0, rtol=1e-6)
    assert not np.array_equal(params["backbone"]["kernel"], TOY["backbone"]["kernel"])
  # From step 3 the group starts fresh: its first move is an unfrozen optimizer's first move.
  fresh = _toy_optimizer(name)
  updates, _ = fresh.update(_grads(3, TOY), fresh.init(history[2][0]), history[2][0])
  np.testing.assert_allclose(history[3][0]["projector"]["kernel"],
                             TOY["projector"]["kernel"] + updates["projector"]["kernel"], rtol=1e-6)


def test_method_groups_and_config_overrides():
  cfg = opt_config(name="sgd", lr=0.1, lr_scaling="none", warmup_steps=0, schedule="constant")
  cfg.groups = ml_collections.ConfigDict({"proj": {"pattern": "^projector/", "lr_mult": 3.0}})
  method = {"proj": {"pattern": "^projector/", "lr_mult": 7.0},
            "bias": {"pattern": "bias$", "lr_mult": 0.5}}
  tx, _ = optim.build_optimizer(cfg, batch_size=256, total_steps=4, steps_per_epoch=4,
                                param_groups=method)
  rates = optim.current_learning_rates(tx.update(_grads(0, TOY), tx.init(TOY), TOY)[1])
  np.testing.assert_allclose([rates["default"], rates["proj"], rates["bias"]], [0.1, 0.3, 0.05],
                             rtol=1e-6)


@pytest.mark.parametrize("groups, message", [
    ({"nothing": {"pattern": "^classifier/"}},
     r"--config.optimizer.groups.nothing.pattern='\^classifier/' matches no parameter"),
    ({"a": {"pattern": "kernel"}, "b": {"pattern": "^projector/"}}, "matches the patterns of"),
    ({"a": {"pattern": "kernel", "lr": 2.0}}, r"groups.a: unknown keys \['lr'\]"),
    ({"default": {"pattern": "kernel"}}, "reserved"),
    ({"a": {"pattern": "kernel", "lr_mult": -1.0}}, "must be >= 0"),
])
def test_bad_groups_are_refused(groups, message):
  with pytest.raises(ValueError, match=message):
    tx = _toy_optimizer("sgd", groups)
    tx.init(TOY)


def test_constant_schedule_without_warmup_starts_at_the_peak():
  constant = optim.make_schedule(2.0, total_steps=10, warmup_steps=0, kind="constant")
  np.testing.assert_allclose([constant(0), constant(9)], [2.0, 2.0])
