"""Tests for ssl_jax.data.sharding: global batches over 8 simulated CPU devices."""

import jax
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding, PartitionSpec

from ssl_jax.data.iterator import make_iterator
from ssl_jax.data.sharding import batch_sharding, to_global
from ssl_jax.data.sources import ArraySource


@pytest.fixture(scope="module")
def mesh():
  assert jax.device_count() == 8, "tests/conftest.py should simulate 8 CPU devices"
  return jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))


def _batch(b=16):
  rng = np.random.default_rng(0)
  return {"image": rng.integers(0, 256, (b, 4, 4, 3), dtype=np.uint8),
          "label": rng.integers(0, 10, (b,)).astype(np.int32),
          "index": np.arange(b, dtype=np.int32)}


def test_to_global_spans_all_devices_and_equals_local(mesh):
  local = _batch()
  out = to_global(local, mesh)
  assert set(out) == set(local)
  for key, arr in out.items():
    assert isinstance(arr, jax.Array)
    assert arr.shape == local[key].shape and arr.dtype == local[key].dtype
    assert len(arr.sharding.device_set) == 8
    assert arr.sharding.is_equivalent_to(NamedSharding(mesh, PartitionSpec("data")), arr.ndim)
    shards = sorted(arr.addressable_shards, key=lambda s: s.index[0].start)
    assert len({s.device for s in shards}) == 8
    for k, shard in enumerate(shards):
      assert shard.data.shape[0] == 2
      np.testing.assert_array_equal(np.asarray(shard.data), local[key][2 * k:2 * k + 2])
    np.testing.assert_array_equal(np.asarray(arr), local[key])


def test_to_global_on_iterator_batches(mesh):
  images = np.arange(40, dtype=np.uint8).reshape(40, 1, 1, 1)
  source = ArraySource(images, np.zeros(40, np.int32), name="toy", split="train", num_classes=1)
  batch = next(make_iterator(source, global_batch_size=16, seed=0))
  out = to_global(batch, mesh)
  np.testing.assert_array_equal(np.asarray(out["image"])[:, 0, 0, 0], batch["index"])
  # A jitted reduction over the sharded batch sees the whole batch.
  assert int(jax.jit(lambda x: x.astype(np.int32).sum())(out["image"])) == int(
      batch["image"].astype(np.int32).sum())


def test_to_global_2d_mesh_replicates_over_model_axis():
  mesh = jax.make_mesh((4, 2), ("data", "model"), axis_types=(AxisType.Auto,) * 2)
  local = _batch(8)
  out = to_global(local, mesh)
  img = out["image"]
  assert len(img.sharding.device_set) == 8
  assert {s.data.shape[0] for s in img.addressable_shards} == {2}  # 8 / 4 data shards
  assert len({s.index[0].start for s in img.addressable_shards}) == 4  # each held twice
  np.testing.assert_array_equal(np.asarray(img), local["image"])
  # Batch over both axes (pure data parallelism on a 2-D mesh).
  both = to_global(local, mesh, data_axis=("data", "model"))
  assert {s.data.shape[0] for s in both["label"].addressable_shards} == {1}


def test_to_global_with_explicit_sharding(mesh):
  sharding = batch_sharding(mesh)
  out = to_global(_batch(), sharding)
  assert out["label"].sharding == sharding


def test_to_global_errors(mesh):
  with pytest.raises(ValueError, match=r"mesh has no axis 'batch'; its axes are \('data',\)"):
    to_global(_batch(), mesh, data_axis="batch")
  with pytest.raises(ValueError, match="global batch 12 does not split evenly over 8 devices"):
    to_global(_batch(12), mesh)
  with pytest.raises(ValueError, match="is a scalar"):
    to_global({"step": np.int32(3)}, mesh)
  with pytest.raises(TypeError, match="Mesh or Sharding"):
    to_global(_batch(), "data")
