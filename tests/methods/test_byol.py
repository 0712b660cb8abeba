"""BYOL: the method contract, the EMA target (scheduled momentum, skipped steps) and learning on
digits (1 vs 8 devices: test_one_vs_eight.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax import losses, methods
from ssl_jax.methods.common import cosine_momentum

HEADS = {"method": "byol", "method_kwargs.proj_hidden_dim": 32, "method_kwargs.proj_dim": 8,
         "method_kwargs.pred_hidden_dim": 32}


def test_defaults_follow_the_paper():
  kw = methods.get_module("byol").default_config()
  assert (kw.proj_hidden_dim, kw.proj_dim, kw.pred_hidden_dim, kw.base_momentum) == (
      4096, 256, 4096, 0.996)


def test_contract_target_state_and_loss(make_config):
  config = make_config(**HEADS)
  method = methods.make("byol", config, methods.RunInfo(total_steps=10))
  params, stats, mstate = method.init(jax.random.key(0), None)
  assert set(params) == {"encoder", "projector", "predictor"}
  target = mstate["target"]
  # The target mirrors the online encoder + projector (no predictor) and starts as a copy.
  assert set(target["params"]) == {"encoder", "projector"}
  jax.tree.map(np.testing.assert_array_equal, target["params"],
               {k: params[k] for k in ("encoder", "projector")})
  jax.tree.map(np.testing.assert_array_equal, target["batch_stats"],
               {k: stats[k] for k in ("encoder", "projector")})

  rng = np.random.default_rng(0)
  x_a, x_b = (jnp.asarray(rng.random((6, 8, 8, 1)), jnp.float32) for _ in range(2))
  loss_of = lambda p, views: method.loss_fn(p, stats, mstate, {"views": views},
                                            jax.random.key(1), axis_name=None)
  loss, (metrics, new_stats, new_mstate) = loss_of(params, {"a": x_a, "b": x_b})
  assert np.isfinite(loss) and 0.0 <= float(loss) <= 8.0  # two directions, each in [0, 4]
  assert float(metrics["loss"]) == float(loss)
  assert 0.0 < float(metrics["embedding_std_ratio"]) <= 1.5
  assert jax.tree.structure(new_stats) == jax.tree.structure(stats)
  # loss_fn leaves the target weights alone but runs it in train mode: its own BN averages move.
  jax.tree.map(np.testing.assert_array_equal, new_mstate["target"]["params"], target["params"])
  moved = jax.tree.map(lambda a, b: not np.allclose(a, b), new_mstate["target"]["batch_stats"],
                       target["batch_stats"])
  assert all(jax.tree.leaves(moved))
  # Symmetric: swapping the views gives the same loss (both directions are summed).
  swapped, _ = loss_of(params, {"a": x_b, "b": x_a})
  np.testing.assert_allclose(swapped, loss, rtol=1e-5)
  # No gradient reaches the target: the loss is a function of the online parameters only, and
  # the predictor (online only) gets one.
  grads = jax.grad(lambda p: loss_of(p, {"a": x_a, "b": x_b})[0])(params)
  assert float(jnp.abs(grads["predictor"]["layers"][0]["kernel"]).sum()) > 0
  assert method.features(params, stats, {}, x_a).shape == (6, 16)  # the online encoder


def test_byol_loss_directions(make_config):
  """The loss is ``byol_loss(p_a, z'_b) + byol_loss(p_b, z'_a)`` of the official code: check it
  against the networks run by hand."""
  config = make_config(**HEADS)
  method = methods.make("byol", config, methods.RunInfo(total_steps=10))
  params, stats, mstate = method.init(jax.random.key(0), None)
  module = methods.get_module("byol")
  online = module.build_networks(config, with_predictor=True).bind(params, stats)
  target = module.build_networks(config, with_predictor=False).bind(
      mstate["target"]["params"], mstate["target"]["batch_stats"])
  rng = np.random.default_rng(1)
  x_a, x_b = (jnp.asarray(rng.random((6, 8, 8, 1)), jnp.float32) for _ in range(2))
  p = {k: online.predictor(online.projector(online.encoder(x, train=True), train=True),
                           train=True) for k, x in (("a", x_a), ("b", x_b))}
  z = {k: target.projector(target.encoder(x, train=True), train=True)
       for k, x in (("a", x_a), ("b", x_b))}
  expected = losses.byol_loss(p["a"], z["b"]) + losses.byol_loss(p["b"], z["a"])
  loss, _ = method.loss_fn(params, stats, mstate, {"views": {"a": x_a, "b": x_b}},
                           jax.random.key(1), axis_name=None)
  np.testing.assert_allclose(loss, expected, rtol=1e-5)


def test_update_needs_total_steps(make_config):
  method = methods.make("byol", make_config(**HEADS))  # as evaluation builds it
  params, stats, mstate = method.init(jax.random.key(0), None)
  with pytest.raises(ValueError, match="total_steps"):
    method.update(params, stats, mstate, 0)


def test_target_is_scheduled_ema_and_skipped_steps_leave_it(make_config, digits_batches,
                                                            run_steps):
  """On 8 devices through the engine: after each step the target is ``m * target + (1 - m) *
  online`` with BYOL's cosine momentum at that step; a non-finite step (``debug.nan_at_step``)
  leaves the target, and its BN statistics, untouched."""
  total, base = 4, 0.9  # a short schedule so the momentum changes visibly from step to step
  config = make_config(**HEADS, total_steps=total, **{"method_kwargs.base_momentum": base,
                                                      "debug.nan_at_step": 1})
  source, batches = digits_batches(config, 3, seed=1)
  _, states, metrics = run_steps(config, source, batches)
  assert [int(m["skipped"]) for m in metrics] == [0, 1, 0]
  history = [(s.params, s.method_state["target"]) for s in states]
  for step in (0, 2):  # finite steps
    m = float(cosine_momentum(step, total, base))
    online = {k: history[step + 1][0][k] for k in ("encoder", "projector")}
    expected = jax.tree.map(lambda t, o: m * t + (1 - m) * o, history[step][1]["params"], online)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 history[step + 1][1]["params"], expected)
  assert float(cosine_momentum(0, total, base)) == pytest.approx(base)
  assert float(cosine_momentum(2, total, base)) == pytest.approx((1 + base) / 2)
  # Step 1 was skipped: target weights and statistics exactly as before it.
  jax.tree.map(np.testing.assert_array_equal, history[2][1], history[1][1])
  jax.tree.map(np.testing.assert_array_equal, history[2][0], history[1][0])


@pytest.mark.slow
def test_learns_on_digits(learns_on_digits):
  """A short run of the digits recipe: the encoder's features beat the same network at random
  init on every paired label draw, with 1 and 5 labels per class."""
  # fit/val: smallest gain over random init 0.159 (1 label) and 0.083 (5).
  learns_on_digits("byol", 250, margin=0.05)