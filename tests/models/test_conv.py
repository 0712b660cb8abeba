"""The custom-VJP convolution against plain ``lax.conv_general_dilated`` autodiff.

The reference everywhere is ``jax.vjp`` of ``lax.conv_general_dilated`` with the same explicit
padding; the custom path must give the same forward values and the same input and kernel
gradients, for every geometry the encoders use.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import lax

from ssl_jax.models import conv as conv_lib
from ssl_jax.models.conv import Conv, conv2d

DN = ("NHWC", "HWIO", "NHWC")

# (input shape, kernel shape, strides, padding)
CASES = {
    "1x1": ((2, 5, 6, 3), (1, 1, 3, 4), 1, "SAME"),
    "1x1_stride2_odd": ((2, 7, 9, 3), (1, 1, 3, 4), 2, "SAME"),
    "3x3": ((2, 8, 8, 3), (3, 3, 3, 4), 1, "SAME"),
    "3x3_stride2_even": ((2, 8, 8, 3), (3, 3, 3, 4), 2, "SAME"),
    "3x3_stride2_odd": ((2, 9, 7, 3), (3, 3, 3, 4), 2, 1),
    "7x7_stride2_pad3": ((2, 11, 13, 3), (7, 7, 3, 4), 2, 3),
    "3x3_valid": ((2, 9, 10, 3), (3, 3, 3, 4), 1, "VALID"),
    "patch4": ((2, 16, 16, 3), (4, 4, 3, 5), 4, "VALID"),
    "patch4_ragged": ((2, 18, 17, 3), (4, 4, 3, 5), 4, "VALID"),
    "2x2_stride3": ((2, 9, 8, 3), (2, 2, 3, 4), 3, "VALID"),
    "asym_pad_strides": ((2, 9, 9, 3), (3, 3, 3, 4), (2, 1), ((2, 0), (1, 3))),
    "pad_gt_kernel": ((2, 6, 6, 3), (3, 3, 3, 4), 1, 4),
}


def _reference(x, k, strides, padding):
  strides = (strides, strides) if isinstance(strides, int) else strides
  pads = conv_lib.resolve_padding(padding, x.shape[1:3], k.shape[:2], strides)
  return lax.conv_general_dilated(x, k, strides, pads, dimension_numbers=DN)


def _vjp_fn(fn):
  @jax.jit
  def run(x, k, ct):
    y, vjp = jax.vjp(fn, x, k)
    return (y,) + vjp(ct)
  return run


def _inputs(case, dtype=jnp.float32):
  xs, ks, _, _ = case
  kx, kk, kc = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(kx, xs, jnp.float32)
  k = jax.random.normal(kk, ks, jnp.float32) / np.sqrt(np.prod(ks[:3]))
  return x.astype(dtype), k.astype(dtype), kc


@pytest.mark.parametrize("name", sorted(CASES))
def test_custom_vjp_matches_autodiff(name):
  case = CASES[name]
  _, _, strides, padding = case
  x, k, kc = _inputs(case)
  ref_fn = lambda x, k: _reference(x, k, strides, padding)
  y_ref = ref_fn(x, k)
  ct = jax.random.normal(kc, y_ref.shape)
  y_ref, dx_ref, dk_ref = _vjp_fn(ref_fn)(x, k, ct)
  y, dx, dk = _vjp_fn(lambda x, k: conv2d(x, k, strides, padding, impl="custom"))(x, k, ct)
  assert y.shape == y_ref.shape and dx.shape == x.shape and dk.shape == k.shape
  np.testing.assert_array_equal(y, y_ref)  # the forward is the same XLA convolution
  np.testing.assert_allclose(dx, dx_ref, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(dk, dk_ref, rtol=1e-5, atol=1e-5)


def test_custom_vjp_bfloat16_as_accurate_as_autodiff(assert_bf16_as_accurate):
  """bf16 compute: the custom gradients are as close to a float32 reference as XLA's bf16 ones."""
  for name in ("1x1_stride2_odd", "3x3_stride2_odd", "patch4_ragged"):
    case = CASES[name]
    _, _, strides, padding = case
    x, k, kc = _inputs(case, jnp.bfloat16)
    ref_fn = lambda x, k: _reference(x, k, strides, padding)
    ct = jax.random.normal(kc, ref_fn(x, k).shape).astype(jnp.bfloat16)
    exact = _vjp_fn(ref_fn)(x.astype(jnp.float32), k.astype(jnp.float32), ct.astype(jnp.float32))
    xla = _vjp_fn(ref_fn)(x, k, ct)
    custom = _vjp_fn(lambda x, k: conv2d(x, k, strides, padding, impl="custom"))(x, k, ct)
    assert_bf16_as_accurate(exact, xla, custom, max_rel_err=2e-2, name=name)


