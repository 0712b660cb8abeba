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


def test_issue_18_inputs():
  # The edge cases of issue 18, item 5: a batch of one, argument order in the shape message, a
  # traced temperature (scheduled or learnable) and a concrete bad one.
  z_a, z_b = _embeddings(n=8, d=4)
  with pytest.raises(ValueError, match=r"ntxent needs at least 2 examples per batch, got 1 "):
    losses.ntxent(z_a[:1], z_b[:1], temperature=0.5)
  with pytest.raises(ValueError, match=r"z_a has shape \(8, 4\) and z_b has shape \(6, 4\); "):
    losses.ntxent(z_a, z_b[:6], temperature=0.5)
  traced = jax.jit(lambda t: losses.ntxent(z_a, z_b, temperature=t))(0.1)
  np.testing.assert_allclose(traced, losses.ntxent(z_a, z_b, temperature=0.1), rtol=1e-6)
  for bad in (0.0, -1.0):
    with pytest.raises(ValueError, match=r"temperature must be finite and > 0, got"):
      losses.ntxent(z_a, z_b, temperature=bad)


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


def test_one_pair_per_device_is_a_global_batch_of_eight():
  # The minimum (2 examples) counts the global batch: one local pair per device is allowed.
  z_a, z_b = _embeddings(n=8)
  loss8, _ = _sharded_value_and_grad(z_a, z_b, "data")
  np.testing.assert_allclose(loss8, np.full(8, losses.ntxent(z_a, z_b, temperature=0.3)),
                             rtol=1e-5)


# ---------------------------------------------------------------------------- InfoNCE (MoCo)


def _unit(x):
  x = np.asarray(x, np.float64)
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def infonce_reference(q, k, negatives, temperature):
  """MoCo eq. 1, loops in float64: the positive k_i against the queue, or (MoCo v3) against the
  keys of the other examples in the batch."""
  q, k = _unit(q), _unit(k)
  n = len(q)
  if negatives is None:
    negs = [[k[j] for j in range(n) if j != i] for i in range(n)]
  else:
    negs = [list(_unit(negatives))] * n
  total = 0.0
  for i in range(n):
    pos = np.exp(q[i] @ k[i] / temperature)
    total += -np.log(pos / (pos + sum(np.exp(q[i] @ neg / temperature) for neg in negs[i])))
  return total / n


def _queue(size=12, d=8, seed=5):
  return np.random.default_rng(seed).normal(size=(size, d)).astype(np.float32)


@pytest.mark.parametrize("temperature", [0.07, 0.2, 1.0])
@pytest.mark.parametrize("with_queue", [False, True])
def test_infonce_matches_numpy_reference(temperature, with_queue):
  q, k = _embeddings()
  queue = _queue() if with_queue else None
  got = losses.infonce(q, k, queue, temperature=temperature)
  np.testing.assert_allclose(got, infonce_reference(q, k, queue, temperature), rtol=1e-5)


def test_infonce_fixed_values():
  q = np.array([[1.0, 0.0], [0.0, 1.0]])
  k = np.array([[2.0, 0.0], [0.0, 3.0]])
  queue = np.array([[-1.0, 0.0], [0.0, -1.0]])
  # log(1 + e^-1) and -log(e / (e + 1 + e^-1)), cross-checked by the loop reference.
  np.testing.assert_allclose(infonce_reference(q, k, None, 1.0), 0.3132617, rtol=1e-6)
  np.testing.assert_allclose(losses.infonce(q, k, temperature=1.0), 0.3132617, rtol=1e-6)
  np.testing.assert_allclose(infonce_reference(q, k, queue, 1.0), 0.4076059, rtol=1e-6)
  np.testing.assert_allclose(losses.infonce(q, k, queue, temperature=1.0), 0.4076059, rtol=1e-6)


def test_infonce_invariant_to_scale():
  q, k = _embeddings()
  queue = _queue()
  for negatives in (None, queue):
    base = losses.infonce(q, k, negatives, temperature=0.2)
    scaled = None if negatives is None else 7 * negatives
    np.testing.assert_allclose(losses.infonce(0.1 * q, 3 * k, scaled, temperature=0.2), base,
                               rtol=1e-5)


