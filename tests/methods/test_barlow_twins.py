"""Barlow Twins: the method contract and its loss terms, and learning on digits (1
vs 8 devices: test_one_vs_eight.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax import losses, methods

HEADS = {"method": "barlow_twins", "method_kwargs.proj_hidden_dim": 32,
         "method_kwargs.proj_dim": 24}


def test_defaults_follow_the_paper():
  kw = methods.get_module("barlow_twins").default_config()
  assert (kw.lambda_, kw.proj_hidden_dim, kw.proj_dim, kw.proj_layers) == (
      0.0051, 8192, 8192, 3)


def test_contract_and_loss_terms(make_config):
  """Each view goes through the networks separately (BN statistics of one view, as the official
  code); the loss is :func:`losses.barlow_twins` of the two projections (times ``scale_loss``);
  the logged terms match a NumPy cross-correlation matrix."""
  config = make_config(**HEADS)
  lambda_ = config.method_kwargs.lambda_
  method = methods.make("barlow_twins", config)
  params, stats, mstate = method.init(jax.random.key(0), None)
  assert set(params) == {"encoder", "projector"} and mstate == {}
  layers = params["projector"]["layers"]
  assert len(layers) == 3 and all("bias" not in layer for layer in layers.values())
  assert layers[0]["kernel"].shape == (16, 32) and layers[2]["kernel"].shape == (32, 24)

  rng = np.random.default_rng(0)
  x_a, x_b = (jnp.asarray(rng.random((12, 8, 8, 1)), jnp.float32) for _ in range(2))
  loss, (metrics, new_stats, new_mstate) = method.loss_fn(
      params, stats, mstate, {"views": {"a": x_a, "b": x_b}}, jax.random.key(1), axis_name=None)
  assert new_mstate == {} and jax.tree.structure(new_stats) == jax.tree.structure(stats)
  assert float(metrics["loss"]) == float(loss) and 0.0 < float(metrics["embedding_std_ratio"])

  nets = methods.get_module("barlow_twins").build_networks(config, hidden=32, out=24, layers=3)
  model = nets.bind(params, stats)
  z_a, z_b = (np.asarray(model.projector(model.encoder(x, train=True), train=True), np.float64)
              for x in (x_a, x_b))
  np.testing.assert_allclose(loss, losses.barlow_twins(z_a, z_b, lambda_=lambda_), rtol=1e-5)
  standardize = lambda z: (z - z.mean(0)) / np.sqrt(z.var(0) + 1e-5)
  c = standardize(z_a).T @ standardize(z_b) / len(z_a)
  off = c - np.diag(np.diag(c))
  np.testing.assert_allclose(metrics["bt_on_diag"], np.sum((1 - np.diag(c)) ** 2), rtol=1e-4)
  np.testing.assert_allclose(metrics["bt_off_diag"], np.sum(off ** 2), rtol=1e-3)

  scaled = methods.make("barlow_twins", make_config(**HEADS, **{"method_kwargs.scale_loss": 0.1}))
  loss_01, (metrics_01, _, _) = scaled.loss_fn(
      params, stats, mstate, {"views": {"a": x_a, "b": x_b}}, jax.random.key(1), axis_name=None)
  np.testing.assert_allclose(loss_01, 0.1 * loss, rtol=1e-6)
  np.testing.assert_allclose(metrics_01["bt_off_diag"], metrics["bt_off_diag"], rtol=1e-4)

  assert method.features(params, stats, {}, x_a).shape == (12, 16)  # before the projector
  with pytest.raises(ValueError, match="exactly 2 global view"):
    method.loss_fn(params, stats, mstate, {"views": {"a": x_a}}, jax.random.key(1),
                   axis_name=None)


@pytest.mark.slow
def test_learns_on_digits(learns_on_digits):
  """A short run of the digits recipe: the encoder's features beat the same network at random
  init on every paired label draw, with 1 and 5 labels per class."""
  # fit/val: smallest gain over random init 0.198 (1 label) and 0.079 (5).
  learns_on_digits("barlow_twins", 150, margin=0.05)