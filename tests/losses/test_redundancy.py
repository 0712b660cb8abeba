"""barlow_twins and vicreg against loop-based NumPy references, gradients, jit, 1-vs-8 devices."""

import functools

import jax
import numpy as np
import pytest

from ssl_jax import losses


def barlow_twins_reference(z_a, z_b, lambda_, bn_eps=1e-5):
  """Barlow Twins eq. 1-2 with BatchNorm1d(affine=False) standardization, loops in float64."""
  z_a, z_b = np.asarray(z_a, np.float64), np.asarray(z_b, np.float64)
  n, d = z_a.shape

  def standardize(z):
    out = np.empty_like(z)
    for j in range(d):
      mean = sum(z[b, j] for b in range(n)) / n
      var = sum((z[b, j] - mean) ** 2 for b in range(n)) / n  # biased, as BatchNorm normalizes
      out[:, j] = (z[:, j] - mean) / np.sqrt(var + bn_eps)
    return out

  a, b = standardize(z_a), standardize(z_b)
  loss = 0.0
  for i in range(d):
    for j in range(d):
      c_ij = sum(a[k, i] * b[k, j] for k in range(n)) / n
      loss += (1.0 - c_ij) ** 2 if i == j else lambda_ * c_ij ** 2
  return loss


def vicreg_reference(z_a, z_b, sim_weight=25.0, var_weight=25.0, cov_weight=1.0, eps=1e-4):
  """VICReg eq. 1-6, variance terms averaged over the two branches (official code), float64."""
  z_a, z_b = np.asarray(z_a, np.float64), np.asarray(z_b, np.float64)
  n, d = z_a.shape
  invariance = sum((z_a[i, j] - z_b[i, j]) ** 2 for i in range(n) for j in range(d)) / (n * d)
  variance = covariance = 0.0
  for z in (z_a, z_b):
    mean = [sum(z[b, j] for b in range(n)) / n for j in range(d)]
    cov = np.array([[sum((z[b, i] - mean[i]) * (z[b, j] - mean[j]) for b in range(n)) / (n - 1)
                     for j in range(d)] for i in range(d)])
    variance += sum(max(0.0, 1.0 - np.sqrt(cov[j, j] + eps)) for j in range(d)) / d / 2
    covariance += sum(cov[i, j] ** 2 for i in range(d) for j in range(d) if i != j) / d
  return sim_weight * invariance + var_weight * variance + cov_weight * covariance


def _embeddings(n=16, d=6, seed=0, scale=1.0):
  rng = np.random.default_rng(seed)
  mix = rng.normal(size=(d, d))  # correlated dimensions, so the off-diagonal terms matter
  z_a = (scale * rng.normal(size=(n, d)) @ mix).astype(np.float32)
  z_b = (z_a + 0.5 * scale * rng.normal(size=(n, d))).astype(np.float32)
  return z_a, z_b


def _finite_difference(f, x, eps=1e-5):
  fd = np.zeros(x.shape)
  for idx in np.ndindex(x.shape):
    bump = np.zeros(x.shape)
    bump[idx] = eps
    fd[idx] = (f(x + bump) - f(x - bump)) / (2 * eps)
  return fd


# ---------------------------------------------------------------------------- Barlow Twins


@pytest.mark.parametrize("lambda_", [0.0051, 0.0, 1.0])
def test_barlow_twins_matches_numpy_reference(lambda_):
  z_a, z_b = _embeddings()
  got = losses.barlow_twins(z_a, z_b, lambda_=lambda_)
  np.testing.assert_allclose(got, barlow_twins_reference(z_a, z_b, lambda_), rtol=1e-5)


def test_barlow_twins_fixed_value_and_paper_correlation():
  z_a = np.array([[1.0, 2.0], [0.0, -1.0], [2.0, 0.5], [-1.0, 0.0]])
  z_b = np.array([[0.5, 2.0], [0.0, -2.0], [1.0, 1.0], [-2.0, 0.5]])
  # Pinned value, cross-checked by the loop reference on the same inputs.
  np.testing.assert_allclose(barlow_twins_reference(z_a, z_b, 0.5), 0.1549767, rtol=1e-6)
  np.testing.assert_allclose(losses.barlow_twins(z_a, z_b, lambda_=0.5), 0.1549767, rtol=1e-5)
  # Paper eq. 2: C is the Pearson correlation of the dimensions; BatchNorm's eps is the only
  # difference.
  corr = np.corrcoef(z_a.T, z_b.T)[:2, 2:]
  paper = np.sum((1 - np.diag(corr)) ** 2) + 0.5 * np.sum(corr[~np.eye(2, dtype=bool)] ** 2)
  np.testing.assert_allclose(losses.barlow_twins(z_a, z_b, lambda_=0.5), paper, rtol=1e-4)


def test_barlow_twins_default_lambda_and_invariances():
  z_a, z_b = _embeddings()
  default = losses.barlow_twins(z_a, z_b)
  np.testing.assert_allclose(default, barlow_twins_reference(z_a, z_b, 0.0051), rtol=1e-5)
  # Symmetric in the views (C becomes C^T), invariant to a per-dimension affine map (the batch
  # standardization removes it, up to BatchNorm's eps).
  np.testing.assert_allclose(losses.barlow_twins(z_b, z_a), default, rtol=1e-5)
  rng = np.random.default_rng(3)
  scale = rng.uniform(0.5, 4.0, size=(1, 6)).astype(np.float32)
  shift = rng.normal(size=(1, 6)).astype(np.float32)
  np.testing.assert_allclose(losses.barlow_twins(scale * z_a + shift, z_b), default, rtol=1e-4)


