"""``BatchNorm``: the same results and statistics as ``nnx.BatchNorm``, eagerly and traced, and no
tracer ``.sharding`` lookups while tracing its update."""

import traceback

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ssl_jax.models.nnx_utils import Networks
from ssl_jax.models.norm import BatchNorm


def _pair():
  kw = dict(momentum=0.9, epsilon=1e-5, rngs=nnx.Rngs(0))
  return nnx.BatchNorm(6, **kw), BatchNorm(6, **kw)


def _assert_same(ours, flax_bn):
  for name in ("mean", "var", "scale", "bias"):
    np.testing.assert_allclose(getattr(ours, name)[...], getattr(flax_bn, name)[...], rtol=1e-6)


def test_eager_train_and_eval_match_flax():
  flax_bn, ours = _pair()
  x = jax.random.normal(jax.random.key(1), (16, 6)) * 3 + 1
  for _ in range(3):
    np.testing.assert_allclose(ours(x), flax_bn(x), rtol=1e-6)
  _assert_same(ours, flax_bn)
  assert not np.allclose(ours.mean[...], 0)
  np.testing.assert_allclose(ours(x, use_running_average=True),
                             flax_bn(x, use_running_average=True), rtol=1e-6)


def test_traced_updates_match_flax_through_the_pure_dict_boundary(monkeypatch):
  x = jax.random.normal(jax.random.key(2), (16, 6)) * 2 - 1

  def step(nets, params, stats):
    module = nets.bind(params, stats)
    return module(x), Networks.batch_stats(module)

  results = []
  for cls in (nnx.BatchNorm, BatchNorm):
    nets = Networks(lambda rngs, axis, cls=cls: cls(6, momentum=0.9, axis_name=axis, rngs=rngs))
    params, stats = nets.init(jax.random.key(0))
    results.append(jax.jit(lambda p, s, nets=nets: step(nets, p, s))(params, stats))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), *results)
  assert not np.allclose(results[1][1]["mean"], 0)

  # Tracing our update never asks a tracer for its sharding (Flax's check does, twice per stat;
  # nnx.Rngs does too, building the abstract module inside the first trace: not counted).
  calls = []
  sharding = jax.core.Tracer.sharding

  def counted(tracer):
    calls.extend(f.name for f in traceback.extract_stack()
                 if f.filename.endswith("normalization.py") and f.name == "__call__")
    return sharding.fget(tracer)

  monkeypatch.setattr(jax.core.Tracer, "sharding", property(counted))
  for cls, want in ((BatchNorm, 0), (nnx.BatchNorm, 4)):
    nets = Networks(lambda rngs, axis, cls=cls: cls(6, axis_name=axis, rngs=rngs))
    params, stats = nets.init(jax.random.key(0))
    calls.clear()
    jax.jit(lambda p, s, nets=nets: step(nets, p, s)).trace(params, stats)
    assert len(calls) == want, cls


def test_replacing_with_another_shape_still_goes_through_flax():
  ours = BatchNorm(4, rngs=nnx.Rngs(0))
  ours.mean[...] = jnp.float32(2.0)  # a broadcast, eagerly: Flax's .at[...].set path
  np.testing.assert_array_equal(ours.mean[...], np.full(4, 2.0, np.float32))

  @jax.jit
  def f(v):
    m = BatchNorm(4, rngs=nnx.Rngs(0))
    m.mean[...] = v  # traced scalar: shapes differ, so Flax's path again
    return m.mean[...]

  np.testing.assert_array_equal(f(jnp.float32(3.0)), np.full(4, 3.0, np.float32))
  with pytest.raises(Exception):
    ours.mean[...] = jnp.ones(5)  # shape error from Flax / JAX, as with nnx.BatchNorm
