"""The custom-VJP dense product against plain ``lax.dot_general`` autodiff, ``Linear`` against
``flax.nnx.Linear``, and the bias + GELU backward pass against autodiff and NumPy."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ssl_jax.models import conv as conv_lib
from ssl_jax.models.dense import Linear, bias_gelu, matmul, uses_custom_vjp

SHAPES = {"2d": (6, 5), "3d": (2, 7, 5), "4d": (2, 3, 4, 5)}


def _vjp(fn, x, k, ct):
  y, vjp = jax.vjp(fn, x, k)
  return (y,) + vjp(ct)


def _inputs(shape, out=3, dtype=jnp.float32):
  kx, kk, kc = jax.random.split(jax.random.key(1), 3)
  x = jax.random.normal(kx, shape)
  k = jax.random.normal(kk, (shape[-1], out)) / np.sqrt(shape[-1])
  ct = jax.random.normal(kc, shape[:-1] + (out,))
  return x.astype(dtype), k.astype(dtype), ct.astype(dtype)


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_custom_vjp_matches_autodiff(name):
  x, k, ct = _inputs(SHAPES[name])
  y_ref, dx_ref, dk_ref = jax.jit(lambda *a: _vjp(lambda x, k: matmul(x, k, impl="xla"), *a))(
      x, k, ct)
  y, dx, dk = jax.jit(lambda *a: _vjp(lambda x, k: matmul(x, k, impl="custom"), *a))(x, k, ct)
  assert dx.shape == x.shape and dk.shape == k.shape
  np.testing.assert_array_equal(y, y_ref)  # the same forward product
  np.testing.assert_allclose(dx, dx_ref, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(dk, dk_ref, rtol=1e-5, atol=1e-6)
  # Against NumPy, so that a wrong rule shared by both paths would also fail.
  x2, c2 = np.asarray(x).reshape(-1, x.shape[-1]), np.asarray(ct).reshape(-1, ct.shape[-1])
  np.testing.assert_allclose(dk, x2.T @ c2, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(dx, np.asarray(ct) @ np.asarray(k).T, rtol=1e-5, atol=1e-5)


def test_custom_vjp_bfloat16(assert_bf16_as_accurate):
  """bf16 operands: gradients come back in bf16 and as close to float32 as autodiff's."""
  x, k, ct = _inputs(SHAPES["3d"], dtype=jnp.bfloat16)
  exact = _vjp(lambda x, k: matmul(x, k, impl="xla"), x.astype(jnp.float32),
               k.astype(jnp.float32), ct.astype(jnp.float32))
  xla = _vjp(lambda x, k: matmul(x, k, impl="xla"), x, k, ct)
  custom = _vjp(lambda x, k: matmul(x, k, impl="custom"), x, k, ct)
  assert_bf16_as_accurate(exact, xla, custom)


def test_custom_vjp_under_shard_map_with_check_vma(data_parallel_grad):
  """Replicated kernel, tokens split over devices (the engine's shard_map, ``check_vma=True``):
  the kernel gradient of the global mean loss equals plain autodiff's."""
  x, k, _ = _inputs((4, 3, 5))
  loss = lambda k, x, impl: jnp.mean(jnp.tanh(matmul(x, k, impl=impl)) ** 2)
  dk = data_parallel_grad(lambda k, x: loss(k, x, "custom"), k, x)
  np.testing.assert_allclose(dk, jax.grad(loss)(k, x, "xla"), rtol=1e-5, atol=1e-6)


def _uses_custom_call(fn, *args) -> bool:
  return "custom_vjp_call" in str(jax.make_jaxpr(fn)(*args))


def test_impl_selection_and_errors():
  assert jax.default_backend() == "cpu"
  k = jnp.ones((5, 3))
  # auto on CPU: the custom VJP for inputs of 3+ axes only.
  assert uses_custom_vjp("auto", 3) and uses_custom_vjp("auto", 4)
  assert not uses_custom_vjp("auto", 2)
  assert _uses_custom_call(lambda x: matmul(x, k, impl="auto"), jnp.ones((2, 4, 5)))
  assert not _uses_custom_call(lambda x: matmul(x, k, impl="auto"), jnp.ones((4, 5)))
  assert _uses_custom_call(lambda x: matmul(x, k, impl="custom"), jnp.ones((4, 5)))
  # The default is the one shared with the convolutions.
  with conv_lib.default_impl("xla"):
    assert not _uses_custom_call(lambda x: matmul(x, k), jnp.ones((2, 4, 5)))
  with pytest.raises(ValueError, match="auto, xla, custom"):
    matmul(jnp.ones((2, 5)), k, impl="fast")
  with pytest.raises(ValueError, match="auto, xla, custom"):
    Linear(5, 3, impl="fast", rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match=r"x \[..., D\] and kernel \[D, F\]"):
    matmul(jnp.ones((2, 4)), k)


