"""NT-Xent against an independent NumPy reference, gradients, jit, and 1-vs-8 devices."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from ssl_jax import losses


def ntxent_reference(z_a, z_b, temperature):
  """Loop-based NT-Xent from the SimCLR paper's equation (1), in float64."""
  z = np.concatenate([z_a, z_b]).astype(np.float64)
  z /= np.linalg.norm(z, axis=1, keepdims=True)
  n = len(z_a)
  total = 0.0
  for i in range(2 * n):
    j = (i + n) % (2 * n)
    sims = np.array([z[i] @ z[k] for k in range(2 * n)]) / temperature
    denom = sum(np.exp(sims[k]) for k in range(2 * n) if k != i)
    total += -np.log(np.exp(sims[j]) / denom)
  return total / (2 * n)


def _embeddings(n=16, d=8, seed=0):
  rng = np.random.default_rng(seed)
  z_a = rng.normal(size=(n, d)).astype(np.float32)
  z_b = (z_a + 0.5 * rng.normal(size=(n, d))).astype(np.float32)
  return z_a, z_b


@pytest.mark.parametrize("temperature", [0.1, 0.5, 1.0])
def test_matches_numpy_reference(temperature):
  z_a, z_b = _embeddings()
  got = losses.ntxent(z_a, z_b, temperature=temperature)
  np.testing.assert_allclose(got, ntxent_reference(z_a, z_b, temperature), rtol=1e-5)


def test_fixed_value():
  z_a = np.array([[1.0, 0.0], [0.0, 1.0]])
  z_b = np.array([[2.0, 0.1], [0.1, 2.0]])
  # Pinned value, cross-checked by the loop reference on the same inputs.
  np.testing.assert_allclose(ntxent_reference(z_a, z_b, 0.5), 0.262740, atol=1e-6)
  np.testing.assert_allclose(losses.ntxent(z_a, z_b, temperature=0.5), 0.262740, atol=1e-6)


def test_invariant_to_scale_and_lower_for_aligned_views():
  z_a, z_b = _embeddings()
  base = losses.ntxent(z_a, z_b, temperature=0.2)
  np.testing.assert_allclose(losses.ntxent(3 * z_a, 0.1 * z_b, temperature=0.2), base, rtol=1e-5)
  assert losses.ntxent(z_a, z_a, temperature=0.2) < base


def test_gradient_matches_finite_differences():
  z_a, z_b = _embeddings(n=4, d=3)
  f = lambda a: losses.ntxent(a, z_b, temperature=0.5)
  grad = jax.grad(f)(jnp.asarray(z_a, jnp.float32))
  eps = 1e-3
  for idx in [(0, 0), (2, 1), (3, 2)]:
    bump = np.zeros_like(z_a)
    bump[idx] = eps
    fd = (ntxent_reference(z_a + bump, z_b, 0.5) - ntxent_reference(z_a - bump, z_b, 0.5)) / (2 * eps)
    np.testing.assert_allclose(grad[idx], fd, rtol=2e-2, atol=1e-4)


def test_jit_and_errors():
  z_a, z_b = _embeddings()
  f = jax.jit(functools.partial(losses.ntxent, temperature=0.5))
  np.testing.assert_allclose(f(z_a, z_b), losses.ntxent(z_a, z_b, temperature=0.5), rtol=1e-6)
  with pytest.raises(ValueError, match="same shape"):
    losses.ntxent(z_a, z_b[:4], temperature=0.5)
  with pytest.raises(ValueError, match="2-D"):
    losses.ntxent(z_a[None], z_b[None], temperature=0.5)
  with pytest.raises(ValueError, match="temperature"):
    losses.ntxent(z_a, z_b, temperature=0.0)


def _sharded_value_and_grad(z_a, z_b, axis_name):
  mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Explicit,))

  def per_device(a, b):
    loss, grads = jax.value_and_grad(
        lambda a, b: losses.ntxent(a, b, temperature=0.3, axis_name=axis_name),
        argnums=(0, 1))(a, b)
    # The loss is replicated; report it once per device to check it really is the same.
    return loss[None], grads

  f = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=(P("data"), P("data")),
                            out_specs=(P("data"), (P("data"), P("data"))), check_vma=True))
  a = jax.device_put(z_a, jax.NamedSharding(mesh, P("data")))
  b = jax.device_put(z_b, jax.NamedSharding(mesh, P("data")))
  assert len(a.sharding.device_set) == 8
  return f(a, b)


def test_eight_devices_match_one_device():
  assert jax.device_count() == 8
  z_a, z_b = _embeddings(n=32)
  loss1, grads1 = jax.value_and_grad(
      lambda a, b: losses.ntxent(a, b, temperature=0.3), argnums=(0, 1))(z_a, z_b)
  loss8, grads8 = _sharded_value_and_grad(z_a, z_b, "data")
  np.testing.assert_allclose(loss8, np.full(8, loss1), rtol=1e-5)
  for g8, g1 in zip(grads8, grads1):
    np.testing.assert_allclose(g8, g1, rtol=1e-4, atol=1e-6)

  # Negative control: without the axis each device only sees its 4 local pairs.
  loss_local, grads_local = _sharded_value_and_grad(z_a, z_b, None)
  assert not np.allclose(loss_local, loss1, rtol=1e-3)
  assert not np.allclose(grads_local[0], grads1[0], rtol=1e-3, atol=1e-5)
