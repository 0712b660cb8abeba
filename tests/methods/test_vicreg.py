"""VICReg: the method contract and its loss terms, and learning on digits (1 vs 8 devices:
test_one_vs_eight.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax import losses, methods

HEADS = {"method": "vicreg", "method_kwargs.proj_hidden_dim": 32, "method_kwargs.proj_dim": 24}


def test_defaults_follow_the_paper():
  kw = methods.get_module("vicreg").default_config()
  assert (kw.sim_weight, kw.var_weight, kw.cov_weight, kw.eps) == (25.0, 25.0, 1.0, 1e-4)
  assert (kw.proj_hidden_dim, kw.proj_dim, kw.proj_layers) == (8192, 8192, 3)


def test_contract_and_loss_terms(make_config):
  """Each view goes through the networks separately; the loss is :func:`losses.vicreg` of the two
  expander outputs; the three logged terms match the paper's formulas in NumPy and recombine into
  the loss with the 25 / 25 / 1 weights."""
  config = make_config(**HEADS)
  method = methods.make("vicreg", config)
  params, stats, mstate = method.init(jax.random.key(0), None)
  assert set(params) == {"encoder", "projector"} and mstate == {}
  assert "bias" not in params["projector"]["layers"][2]  # bias-free last layer, as official

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
  np.testing.assert_allclose(loss, losses.vicreg(z_a, z_b), rtol=1e-5)
  d = z_a.shape[1]
  invariance = np.mean((z_a - z_b) ** 2)
  variance = sum(np.mean(np.maximum(0, 1 - np.sqrt(z.var(0, ddof=1) + 1e-4))) / 2
                 for z in (z_a, z_b))
  covariance = 0.0
  for z in (z_a, z_b):
    cov = np.cov(z, rowvar=False)
    covariance += np.sum((cov - np.diag(np.diag(cov))) ** 2) / d
  np.testing.assert_allclose(metrics["vicreg_invariance"], invariance, rtol=1e-4)
  np.testing.assert_allclose(metrics["vicreg_variance"], variance, rtol=1e-4)
  np.testing.assert_allclose(metrics["vicreg_covariance"], covariance, rtol=1e-3, atol=1e-4)
  np.testing.assert_allclose(25 * invariance + 25 * variance + covariance, loss, rtol=1e-4)

  assert method.features(params, stats, {}, x_a).shape == (12, 16)  # before the expander
  no_cov = methods.make("vicreg", make_config(**HEADS, **{"method_kwargs.cov_weight": 0.0}))
  _, (metrics, _, _) = no_cov.loss_fn(params, stats, mstate, {"views": {"a": x_a, "b": x_b}},
                                      jax.random.key(1), axis_name=None)
  assert "vicreg_covariance" not in metrics  # cannot be recovered from the loss


@pytest.mark.slow
def test_learns_on_digits(learns_on_digits):
  """A short run of the digits recipe: the encoder's features beat the same network at random
  init on every paired label draw, with 1 and 5 labels per class."""
  # fit/val: smallest gain over random init 0.190 (1 label) and 0.056 (5); 0.024 at 5 labels
  # after 150 steps.
  learns_on_digits("vicreg", 250, margin=0.04)