def test_infonce_gradients_match_finite_differences():
  q, k = _embeddings(n=4, d=3)
  queue = _queue(size=5, d=3)
  for negatives in (None, queue):
    args = (q, k) if negatives is None else (q, k, negatives)
    grads = jax.grad(lambda *a: losses.infonce(*a, temperature=0.5),
                     argnums=tuple(range(len(args))))(*args)
    for i, (x, grad) in enumerate(zip(args, grads)):
      def f(x_i):
        a = list(args)
        a[i] = x_i
        return infonce_reference(a[0], a[1], a[2] if len(a) == 3 else None, 0.5)
      np.testing.assert_allclose(grad, _finite_difference(f, x), rtol=1e-3, atol=1e-5)


def test_infonce_jit_and_errors():
  q, k = _embeddings()
  queue = _queue()
  f = jax.jit(functools.partial(losses.infonce, temperature=0.2))
  np.testing.assert_allclose(f(q, k, queue), losses.infonce(q, k, queue, temperature=0.2),
                             rtol=1e-6)
  np.testing.assert_allclose(f(q, k), losses.infonce(q, k, temperature=0.2), rtol=1e-6)
  with pytest.raises(ValueError, match=r"query and key must have the same shape"):
    losses.infonce(q, k[:4], temperature=0.2)
  with pytest.raises(ValueError, match=r"negatives must be 2-D.*\(8,\)"):
    losses.infonce(q, k, queue[0], temperature=0.2)
  with pytest.raises(ValueError, match=r"query and negatives must have the same feature dim"):
    losses.infonce(q, k, queue[:, :4], temperature=0.2)
  with pytest.raises(ValueError, match="temperature"):
    losses.infonce(q, k, temperature=-1.0)


@pytest.mark.parametrize("with_queue", [False, True])
def test_infonce_eight_devices_match_one_device(with_queue, eight_devices):
  q, k = _embeddings(n=32)
  if with_queue:  # the queue is replicated: the same on every device
    loss = lambda q, k, queue, axis_name: losses.infonce(q, k, queue, temperature=0.2,
                                                         axis_name=axis_name)
    eight_devices.check(loss, (q, k, _queue()), sharded=(True, True, False))
  else:  # MoCo v3: the other devices' keys are negatives
    loss = lambda q, k, axis_name: losses.infonce(q, k, temperature=0.2, axis_name=axis_name)
    eight_devices.check(loss, (q, k), sharded=(True, True))


# ---------------------------------------------------------------------------- NNCLR


def nearest_neighbour_reference(z, support):
  """NNCLR's NN(z, Q) = argmin_q ||z - q|| on L2-normalized embeddings (loops, float64)."""
  z, s = _unit(z), _unit(support)
  return np.array([min(range(len(s)), key=lambda j: np.linalg.norm(z[i] - s[j]))
                   for i in range(len(z))])


def nnclr_reference(z_a, z_b, support, temperature):
  """NNCLR eq. 2 for each direction, averaged (float64 loops)."""

  def one_direction(a, b):
    anchors = _unit(np.asarray(support)[nearest_neighbour_reference(a, support)])
    b = _unit(b)
    total = 0.0
    for i in range(len(a)):
      num = np.exp(anchors[i] @ b[i] / temperature)
      den = sum(np.exp(anchors[i] @ b[j] / temperature) for j in range(len(b)))
      total += -np.log(num / den)
    return total / len(a)

  return 0.5 * (one_direction(z_a, z_b) + one_direction(z_b, z_a))


def _support(size=24, d=8, seed=7):
  return np.random.default_rng(seed).normal(size=(size, d)).astype(np.float32)


def test_nearest_neighbour_matches_reference_and_stops_gradient():
  z_a, _ = _embeddings()
  support = _support()
  neighbours, indices = losses.nearest_neighbour(z_a, support)
  expected = nearest_neighbour_reference(z_a, support)
  assert len(set(expected)) > 3  # not a degenerate lookup
  np.testing.assert_array_equal(indices, expected)
  np.testing.assert_array_equal(neighbours, support[expected])
  # Invariant to the scale of the embeddings and of the support rows (cosine).
  np.testing.assert_array_equal(losses.nearest_neighbour(5 * z_a, 0.3 * support)[1], expected)
  grads = jax.grad(lambda z, s: jnp.sum(losses.nearest_neighbour(z, s)[0] ** 2),
                   argnums=(0, 1))(z_a, support)
  assert all(np.all(np.asarray(g) == 0.0) for g in grads)
  with pytest.raises(ValueError, match=r"z and support must have the same feature dim"):
    losses.nearest_neighbour(z_a, support[:, :3])


@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_nnclr_matches_numpy_reference(temperature):
  z_a, z_b = _embeddings()
  support = _support()
  got = losses.nnclr(z_a, z_b, support, temperature=temperature)
  np.testing.assert_allclose(got, nnclr_reference(z_a, z_b, support, temperature), rtol=1e-5)