@pytest.mark.parametrize("name", ["1x1_stride2_odd", "3x3_stride2_odd"])
def test_custom_vjp_under_shard_map_with_check_vma(name, data_parallel_grad):
  """Replicated kernel, batch split over devices (the engine's shard_map, ``check_vma=True``):
  the kernel gradient of the mean loss over the global batch equals plain autodiff's."""
  case = CASES[name]
  _, _, strides, padding = case
  x, k, _ = _inputs(case)
  loss = lambda k, x, impl: jnp.mean(conv2d(x, k, strides, padding, impl=impl) ** 2)
  dk = data_parallel_grad(lambda k, x: loss(k, x, "custom"), k, x)
  np.testing.assert_allclose(dk, jax.grad(loss)(k, x, "xla"), rtol=1e-5, atol=1e-6)


def _uses_custom_call(fn, *args) -> bool:
  return "custom_vjp_call" in str(jax.make_jaxpr(fn)(*args))


def test_impl_selection():
  x = jnp.ones((1, 8, 8, 3))
  k1, k3, kp = jnp.ones((1, 1, 3, 4)), jnp.ones((3, 3, 3, 4)), jnp.ones((4, 4, 3, 4))
  assert jax.default_backend() == "cpu"
  # auto on CPU: custom VJP only for non-overlapping windows (where it is faster).
  assert _uses_custom_call(lambda x, k: conv2d(x, k, 2, "SAME", impl="auto"), x, k1)
  assert _uses_custom_call(lambda x, k: conv2d(x, k, 4, "VALID", impl="auto"), x, kp)
  assert not _uses_custom_call(lambda x, k: conv2d(x, k, 1, "SAME", impl="auto"), x, k3)
  assert _uses_custom_call(lambda x, k: conv2d(x, k, 1, "SAME", impl="custom"), x, k3)
  assert not _uses_custom_call(lambda x, k: conv2d(x, k, 1, "SAME", impl="xla"), x, k1)
  # The process default applies to impl=None and is restored by the context manager.
  before = conv_lib.get_default_impl()
  with conv_lib.default_impl("xla"):
    assert not _uses_custom_call(lambda x, k: conv2d(x, k, 1, "SAME"), x, k1)
    with conv_lib.default_impl("custom"):
      assert _uses_custom_call(lambda x, k: conv2d(x, k, 1, "SAME"), x, k3)
  assert conv_lib.get_default_impl() == before
  with pytest.raises(ValueError, match="auto, xla, custom"):
    conv2d(x, k1, impl="fast")
  with pytest.raises(ValueError, match="auto, xla, custom"):
    Conv(3, 4, 1, impl="fast", rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="padding"):
    conv2d(x, k1, padding="CIRCULAR")


def test_resolve_padding_matches_lax():
  for hw, khw, s in [((8, 8), (3, 3), (1, 1)), ((9, 7), (3, 3), (2, 2)), ((10, 10), (4, 4), (4, 4)),
                     ((11, 13), (7, 7), (2, 2))]:
    for p in ("SAME", "VALID"):
      assert conv_lib.resolve_padding(p, hw, khw, s) == tuple(
          tuple(q) for q in lax.padtype_to_pads(hw, khw, s, p))
  assert conv_lib.resolve_padding(2, (8, 8), (3, 3), (1, 1)) == ((2, 2), (2, 2))
  assert conv_lib.resolve_padding((1, (0, 2)), (8, 8), (3, 3), (1, 1)) == ((1, 1), (0, 2))


