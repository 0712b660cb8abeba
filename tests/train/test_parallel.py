"""The engine: 1 device == 8 devices in every parallel mode, with a negative control."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from ssl_jax import losses
from ssl_jax.methods import Method, no_update
from ssl_jax.models.nnx_utils import Networks
from ssl_jax.train.parallel import Engine
from ssl_jax.train.xla_options import step_compiler_options

BATCH = 32


class TinyNet(nnx.Module):
  """conv -> BatchNorm (synced over ``bn_axis_name``) -> relu -> mean pool -> linear."""

  def __init__(self, rngs, bn_axis_name):
    self.conv = nnx.Conv(1, 8, (3, 3), rngs=rngs)
    self.bn = nnx.BatchNorm(8, axis_name=bn_axis_name, rngs=rngs)
    self.head = nnx.Linear(8, 6, rngs=rngs)

  def __call__(self, x, train):
    h = jax.nn.relu(self.bn(self.conv(x), use_running_average=not train))
    return self.head(h.mean(axis=(1, 2)))


def tiny_method(*, gather: bool = True) -> Method:
  """A SimCLR-shaped method; ``gather=False`` drops the loss's axis_name (negative control)."""
  nets = Networks(TinyNet)

  def init(rng, batch):
    return (*nets.init(rng), {})

  def loss_fn(params, stats, mstate, batch, rng, *, axis_name):
    model = nets.bind(params, stats, axis_name=axis_name)
    z = model(jnp.concatenate([batch["views"]["a"], batch["views"]["b"]]), train=True)
    z_a, z_b = jnp.split(z, 2)
    loss = losses.ntxent(z_a, z_b, temperature=0.5, axis_name=axis_name if gather else None)
    return loss, ({}, Networks.batch_stats(model), mstate)

  def features(params, stats, mstate, images):
    del mstate
    return nets.bind(params, stats)(images, train=False)

  return Method(init, loss_fn, no_update, features)


def noisy_views(batch, key):
  """Two views keyed per example by its global index (not by device or position)."""
  def view(i, idx, image):
    k = jax.random.fold_in(jax.random.fold_in(key, idx), i)
    return image.astype(jnp.float32) / 255 + 0.3 * jax.random.normal(k, image.shape)
  views = {name: jax.vmap(functools.partial(view, i))(batch["index"], batch["image"])
           for i, name in enumerate(("a", "b"))}
  return {"views": views, "index": batch["index"]}


def batches(n):
  rng = np.random.default_rng(0)
  for s in range(n):
    yield {"image": rng.integers(0, 256, size=(BATCH, 6, 6, 1), dtype=np.uint8),
           "index": np.arange(s * BATCH, (s + 1) * BATCH, dtype=np.int32)}


EXAMPLE = {"image": jax.ShapeDtypeStruct((BATCH, 6, 6, 1), jnp.uint8),
           "index": jax.ShapeDtypeStruct((BATCH,), jnp.int32)}


def run(mode, num_devices, *, steps=3, gather=True, fsdp=False, **kw):
  tx = optax.inject_hyperparams(lambda learning_rate: optax.sgd(learning_rate, momentum=0.9))(
      learning_rate=0.5)
  engine = Engine(tiny_method(gather=gather), tx, noisy_views, mode=mode, global_batch_size=BATCH,
                  devices=jax.devices()[:num_devices], fsdp=fsdp, fsdp_min_size=8, **kw)
  state = engine.init_state(jax.random.key(0), EXAMPLE)
  history = []
  for batch in batches(steps):
    placed = engine.put_batch(batch)
    if mode != "pmap":
      assert len(placed["image"].sharding.device_set) == num_devices
    else:
      assert placed["image"].shape[0] == num_devices
    state, metrics = engine.step(state, placed)
    history.append(jax.device_get(metrics))
  return engine, jax.device_get(engine.global_state(state)), history


@pytest.fixture(scope="module")
def reference():
  return run("shard_map", 1)


def assert_same(run_a, run_b):
  (_, state_a, hist_a), (_, state_b, hist_b) = run_a, run_b
  for m_a, m_b in zip(hist_a, hist_b):
    np.testing.assert_allclose(m_a["loss"], m_b["loss"], rtol=1e-5)
    np.testing.assert_allclose(m_a["grad_norm"], m_b["grad_norm"], rtol=1e-4)
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-4, atol=1e-5),
               (state_a.params, state_a.batch_stats), (state_b.params, state_b.batch_stats))


