"""The 1-vs-8-device check shared by the loss tests (8 simulated CPU devices: tests/conftest.py).

``eight_devices.check(loss, args, sharded)`` runs ``loss(*args, axis_name="data")`` under
``jax.shard_map`` (``check_vma=True``) with the ``sharded`` arguments split over the batch on 8
devices and the others replicated, and asserts that the loss on every device and the gradients
with respect to every argument equal ``loss(*args, axis_name=None)`` on one device. As a negative
control it runs the same program without the axis name and asserts that the loss and the
(nonzero) gradients of the sharded arguments then differ, so the check can fail.
"""

import types

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

AXIS = "data"


def _value_and_grads(loss, args, axis_name):
  argnums = tuple(range(len(args)))
  return jax.value_and_grad(lambda *a: loss(*a, axis_name=axis_name), argnums=argnums)(*args)


def run_on_eight_devices(loss, args, sharded, axis_name=AXIS):
  """Per-device losses ``[8]`` and gradients (replicated arguments' ones stacked ``[8, ...]``)."""
  assert jax.device_count() == 8
  mesh = jax.make_mesh((8,), (AXIS,), axis_types=(jax.sharding.AxisType.Explicit,))
  specs = tuple(P(AXIS) if s else P() for s in sharded)

  def per_device(*a):
    value, grads = _value_and_grads(loss, a, axis_name)
    # Report the loss and replicated gradients once per device, to check they agree everywhere.
    grads = tuple(g if s else g[None] for g, s in zip(grads, sharded))
    return value[None], grads

  f = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=specs,
                            out_specs=(P(AXIS), tuple(P(AXIS) for _ in args)), check_vma=True))
  placed = [jax.device_put(np.asarray(x), jax.NamedSharding(mesh, spec))
            for x, spec in zip(args, specs)]
  for x, s in zip(placed, sharded):
    assert len(x.sharding.device_set) == 8
    if s:  # really split over the batch: each device holds 1/8 of the rows
      assert {shard.data.shape[0] for shard in x.addressable_shards} == {x.shape[0] // 8}
  return f(*placed)


def check(loss, args, sharded, rtol=1e-5, grad_rtol=1e-4, grad_atol=1e-6):
  args = tuple(np.asarray(x, np.float32) for x in args)
  value1, grads1 = _value_and_grads(loss, args, None)
  value8, grads8 = run_on_eight_devices(loss, args, sharded)
  np.testing.assert_allclose(value8, np.full(8, value1), rtol=rtol)
  for g8, g1, s in zip(grads8, grads1, sharded):
    expected = g1 if s else np.broadcast_to(g1, (8,) + g1.shape)
    np.testing.assert_allclose(g8, expected, rtol=grad_rtol, atol=grad_atol)

  # Negative control: each device alone sees only its shard of the batch.
  value_local, grads_local = run_on_eight_devices(loss, args, sharded, axis_name=None)
  assert not np.allclose(value_local, value1, rtol=1e-3)
  for g_local, g1, s in zip(grads_local, grads1, sharded):
    if s and np.any(g1 != 0):  # (stop-gradient targets have zero gradients either way)
      assert not np.allclose(g_local, g1, rtol=1e-3, atol=1e-5)
  return value1, grads1


@pytest.fixture
def eight_devices():
  return types.SimpleNamespace(check=check, run=run_on_eight_devices)