def test_nnclr_fixed_value():
  support = np.array([[1.0, 0.0], [0.0, 1.0]])
  z_a = np.array([[0.9, 0.1], [0.2, 0.8]])
  z_b = np.array([[1.0, -0.5], [0.4, 1.0]])
  # Pinned value, cross-checked by the loop reference on the same inputs.
  np.testing.assert_allclose(nnclr_reference(z_a, z_b, support, 0.5), 0.1821738, rtol=1e-6)
  np.testing.assert_allclose(losses.nnclr(z_a, z_b, support, temperature=0.5), 0.1821738,
                             rtol=1e-5)


def test_nnclr_symmetric_and_scale_invariant():
  z_a, z_b = _embeddings()
  support = _support()
  base = losses.nnclr(z_a, z_b, support, temperature=0.2)
  np.testing.assert_allclose(losses.nnclr(z_b, z_a, support, temperature=0.2), base, rtol=1e-5)
  np.testing.assert_allclose(losses.nnclr(3 * z_a, 0.2 * z_b, 9 * support, temperature=0.2),
                             base, rtol=1e-5)


def test_nnclr_equals_nearest_neighbour_composed_with_infonce():
  # The documented recipe for NNCLR with a prediction head, with predictions = projections.
  z_a, z_b = _embeddings()
  support = _support()
  nn_a, _ = losses.nearest_neighbour(z_a, support)
  nn_b, _ = losses.nearest_neighbour(z_b, support)
  composed = 0.5 * (losses.infonce(nn_a, z_b, temperature=0.1)
                    + losses.infonce(nn_b, z_a, temperature=0.1))
  np.testing.assert_allclose(losses.nnclr(z_a, z_b, support, temperature=0.1), composed,
                             rtol=1e-6)


def test_nnclr_gradients_match_finite_differences_and_skip_support():
  z_a, z_b = _embeddings(n=4, d=3)
  support = _support(size=6, d=3)
  grads = jax.grad(lambda a, b, s: losses.nnclr(a, b, s, temperature=0.5),
                   argnums=(0, 1, 2))(z_a, z_b, support)
  assert np.all(np.asarray(grads[2]) == 0.0)  # no gradient through the support set
  # The neighbour lookup is piecewise constant, so finite differences of the reference see only
  # the embeddings' role as positives/negatives: exactly the stop-gradient semantics.
  fd_a = _finite_difference(lambda a: nnclr_reference(a, z_b, support, 0.5), z_a)
  fd_b = _finite_difference(lambda b: nnclr_reference(z_a, b, support, 0.5), z_b)
  np.testing.assert_allclose(grads[0], fd_a, rtol=1e-3, atol=1e-5)
  np.testing.assert_allclose(grads[1], fd_b, rtol=1e-3, atol=1e-5)


def test_nnclr_jit_and_errors():
  z_a, z_b = _embeddings()
  support = _support()
  f = jax.jit(functools.partial(losses.nnclr, temperature=0.1))
  np.testing.assert_allclose(f(z_a, z_b, support),
                             losses.nnclr(z_a, z_b, support, temperature=0.1), rtol=1e-6)
  with pytest.raises(ValueError, match=r"support must be 2-D.*\(8,\)"):
    losses.nnclr(z_a, z_b, support[0], temperature=0.1)
  with pytest.raises(ValueError, match=r"z_a and support must have the same feature dim"):
    losses.nnclr(z_a, z_b, support[:, :4], temperature=0.1)
  with pytest.raises(ValueError, match=r"z_a and z_b must have the same shape"):
    losses.nnclr(z_a, z_b[:3], support, temperature=0.1)
  with pytest.raises(ValueError, match="temperature"):
    losses.nnclr(z_a, z_b, support, temperature=0.0)


def test_nnclr_eight_devices_match_one_device(eight_devices):
  z_a, z_b = _embeddings(n=32)
  loss = lambda a, b, s, axis_name: losses.nnclr(a, b, s, temperature=0.2, axis_name=axis_name)
  eight_devices.check(loss, (z_a, z_b, _support()), sharded=(True, True, False))


def _finite_difference(f, x, eps=1e-5):
  x = np.asarray(x, np.float64)
  fd = np.zeros(x.shape)
  for idx in np.ndindex(x.shape):
    bump = np.zeros(x.shape)
    bump[idx] = eps
    fd[idx] = (f(x + bump) - f(x - bump)) / (2 * eps)
  return fd