@pytest.fixture(scope="module")
def layers():
  """A ``Conv`` (custom path forced) and an ``nnx.Conv`` built from the same seed."""
  kwargs = dict(in_features=3, out_features=5, kernel_size=(3, 3), strides=2, padding="SAME")
  return (Conv(**kwargs, impl="custom", rngs=nnx.Rngs(7)),
          nnx.Conv(**kwargs, rngs=nnx.Rngs(7)))


def test_same_parameters_and_values_as_nnx_conv(layers):
  ours, theirs = layers
  p_ours, p_theirs = nnx.state(ours, nnx.Param), nnx.state(theirs, nnx.Param)
  assert jax.tree.structure(nnx.to_pure_dict(p_ours)) == jax.tree.structure(
      nnx.to_pure_dict(p_theirs))
  np.testing.assert_array_equal(ours.kernel[...], theirs.kernel[...])
  np.testing.assert_array_equal(ours.bias[...], theirs.bias[...])

  @jax.jit
  def grads(x, p_ours, p_theirs):
    def loss(p, module, x):
      return jnp.sum(jnp.sin(nnx.merge(nnx.graphdef(module), p)(x)))
    return (jax.value_and_grad(loss, argnums=(0, 2))(p_ours, ours, x),
            jax.value_and_grad(loss, argnums=(0, 2))(p_theirs, theirs, x))

  x = jax.random.normal(jax.random.key(1), (2, 9, 9, 3))
  (l1, (g1, gx1)), (l2, (g2, gx2)) = grads(x, p_ours, p_theirs)
  np.testing.assert_allclose(l1, l2, rtol=1e-6)
  np.testing.assert_allclose(gx1, gx2, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(g1["kernel"][...], g2["kernel"][...], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(g1["bias"][...], g2["bias"][...], rtol=1e-5, atol=1e-5)


def test_extra_batch_dims_and_bfloat16_promotion(layers):
  ours, _ = layers
  x = jax.random.normal(jax.random.key(2), (2, 3, 6, 6, 3))
  y = ours(x)
  np.testing.assert_allclose(y, ours(x.reshape(6, 6, 6, 3)).reshape(y.shape), rtol=1e-6)
  bf = Conv(3, 5, 3, dtype=jnp.bfloat16, rngs=nnx.Rngs(7))
  assert bf.kernel.dtype == jnp.float32 and bf(x[0]).dtype == jnp.bfloat16


def _net_grads(impl):
  """Gradients of a small network that uses one Conv twice (shared weights) and a 1x1 conv."""
  rngs = nnx.Rngs(3)
  shared = Conv(4, 4, 3, impl=impl, rngs=rngs)
  stem = Conv(3, 4, 3, strides=2, impl=impl, rngs=rngs)
  point = Conv(4, 6, 1, strides=2, impl=impl, rngs=rngs)
  graphdef, params = nnx.split((stem, shared, point))

  @jax.jit
  def run(params, x):
    def loss(params, x):
      stem, shared, point = nnx.merge(graphdef, params)
      h = jax.nn.relu(stem(x))
      h = jax.nn.relu(shared(h)) + h
      h = shared(h)
      return jnp.mean(point(h) ** 2)

    def penalty(params, x):  # reverse-over-reverse: a gradient-norm penalty
      gx = jax.grad(loss, argnums=1)(params, x)
      return jnp.sum(gx ** 2)

    return jax.value_and_grad(loss)(params, x), jax.grad(penalty)(params, x)

  return run(params, jax.random.normal(jax.random.key(4), (2, 9, 9, 3)))


def test_inside_grad_of_a_network_with_shared_layer_and_second_order():
  (l_ref, g_ref), gg_ref = _net_grads("xla")
  (l_cus, g_cus), gg_cus = _net_grads("custom")
  np.testing.assert_allclose(l_cus, l_ref, rtol=1e-6)
  for a, b in zip(jax.tree.leaves(g_cus), jax.tree.leaves(g_ref)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  for a, b in zip(jax.tree.leaves(gg_cus), jax.tree.leaves(gg_ref)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
