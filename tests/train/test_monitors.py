"""Health monitors: NumPy references from the papers' formulas, healthy vs collapsed, global over
devices (8 simulated) with a negative control."""

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from ssl_jax.train import monitors


def reference(z):
  z = z / np.linalg.norm(z, axis=1, keepdims=True)
  return z.std(axis=0).mean()


def rankme_reference(z, eps=1e-7):
  """Garrido et al. 2023, eq. 1, with NumPy's SVD."""
  s = np.linalg.svd(np.asarray(z, np.float64), compute_uv=False)
  p = s / np.abs(s).sum() + eps
  return np.exp(-(p * np.log(p)).sum())


def align_uniform_reference(x, y, t=2.0):
  """Wang & Isola 2020, section 4.1 (their lalign / lunif on normalized features, torch.pdist)."""
  x = x / np.linalg.norm(x, axis=1, keepdims=True)
  y = y / np.linalg.norm(y, axis=1, keepdims=True)
  align = (np.linalg.norm(x - y, axis=1) ** 2).mean()
  d2 = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
  iu = np.triu_indices(len(x), k=1)
  return align, np.log(np.exp(-t * d2[iu]).mean())


def shard(fn, check_vma=True):
  mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  return jax.jit(jax.shard_map(fn, mesh=mesh, in_specs=P("data"), out_specs=P(),
                               check_vma=check_vma))


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
  f = shard(lambda z: monitors.embedding_std(z, axis_name="data"))
  np.testing.assert_allclose(f(z)["embedding_std"], reference(z), rtol=1e-5)
  local = shard(lambda z: monitors.embedding_std(z), check_vma=False)
  assert not np.allclose(local(z)["embedding_std"], reference(z), rtol=1e-3)


@pytest.mark.parametrize("shape", [(64, 16), (16, 64)])  # d <= N (d x d Gram) and d > N (N x N)
def test_rankme_matches_svd_reference(shape):
  rng = np.random.default_rng(2)
  z = rng.normal(size=shape).astype(np.float32) * np.linspace(0.1, 3, shape[1])
  np.testing.assert_allclose(monitors.rankme(z), rankme_reference(z), rtol=1e-4)


def test_rankme_sees_dimensional_collapse():
  rng = np.random.default_rng(3)
  full = rng.normal(size=(256, 32)).astype(np.float32)
  low = full[:, :4] @ rng.normal(size=(4, 32)).astype(np.float32)  # rank 4 in 32 dims
  assert float(monitors.rankme(full)) > 25
  assert float(monitors.rankme(low)) < 4.5
  # embedding_std does not flag this dimensional collapse: rank is the monitor that sees it.
  assert float(monitors.embedding_std(low)["embedding_std_ratio"]) > 0.3


def test_alignment_uniformity_match_the_paper_formulas():
  rng = np.random.default_rng(4)
  x = rng.normal(size=(40, 8)).astype(np.float32)
  y = x + 0.3 * rng.normal(size=(40, 8)).astype(np.float32)
  m = monitors.alignment_uniformity(x, y)
  align, unif = align_uniform_reference(x, y)
  np.testing.assert_allclose(m["alignment"], align, rtol=1e-5)
  np.testing.assert_allclose(m["uniformity"], unif, rtol=1e-5)
  collapsed = monitors.alignment_uniformity(np.ones((40, 8), np.float32))
  assert "alignment" not in collapsed and float(collapsed["uniformity"]) == pytest.approx(0.0, abs=1e-6)


def test_teacher_agreement():
  rng = np.random.default_rng(5)
  s = rng.normal(size=(32, 8)).astype(np.float32)
  t = s + rng.normal(size=(32, 8)).astype(np.float32)
  ref = (np.sum(s * t, 1) / np.linalg.norm(s, axis=1) / np.linalg.norm(t, axis=1)).mean()
  np.testing.assert_allclose(monitors.teacher_agreement(s, t), ref, rtol=1e-5)
  assert float(monitors.teacher_agreement(s, 3 * s)) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("dim", [8, 128])  # RankMe's d x d and N x N paths
def test_health_metrics_global_over_eight_devices_with_negative_control(dim):
  rng = np.random.default_rng(6)
  z_a = (rng.normal(size=(64, dim)) + np.arange(64)[:, None] / 16).astype(np.float32)
  z_b = (z_a + 0.5 * rng.normal(size=z_a.shape)).astype(np.float32)
  ref = monitors.health_metrics(z_a, z_b, student=z_a, teacher=z_b)
  f = jax.jit(jax.shard_map(
      lambda a, b: monitors.health_metrics(a, b, axis_name="data", student=a, teacher=b),
      mesh=jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,)),
      in_specs=(P("data"), P("data")), out_specs=P()))
  got = f(z_a, z_b)
  assert set(got) == {"embedding_std", "embedding_std_ratio", "rankme", "alignment",
                      "uniformity", "teacher_agreement"}
  for key in ref:
    np.testing.assert_allclose(got[key], ref[key], rtol=2e-4, err_msg=key)
  local = jax.jit(jax.shard_map(
      lambda a, b: monitors.health_metrics(a, b, student=a, teacher=b),
      mesh=jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,)),
      in_specs=(P("data"), P("data")), out_specs=P(), check_vma=False))(z_a, z_b)
  for key in ("rankme", "uniformity"):  # per-device statistics differ from the global ones
    assert not np.allclose(local[key], ref[key], rtol=1e-2), key


def test_health_metrics_every_n_steps_and_errors():
  z = np.random.default_rng(7).normal(size=(16, 4)).astype(np.float32)
  assert set(monitors.health_metrics(z, every=0)) == {"embedding_std", "embedding_std_ratio"}
  always = monitors.health_metrics(z, z[::-1])
  fn = jax.jit(lambda step: monitors.health_metrics(z, z[::-1], every=3, step=step))
  for step in range(4):
    got = fn(step)
    np.testing.assert_allclose(got["embedding_std"], always["embedding_std"], rtol=1e-6)
    for key in ("rankme", "alignment", "uniformity"):
      if step % 3 == 0:
        np.testing.assert_allclose(got[key], always[key], rtol=1e-5)
      else:
        assert np.isnan(got[key]), (step, key)  # logged as null, left out of the curves
  with pytest.raises(ValueError, match="both student and teacher"):
    monitors.health_metrics(z, student=z)
  with pytest.raises(ValueError, match="every must be >= 0"):
    monitors.health_metrics(z, every=-1)


def test_every_n_steps_under_shard_map():
  rng = np.random.default_rng(8)
  z = rng.normal(size=(64, 8)).astype(np.float32)
  mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  fn = jax.jit(jax.shard_map(
      lambda z, step: monitors.health_metrics(z, z, axis_name="data", every=2, step=step),
      mesh=mesh, in_specs=(P("data"), P()), out_specs=P()))
  np.testing.assert_allclose(fn(z, 4)["rankme"], monitors.rankme(z), rtol=1e-4)
  assert np.isnan(fn(z, 5)["rankme"])
