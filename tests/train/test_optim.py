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
