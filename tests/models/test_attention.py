"""The custom-VJP attention against ``jax.nn.dot_product_attention`` and autodiff, and a NumPy
softmax-attention reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.sharding import PartitionSpec as P

from ssl_jax.models import conv as conv_lib
from ssl_jax.models.attention import dot_product_attention, uses_custom_vjp


def _qkv(b=2, t=6, s=6, h=3, d=4, dtype=jnp.float32, seed=0):
  kq, kk, kv, kg = jax.random.split(jax.random.key(seed), 4)
  q = jax.random.normal(kq, (b, t, h, d))
  k = jax.random.normal(kk, (b, s, h, d))
  v = jax.random.normal(kv, (b, s, h, d))
  g = jax.random.normal(kg, (b, t, h, d))
  return tuple(a.astype(dtype) for a in (q, k, v, g))


def _masks(b=2, t=6, s=6):
  seg = jnp.array([[1, 1, 1, 2, 2, 0], [1, 1, 1, 1, 1, 1]])[:b, :t]  # two documents + padding
  causal = (jnp.arange(s)[None, :] <= jnp.arange(t)[:, None] + (s - t))[None, None]
  return {"none": None, "segments": (seg[:, :, None] == seg[:, None, :])[:, None],
          "causal": causal, "causal_rows_lt_keys": causal}


def _numpy_attention(q, k, v, mask):
  q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
  logits = np.einsum("bthd,bshd->bhts", q, k) / np.sqrt(q.shape[-1])
  if mask is not None:
    logits = np.where(np.asarray(mask), logits, -np.inf)
  p = np.exp(logits - logits.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  return np.einsum("bhts,bshd->bthd", p, v)


def _vjp(impl, mask):
  def run(q, k, v, g):
    out, vjp = jax.vjp(lambda q, k, v: dot_product_attention(q, k, v, mask=mask, impl=impl),
                       q, k, v)
    return (out,) + vjp(g)
  return jax.jit(run)


@pytest.mark.parametrize("name", ["none", "segments", "causal", "causal_rows_lt_keys"])
def test_custom_vjp_matches_autodiff_and_numpy(name):
  t = 4 if name == "causal_rows_lt_keys" else 6  # a decoding chunk: fewer queries than keys
  q, k, v, g = _qkv(t=t)
  mask = _masks(t=t)[name]
  if name == "segments":
    mask = mask[:, :, :t, :t]
  ref = _vjp("xla", mask)(q, k, v, g)
  got = _vjp("custom", mask)(q, k, v, g)
  for r, a in zip(ref, got):
    assert a.shape == r.shape and a.dtype == r.dtype
    np.testing.assert_allclose(a, r, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(got[0], _numpy_attention(q, k, v, mask), rtol=1e-5, atol=1e-5)
  # Gradients of the NumPy reference by central differences along a random direction.
  direction = np.asarray(jax.random.normal(jax.random.key(5), q.shape), np.float64)
  q64 = np.asarray(q, np.float64)
  loss = lambda q: float(np.sum(_numpy_attention(q, k, v, mask) * np.asarray(g)))
  eps = 1e-4
  numeric = (loss(q64 + eps * direction) - loss(q64 - eps * direction)) / (2 * eps)
  np.testing.assert_allclose(float(jnp.vdot(got[1], direction)), numeric, rtol=1e-3)


def test_masked_probabilities_get_no_gradient_and_empty_rows_attend_uniformly():
  q, k, v, g = _qkv()
  mask = jnp.ones((2, 1, 6, 6), bool).at[0, 0, :, 4:].set(False)  # keys 4, 5 hidden for row 0
  _, _, dk, dv = _vjp("custom", mask)(q, k, v, g)
  np.testing.assert_array_equal(dk[0, 4:], 0.0)
  np.testing.assert_array_equal(dv[0, 4:], 0.0)
  assert float(jnp.abs(dk[1, 4:]).sum()) > 0  # the negative control: unmasked in example 1
  empty = jnp.zeros((1, 1, 6, 6), bool)
  out = dot_product_attention(q, k, v, mask=empty, impl="custom")
  np.testing.assert_allclose(out, jnp.broadcast_to(v.mean(1, keepdims=True), out.shape),
                             rtol=1e-5, atol=1e-6)


def test_bfloat16_as_accurate_as_autodiff(assert_bf16_as_accurate):
  q, k, v, g = _qkv(dtype=jnp.bfloat16)
  mask = _masks()["segments"]
  exact = _vjp("xla", mask)(*(a.astype(jnp.float32) for a in (q, k, v, g)))
  assert_bf16_as_accurate(exact, _vjp("xla", mask)(q, k, v, g), _vjp("custom", mask)(q, k, v, g))


def test_under_shard_map_with_a_replicated_mask():
  """Examples split over devices, the causal mask replicated (``check_vma=True``): the gradients
  equal those of one device."""
  q, k, v, g = _qkv(b=4)
  mask = _masks()["causal"]
  mesh = jax.make_mesh((2,), ("data",), axis_types=(jax.sharding.AxisType.Auto,),
                       devices=jax.devices()[:2])

  def per_device(q, k, v, g):
    loss = lambda q, k, v: lax.psum(jnp.sum(dot_product_attention(q, k, v, mask=mask,
                                                                  impl="custom") * g), "data")
    return jax.grad(loss, argnums=(0, 1, 2))(q, k, v)

  got = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=P("data"), out_specs=P("data"),
                              check_vma=True))(q, k, v, g)
  for a, r in zip(got, _vjp("xla", mask)(q, k, v, g)[1:]):
    np.testing.assert_allclose(a, r, rtol=1e-5, atol=1e-5)


def test_impl_selection_and_errors():
  assert jax.default_backend() == "cpu"
  assert uses_custom_vjp("auto") and uses_custom_vjp("custom") and not uses_custom_vjp("xla")
  q = jnp.ones((1, 3, 2, 4))
  jaxpr = lambda impl: str(jax.make_jaxpr(lambda q: dot_product_attention(q, q, q, impl=impl))(q))
  assert "custom_vjp_call" in jaxpr("auto") and "custom_vjp_call" not in jaxpr("xla")
  with conv_lib.default_impl("xla"):
    assert not uses_custom_vjp(None)
  with pytest.raises(ValueError, match="auto, xla, custom"):
    dot_product_attention(q, q, q, impl="flash")
  with pytest.raises(ValueError, match=r"query \[B, T, H, Dh\]"):
    dot_product_attention(q, q[:, :, :1], q[:, :, :1])
