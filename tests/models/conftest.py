"""Checks shared by the tests of the custom backward passes (conv, dense, attention)."""

import jax
import jax.numpy as jnp
import pytest
from jax import lax
from jax.sharding import PartitionSpec as P


def _assert_bf16_as_accurate(exact, xla, custom, *, max_rel_err=None, name=""):
  """Each bf16 result of the custom path (dtype bf16) is as close to the float32 ``exact`` one as
  XLA's bf16 result (within 2x + 1% of the scale) and, with ``max_rel_err``, within that share
  of the scale."""
  for e, a, c in zip(exact, xla, custom):
    assert c.dtype == jnp.bfloat16
    err_xla = float(jnp.max(jnp.abs(a.astype(jnp.float32) - e)))
    err_custom = float(jnp.max(jnp.abs(c.astype(jnp.float32) - e)))
    scale = float(jnp.max(jnp.abs(e)))
    assert err_custom <= 2 * err_xla + 1e-2 * scale, (name, err_custom, err_xla, scale)
    if max_rel_err is not None:
      assert err_custom <= max_rel_err * scale, (name, err_custom, scale)


def _data_parallel_grad(loss, k, x):
  """Gradient in ``k`` of the global mean of ``loss(k, x_local)`` with ``k`` replicated and ``x``
  split over 2 devices (the engine's ``shard_map`` with ``check_vma=True``)."""
  mesh = jax.make_mesh((2,), ("data",), axis_types=(jax.sharding.AxisType.Auto,),
                       devices=jax.devices()[:2])
  per_device = lambda k, x: jax.grad(lambda k: lax.pmean(loss(k, x), "data"))(k)
  return jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P("data")), out_specs=P(),
                               check_vma=True))(k, x)


@pytest.fixture
def assert_bf16_as_accurate():
  return _assert_bf16_as_accurate


@pytest.fixture
def data_parallel_grad():
  return _data_parallel_grad