@pytest.mark.parametrize("use_bias", [True, False])
def test_linear_is_nnx_linear_with_the_custom_backward(use_bias):
  kw = dict(use_bias=use_bias, bias_init=nnx.initializers.normal(1.0))
  ours, flax_layer = Linear(5, 3, rngs=nnx.Rngs(0), **kw), nnx.Linear(5, 3, rngs=nnx.Rngs(0), **kw)
  ours_state, flax_state = nnx.state(ours, nnx.Param), nnx.state(flax_layer, nnx.Param)
  assert jax.tree.structure(ours_state) == jax.tree.structure(flax_state)  # checkpoints agree
  for a, b in zip(jax.tree.leaves(ours_state), jax.tree.leaves(flax_state)):
    np.testing.assert_array_equal(a, b)
  x = jax.random.normal(jax.random.key(2), (2, 4, 5))
  assert _uses_custom_call(lambda x: ours(x), x)  # pylint: disable=unnecessary-lambda

  def grads(layer):
    graph, params = nnx.split(layer, nnx.Param)
    return jax.grad(lambda p, x: jnp.sum(jnp.sin(nnx.merge(graph, p)(x))), argnums=(0, 1))(
        params, x)

  np.testing.assert_allclose(ours(x), flax_layer(x), rtol=1e-6, atol=1e-6)
  for a, b in zip(jax.tree.leaves(grads(ours)), jax.tree.leaves(grads(flax_layer))):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  # bf16 compute promotes like nnx.Linear.
  half = Linear(5, 3, dtype=jnp.bfloat16, rngs=nnx.Rngs(0), **kw)
  assert half(x).dtype == nnx.Linear(5, 3, dtype=jnp.bfloat16, rngs=nnx.Rngs(0), **kw)(x).dtype


def _gelu(impl):
  return lambda y, b: bias_gelu(y, b, impl=impl)


@pytest.mark.parametrize("name", ["2d", "3d"])
def test_bias_gelu_matches_autodiff_and_numpy(name):
  y, _, _ = _inputs(SHAPES[name])
  y = 3.0 * y  # reach both tails of the GELU
  b = jax.random.normal(jax.random.key(5), y.shape[-1:])
  ct = jax.random.normal(jax.random.key(6), y.shape)
  out, dy, db = jax.jit(lambda *a: _vjp(_gelu("custom"), *a))(y, b, ct)
  out_ref, dy_ref, db_ref = jax.jit(lambda *a: _vjp(_gelu("xla"), *a))(y, b, ct)
  np.testing.assert_allclose(out, out_ref, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(dy, dy_ref, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(db, db_ref, rtol=1e-5, atol=1e-5)
  # The derivative Phi(h) + h phi(h) in float64 NumPy.
  h = np.asarray(y, np.float64) + np.asarray(b, np.float64)
  cdf = 0.5 * (1.0 + np.vectorize(math.erf)(h / np.sqrt(2.0)))
  slope = cdf + h * np.exp(-0.5 * h * h) / np.sqrt(2.0 * np.pi)
  np.testing.assert_allclose(out, h * cdf, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(dy, np.asarray(ct) * slope, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(db, (np.asarray(ct) * slope).reshape(-1, h.shape[-1]).sum(0),
                             rtol=1e-5, atol=1e-5)
  # No bias: the GELU alone.
  np.testing.assert_allclose(jax.grad(lambda y: jnp.sum(bias_gelu(y, None, impl="custom") * ct))(y),
                             jax.grad(lambda y: jnp.sum(jax.nn.gelu(y, approximate=False) * ct))(y),
                             rtol=1e-5, atol=1e-6)


def test_bias_gelu_bfloat16_and_shard_map(assert_bf16_as_accurate, data_parallel_grad):
  y, _, _ = _inputs(SHAPES["3d"])
  b = jax.random.normal(jax.random.key(5), y.shape[-1:])
  ct = jax.random.normal(jax.random.key(6), y.shape)
  exact = _vjp(_gelu("xla"), y, b, ct)
  half = [a.astype(jnp.bfloat16) for a in (y, b, ct)]
  assert_bf16_as_accurate(exact, _vjp(_gelu("xla"), *half), _vjp(_gelu("custom"), *half))
  # A replicated bias with the tokens split over 2 devices (the engine's shard_map).
  loss = lambda b, y, impl: jnp.mean(jnp.tanh(bias_gelu(y, b, impl=impl)) ** 2)
  db = data_parallel_grad(lambda b, y: loss(b, y, "custom"), b, y.reshape(-1, 5))
  np.testing.assert_allclose(db, jax.grad(loss)(b, y.reshape(-1, 5), "xla"), rtol=1e-5, atol=1e-6)


def test_linear_gelu_activation():
  ours = Linear(5, 3, bias_init=nnx.initializers.normal(1.0), rngs=nnx.Rngs(0))
  x = 2.0 * jax.random.normal(jax.random.key(2), (2, 4, 5))
  assert _uses_custom_call(lambda x: ours(x, activation="gelu"), x)

  def grads(layer, f):
    graph, params = nnx.split(layer, nnx.Param)
    return jax.grad(lambda p: jnp.sum(jnp.sin(f(nnx.merge(graph, p)))))(params)

  with_gelu = lambda m: m(x, activation="gelu")
  reference = lambda m: jax.nn.gelu(m(x), approximate=False)
  np.testing.assert_allclose(with_gelu(ours), reference(ours), rtol=1e-6, atol=1e-6)
  for a, b in zip(jax.tree.leaves(grads(ours, with_gelu)), jax.tree.leaves(grads(ours, reference))):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  with conv_lib.default_impl("xla"):  # the Flax path applies the same GELU
    np.testing.assert_allclose(with_gelu(ours), reference(ours), rtol=1e-6, atol=1e-6)
  with pytest.raises(ValueError, match="Unknown activation 'relu'"):
    ours(x, activation="relu")
  with pytest.raises(ValueError, match=r"y \[..., F\] and bias \[F\]"):
    bias_gelu(x, jnp.zeros(3))
