"""MoCo v3: the contract and heads, the loss (``2T``-scaled, both directions), the cosine
momentum update, a ViT smoke run on 8 devices (1 vs 8 devices with the CNN:
test_one_vs_eight.py), and learning on digits."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax import losses, methods
from ssl_jax.methods import moco_v3
from ssl_jax.methods.common import cosine_momentum

SMALL = {"method": "moco_v3", "method_kwargs.proj_hidden_dim": 32, "method_kwargs.proj_dim": 8,
         "method_kwargs.pred_hidden_dim": 32, "method_kwargs.temperature": 0.5}
VIT = {"encoder": "vit_micro", "encoder_kwargs": "{'image_size': 8, 'patch_size': 4, "
       "'in_channels': 1, 'pos_embed': 'sincos'}"}


def _views(seed=0, n=6):
  rng = np.random.default_rng(seed)
  images = jnp.asarray(rng.uniform(size=(n, 8, 8, 1)), jnp.float32)
  return images, images + 0.1 * jnp.asarray(rng.normal(size=images.shape), jnp.float32)


def test_defaults():
  kw = methods.get_module("moco_v3").default_config()
  assert (kw.temperature, kw.base_momentum, kw.final_momentum) == (0.2, 0.99, 1.0)
  assert (kw.proj_hidden_dim, kw.proj_dim, kw.proj_layers, kw.pred_layers) == (4096, 256, 3, 2)


def test_contract_heads_and_loss(make_config):
  config = make_config(**SMALL)
  method = methods.make("moco_v3", config)
  params, stats, mstate = method.init(jax.random.key(0), None)
  assert set(params) == {"encoder", "projector", "predictor"}
  assert set(mstate["momentum"]["params"]) == {"encoder", "projector"}
  for k in ("encoder", "projector"):
    jax.tree.map(np.testing.assert_array_equal, mstate["momentum"]["params"][k], params[k])
  # Heads as the official _build_mlp: no biases; BN without affine after the projector's output
  # layer, no BN after the predictor's.
  for head, layers in (("projector", 3), ("predictor", 2)):
    assert len(params[head]["layers"]) == layers
    assert all(set(layer) == {"kernel"} for layer in params[head]["layers"].values())
  assert set(params["projector"]["norms"]) == {0, 1} and set(stats["projector"]["norms"]) == {
      0, 1, 2}  # the output BatchNorm has statistics but no scale or bias
  assert set(params["predictor"]["norms"]) == set(stats["predictor"]["norms"]) == {0}

  x1, x2 = _views()
  batch = {"views": {"a": x1, "b": x2}}
  loss_fn = jax.jit(functools.partial(method.loss_fn, axis_name=None))
  loss, (metrics, new_stats, new_state) = loss_fn(params, stats, mstate, batch, jax.random.key(1))
  assert np.isfinite(loss) and float(metrics["loss"]) == float(loss)
  assert 0.0 < float(metrics["embedding_std_ratio"]) <= 1.0 + 1e-5
  assert jax.tree.structure(new_stats) == jax.tree.structure(stats)
  jax.tree.map(np.testing.assert_array_equal, new_state["momentum"]["params"],
               mstate["momentum"]["params"])
  assert method.features(params, stats, {}, x1).shape == (6, 16)

  # loss = 2T [infonce(q1, k2) + infonce(q2, k1)], each view in its own forward pass.
  base = moco_v3.build_networks(config, with_predictor=True).bind(params, stats)
  mom = moco_v3.build_networks(config, with_predictor=False).bind(
      mstate["momentum"]["params"], mstate["momentum"]["batch_stats"])
  q = lambda x: base.predictor(base.projector(base.encoder(x, train=True), train=True), train=True)
  k = lambda x: mom.projector(mom.encoder(x, train=True), train=True)
  expected = 2 * 0.5 * (losses.infonce(q(x1), k(x2), temperature=0.5)
                        + losses.infonce(q(x2), k(x1), temperature=0.5))
  np.testing.assert_allclose(loss, expected, rtol=1e-5)
  swapped, _ = loss_fn(params, stats, mstate, {"views": {"a": x2, "b": x1}}, jax.random.key(1))
  np.testing.assert_allclose(swapped, loss, rtol=1e-5)  # symmetric in the two views


def test_cosine_momentum_update(make_config):
  """``momentum <- m * momentum + (1 - m) * base`` with ``m`` from 0.99 cosine to 1; the update
  after optimizer step ``t`` prepares iteration ``t + 1``'s keys, so it uses ``m(t + 1)``."""
  config = make_config(**SMALL, **{"method_kwargs.base_momentum": 0.9})
  method = methods.make("moco_v3", config, methods.RunInfo(total_steps=10))
  params, stats, mstate = method.init(jax.random.key(0), None)
  moved = jax.tree.map(lambda p: p + 1.0, params)
  for step in (0, 4):
    m = float(cosine_momentum(step + 1, 10, 0.9))
    new = method.update(moved, stats, mstate, jnp.int32(step))
    for k in ("encoder", "projector"):
      jax.tree.map(lambda n, t, p, m=m: np.testing.assert_allclose(n, m * t + (1 - m) * p,
                                                                   rtol=1e-6, atol=1e-6),
                   new["momentum"]["params"][k], mstate["momentum"]["params"][k], moved[k])
  assert 0.9 < float(cosine_momentum(1, 10, 0.9)) < float(cosine_momentum(5, 10, 0.9)) < 1.0
  last = method.update(moved, stats, mstate, jnp.int32(9))  # m(10) = 1: no change
  jax.tree.map(np.testing.assert_array_equal, last["momentum"], mstate["momentum"])
  assert set(new["momentum"]["params"]) == {"encoder", "projector"}  # no predictor


def test_vit_two_steps_on_eight_devices(make_config, two_steps_on_eight_devices):
  """A ViT backbone (vit_micro with sin-cos position embeddings, 3-layer projector)."""
  config = make_config(**SMALL, **VIT, total_steps=2)
  (start, *_, state), _ = two_steps_on_eight_devices(config, ("positive_cosine",))
  assert "pos_embed" not in start.params["encoder"]  # fixed sin-cos: not a parameter
  assert "encoder" not in start.batch_stats  # a ViT has no BatchNorm; the heads do
  method = methods.make("moco_v3", config)
  assert method.features(state.params, state.batch_stats, state.method_state, _views()[0]).shape == (6, 32)


@pytest.mark.slow
def test_learns_on_digits(learns_on_digits):
  """A short run of the digits recipe: the encoder's features beat the same network at random
  init (and raw pixels) on every paired label draw, with 1 and 5 labels per class."""
  # fit/val: 1-label 82.1%; smallest gain over random init 0.234 (1 label) and 0.107 (5), over
  # raw pixels 0.107 and 0.028 (0.032 after 350 steps), hence 0.02 here.
  results, _ = learns_on_digits("moco_v3", 250, margin=0.08, raw_margin=0.02)
  assert results["linear"]["ssl"]["1"] > 0.8