def test_barlow_twins_gradient_matches_finite_differences():
  z_a, z_b = _embeddings(n=6, d=3, seed=1)
  grads = jax.grad(functools.partial(losses.barlow_twins, lambda_=0.3), argnums=(0, 1))(z_a, z_b)
  fd_a = _finite_difference(lambda a: barlow_twins_reference(a, z_b, 0.3), z_a)
  fd_b = _finite_difference(lambda b: barlow_twins_reference(z_a, b, 0.3), z_b)
  np.testing.assert_allclose(grads[0], fd_a, rtol=1e-3, atol=1e-5)
  np.testing.assert_allclose(grads[1], fd_b, rtol=1e-3, atol=1e-5)


def test_barlow_twins_jit_and_errors():
  z_a, z_b = _embeddings()
  f = jax.jit(functools.partial(losses.barlow_twins, lambda_=0.01))
  np.testing.assert_allclose(f(z_a, z_b), losses.barlow_twins(z_a, z_b, lambda_=0.01), rtol=1e-6)
  with pytest.raises(ValueError, match=r"z_a has shape \(16, 6\) and z_b has shape \(16, 5\); "
                                       "z_a and z_b must have the same shape"):
    losses.barlow_twins(z_a, z_b[:, :5])
  with pytest.raises(ValueError, match=r"z_a must be 2-D.*\(6,\)"):
    losses.barlow_twins(z_a[0], z_b[0])
  with pytest.raises(ValueError, match="at least 2 examples"):
    losses.barlow_twins(z_a[:1], z_b[:1])


def test_barlow_twins_eight_devices_match_one_device(eight_devices):
  # Exact gradients: not the 1 / world-size scaled ones of the official all_reduce of C.
  z_a, z_b = _embeddings(n=32)
  eight_devices.check(
      lambda a, b, axis_name: losses.barlow_twins(a, b, lambda_=0.02, axis_name=axis_name),
      (z_a, z_b), sharded=(True, True))


# ---------------------------------------------------------------------------- VICReg


@pytest.mark.parametrize("weights", [(25.0, 25.0, 1.0), (1.0, 0.0, 0.0), (0.0, 1.0, 0.0),
                                     (0.0, 0.0, 1.0)])
def test_vicreg_matches_numpy_reference(weights):
  # Small embeddings, so the variance hinge is active in some dimensions and not in others.
  z_a, z_b = _embeddings(scale=0.4)
  sim, var, cov = weights
  got = losses.vicreg(z_a, z_b, sim_weight=sim, var_weight=var, cov_weight=cov)
  np.testing.assert_allclose(got, vicreg_reference(z_a, z_b, sim, var, cov), rtol=1e-5, atol=1e-7)


def test_vicreg_fixed_value():
  z_a = np.array([[1.0, 2.0], [0.0, -1.0], [2.0, 0.5], [-1.0, 0.0]])
  z_b = np.array([[0.5, 2.0], [0.0, -2.0], [1.0, 1.0], [-2.0, 0.5]])
  # Pinned value, cross-checked by the loop reference on the same inputs.
  np.testing.assert_allclose(vicreg_reference(z_a, z_b), 12.4379340, rtol=1e-6)
  np.testing.assert_allclose(losses.vicreg(z_a, z_b), 12.4379340, rtol=1e-5)


def test_vicreg_invariances():
  z_a, z_b = _embeddings(scale=0.4)
  base = losses.vicreg(z_a, z_b)
  np.testing.assert_allclose(losses.vicreg(z_b, z_a), base, rtol=1e-5)
  shift = np.random.default_rng(4).normal(size=(1, 6)).astype(np.float32)
  np.testing.assert_allclose(losses.vicreg(z_a + shift, z_b + shift), base, rtol=1e-5)
  # The eps keyword is the one under the square root of the variance.
  np.testing.assert_allclose(losses.vicreg(z_a, z_b, eps=0.1),
                             vicreg_reference(z_a, z_b, eps=0.1), rtol=1e-5)


def test_vicreg_gradient_matches_finite_differences():
  z_a, z_b = _embeddings(n=6, d=3, seed=1, scale=0.5)
  grads = jax.grad(losses.vicreg, argnums=(0, 1))(z_a, z_b)
  fd_a = _finite_difference(lambda a: vicreg_reference(a, z_b), z_a)
  fd_b = _finite_difference(lambda b: vicreg_reference(z_a, b), z_b)
  np.testing.assert_allclose(grads[0], fd_a, rtol=1e-3, atol=1e-4)
  np.testing.assert_allclose(grads[1], fd_b, rtol=1e-3, atol=1e-4)


def test_vicreg_jit_and_errors():
  z_a, z_b = _embeddings()
  f = jax.jit(functools.partial(losses.vicreg, cov_weight=2.0))
  np.testing.assert_allclose(f(z_a, z_b), losses.vicreg(z_a, z_b, cov_weight=2.0), rtol=1e-6)
  with pytest.raises(ValueError, match=r"z_a and z_b must have the same shape"):
    losses.vicreg(z_a, z_b[:8])
  with pytest.raises(ValueError, match=r"z_b must be 2-D.*\(1, 16, 6\)"):
    losses.vicreg(z_a, z_b[None])
  with pytest.raises(ValueError, match="at least 2 examples"):
    losses.vicreg(z_a[:1], z_b[:1])
  with pytest.raises(ValueError, match="eps"):
    losses.vicreg(z_a, z_b, eps=0.0)


def test_vicreg_eight_devices_match_one_device(eight_devices):
  z_a, z_b = _embeddings(n=32, scale=0.4)
  eight_devices.check(lambda a, b, axis_name: losses.vicreg(a, b, axis_name=axis_name),
                      (z_a, z_b), sharded=(True, True))
