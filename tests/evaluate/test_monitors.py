"""Collapse monitor: NumPy reference, healthy vs collapsed, global over devices."""

import jax
import numpy as np
from jax.sharding import PartitionSpec as P

from ssl_jax.evaluate import monitors


def reference(z):
  z = z / np.linalg.norm(z, axis=1, keepdims=True)
  return z.std(axis=0).mean()


def test_matches_numpy_and_separates_healthy_from_collapsed():
  rng = np.random.default_rng(0)
  healthy = rng.normal(size=(512, 64)).astype(np.float32)
  m = monitors.embedding_std(healthy)
  np.testing.assert_allclose(m["embedding_std"], reference(healthy), rtol=1e-5)
  assert 0.9 < float(m["embedding_std_ratio"]) < 1.1  # ~1/sqrt(d) per dimension
  collapsed = np.ones((512, 64), np.float32) + 1e-3 * rng.normal(size=(512, 64))
  assert float(monitors.embedding_std(collapsed)["embedding_std_ratio"]) < (
      monitors.COLLAPSE_THRESHOLD)


def test_global_over_eight_devices():
  rng = np.random.default_rng(1)
  z = (rng.normal(size=(64, 8)) + np.arange(64)[:, None] / 8).astype(np.float32)  # shards differ
  mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  f = jax.jit(jax.shard_map(lambda z: monitors.embedding_std(z, axis_name="data"), mesh=mesh,
                            in_specs=P("data"), out_specs=P()))
  np.testing.assert_allclose(f(z)["embedding_std"], reference(z), rtol=1e-5)
  local = jax.jit(jax.shard_map(lambda z: monitors.embedding_std(z), mesh=mesh,
                                in_specs=P("data"), out_specs=P(), check_vma=False))
  assert not np.allclose(local(z)["embedding_std"], reference(z), rtol=1e-3)
