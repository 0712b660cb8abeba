"""negative_cosine (SimSiam) and byol_loss (BYOL) against NumPy references from the papers."""

import jax
import numpy as np
import pytest

from ssl_jax import losses


def negative_cosine_reference(p, z):
  """SimSiam eq. 1: D(p, z) = -(p / ||p||) . (z / ||z||), averaged over the batch (float64)."""
  p, z = np.asarray(p, np.float64), np.asarray(z, np.float64)
  cos = [p[i] @ z[i] / (np.linalg.norm(p[i]) * np.linalg.norm(z[i])) for i in range(len(p))]
  return -np.mean(cos)


def byol_reference(p, z):
  """BYOL eq. 2: 2 - 2 <q, z'> / (||q|| ||z'||), averaged over the batch (float64)."""
  return 2.0 + 2.0 * negative_cosine_reference(p, z)


REFERENCES = {"negative_cosine": negative_cosine_reference, "byol_loss": byol_reference}
LOSSES = {"negative_cosine": losses.negative_cosine, "byol_loss": losses.byol_loss}
names = pytest.mark.parametrize("name", sorted(LOSSES))


def _inputs(n=16, d=8, seed=0):
  rng = np.random.default_rng(seed)
  p = rng.normal(size=(n, d)).astype(np.float32)
  z = (p + rng.normal(size=(n, d))).astype(np.float32)
  return p, z


@names
def test_matches_numpy_reference(name):
  for seed in range(3):
    p, z = _inputs(seed=seed)
    np.testing.assert_allclose(LOSSES[name](p, z), REFERENCES[name](p, z), rtol=1e-5, atol=1e-6)


def test_fixed_values():
  p = np.array([[1.0, 0.0], [1.0, 1.0], [3.0, 4.0]])
  z = np.array([[2.0, 0.0], [0.0, 3.0], [-3.0, -4.0]])
  # cosines 1, 1/sqrt(2), -1: pinned values, cross-checked by the references.
  expected_cos = -(1 + 2 ** -0.5 - 1) / 3
  np.testing.assert_allclose(negative_cosine_reference(p, z), expected_cos, rtol=1e-12)
  np.testing.assert_allclose(losses.negative_cosine(p, z), -0.2357023, rtol=1e-6)
  np.testing.assert_allclose(losses.byol_loss(p, z), 1.5285954, rtol=1e-6)
  np.testing.assert_allclose(byol_reference(p, z), 1.5285954, rtol=1e-6)


def test_byol_is_two_plus_twice_negative_cosine_and_bounded():
  p, z = _inputs()
  nc, byol = losses.negative_cosine(p, z), losses.byol_loss(p, z)
  np.testing.assert_allclose(byol, 2 + 2 * nc, rtol=1e-5)
  assert -1 <= nc <= 1 and 0 <= byol <= 4
  np.testing.assert_allclose(losses.byol_loss(p, p), 0.0, atol=1e-6)
  np.testing.assert_allclose(losses.negative_cosine(p, -p), 1.0, rtol=1e-6)


@names
def test_invariant_to_positive_scale_of_each_row(name):
  p, z = _inputs()
  scale = np.random.default_rng(1).uniform(0.1, 10.0, size=(len(p), 1)).astype(np.float32)
  np.testing.assert_allclose(LOSSES[name](scale * p, 3 * z), LOSSES[name](p, z), rtol=1e-5)


@names
def test_stop_gradient_on_target(name):
  p, z = _inputs()
  grad_p, grad_z = jax.grad(LOSSES[name], argnums=(0, 1))(p, z)
  assert np.all(np.asarray(grad_z) == 0.0)
  assert np.abs(grad_p).max() > 1e-3


@names
def test_gradient_matches_finite_differences(name):
  p, z = _inputs(n=4, d=3, seed=2)
  grad = np.asarray(jax.grad(LOSSES[name])(p, z))
  eps = 1e-5
  fd = np.zeros_like(grad)
  for idx in np.ndindex(p.shape):
    bump = np.zeros(p.shape)
    bump[idx] = eps
    fd[idx] = (REFERENCES[name](p + bump, z) - REFERENCES[name](p - bump, z)) / (2 * eps)
  np.testing.assert_allclose(grad, fd, rtol=1e-3, atol=1e-5)


@names
def test_jit_and_errors(name):
  p, z = _inputs()
  f = jax.jit(LOSSES[name])
  np.testing.assert_allclose(f(p, z), LOSSES[name](p, z), rtol=1e-6)
  with pytest.raises(ValueError, match=r"p has shape \(16, 8\) and z has shape \(4, 8\); p and z"):
    LOSSES[name](p, z[:4])
  with pytest.raises(ValueError, match=r"z must be 2-D.*\(1, 16, 8\)"):
    LOSSES[name](p, z[None])


@names
def test_eight_devices_match_one_device(name, eight_devices):
  p, z = _inputs(n=32)
  eight_devices.check(lambda p, z, axis_name: LOSSES[name](p, z, axis_name=axis_name), (p, z),
                      sharded=(True, True))