@pytest.mark.parametrize("mode", ["shard_map", "pmap", "gspmd"])
def test_eight_devices_equal_one(reference, mode):
  assert jax.device_count() == 8
  assert_same(reference, run(mode, 8))


def test_negative_control_fails_without_axis_name(reference):
  # pmap runs the per-device loss without complaint, and the numbers are wrong.
  _, _, hist = run("pmap", 8, gather=False)
  with pytest.raises(AssertionError):
    np.testing.assert_allclose(hist[0]["loss"], reference[2][0]["loss"], rtol=1e-5)
  # shard_map with check_vma=True refuses it outright: the per-device loss is not replicated.
  with pytest.raises(ValueError, match="replicated"):
    run("shard_map", 8, gather=False, steps=1)


def test_fsdp_shards_parameters(reference):
  engine, state, hist = run("gspmd", 8, fsdp=True, steps=3)
  assert_same(reference, (engine, state, hist))
  # Run again keeping device arrays to inspect placement.
  engine = Engine(tiny_method(), optax.sgd(0.1), noisy_views, mode="gspmd", global_batch_size=BATCH,
                  fsdp=True, fsdp_min_size=8)
  state = engine.init_state(jax.random.key(0), EXAMPLE)
  kernel = state.params["conv"]["kernel"]  # (3, 3, 1, 8): 8 output channels over 8 devices
  assert kernel.sharding.spec == jax.sharding.PartitionSpec(None, None, None, "data")
  assert kernel.addressable_shards[0].data.shape == (3, 3, 1, 1)


def _compiled_text(engine) -> str:
  state = engine.init_state(jax.random.key(0), EXAMPLE)
  batch = engine.put_batch(next(batches(1)))
  return engine._step.lower(state, batch).compile().as_text()  # pylint: disable=protected-access


@pytest.mark.parametrize("mode", ["shard_map", "gspmd"])
def test_unsafe_onednn_fusions_fall_back_to_the_default(reference, mode):
  """This step's loss scales its products (NT-Xent's temperature, the l2 normalization), and
  XLA:CPU fuses such multiplies into oneDNN products, which jaxlib 0.10.2 computes wrong: the
  engine finds them in the compiled step before it runs, warns, and compiles it without the
  options (a second compilation; jit may reuse the trace). The numbers equal the reference's. (A step that does run in oneDNN:
  tests/methods/test_mlm.py.)"""
  options = step_compiler_options("onednn_dots")
  with pytest.warns(RuntimeWarning, match=r"fused other operations into \d+ oneDNN product.*"
                    r"cpu_kernels='eigen_convs'"):
    engine, state, hist = run(mode, 8, compiler_options=options)
  assert engine.compiler_options == step_compiler_options("eigen_convs")
  assert engine.trace_count <= 2  # 3 steps run
  assert "__onednn_fusion" not in _compiled_text(engine)
  assert_same(reference, (engine, state, hist))


def test_pmap_takes_no_compiler_options():
  engine, _, hist = run("pmap", 8, steps=1,
                        compiler_options=step_compiler_options("onednn_dots"))
  assert engine.compiler_options is None and np.isfinite(hist[0]["loss"])


def test_compiles_once_over_20_steps():
  engine, _, hist = run("shard_map", 8, steps=20)
  assert engine.trace_count == 1
  assert np.isfinite([h["loss"] for h in hist]).all()


def test_nonfinite_step_is_skipped_and_counted():
  engine = Engine(tiny_method(), optax.inject_hyperparams(optax.adam)(learning_rate=0.1),
                  noisy_views, global_batch_size=BATCH, nan_at_step=1)
  state = engine.init_state(jax.random.key(0), EXAMPLE)
  it = batches(3)
  state, _ = engine.step(state, engine.put_batch(next(it)))
  before = jax.device_get(state)
  state, metrics = engine.step(state, engine.put_batch(next(it)))
  after = jax.device_get(state)
  assert metrics["skipped"] == 1 and after.skips == 1 and after.total_skips == 1
  assert after.step == before.step + 1
  jax.tree.map(np.testing.assert_array_equal,
               (before.params, before.batch_stats, before.opt_state, before.method_state),
               (after.params, after.batch_stats, after.opt_state, after.method_state))
  state, metrics = engine.step(state, engine.put_batch(next(it)))
  assert metrics["skipped"] == 0 and int(state.skips) == 0 and int(state.total_skips) == 1
