"""MoCo v2: the contract, the queue (exact pushes of the global batch's keys, 1 == 8 devices,
nothing pushed by a skipped step, checkpointed), the momentum update, and learning on digits."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax import methods
from ssl_jax.methods import moco_v2
from ssl_jax.train.checkpoint import Checkpointer

SMALL = {"method": "moco_v2", "method_kwargs.queue_size": 160, "method_kwargs.proj_hidden_dim": 32,
         "method_kwargs.proj_dim": 8, "method_kwargs.momentum": 0.9}
SYMMETRIC = {**SMALL, "method_kwargs.symmetric": True}


def _batch(shape, seed=0, n=4):
  rng = np.random.default_rng(seed)
  images = jnp.asarray(rng.uniform(size=(n, *shape)), jnp.float32)
  return {"views": {"a": images, "b": images + 0.1 * jnp.asarray(rng.normal(size=images.shape))}}


def test_defaults_and_queue_size_check(make_config):
  kw = methods.get_module("moco_v2").default_config()
  assert (kw.temperature, kw.queue_size, kw.momentum, kw.proj_dim) == (0.2, 65536, 0.999, 128)
  with pytest.raises(ValueError, match="queue_size=32 is smaller than the 64 keys"):
    methods.make("moco_v2", make_config(**{**SMALL, "method_kwargs.queue_size": 32}))
  with pytest.raises(ValueError, match="128 keys a step pushes.*symmetric"):
    methods.make("moco_v2", make_config(**{**SMALL, "method_kwargs.queue_size": 100,
                                           "method_kwargs.symmetric": True}))


def test_push_wraps_around():
  queue, ptr = moco_v2.push(jnp.zeros((5, 1)), jnp.int32(3), jnp.array([[1.0], [2.0], [3.0]]))
  assert queue[:, 0].tolist() == [3.0, 0.0, 0.0, 1.0, 2.0] and int(ptr) == 1
  with pytest.raises(ValueError, match="cannot take a global batch of 6"):
    moco_v2.push(jnp.zeros((5, 1)), jnp.int32(0), jnp.ones((6, 1)))


def test_contract_and_exact_push(make_config):
  """Init: random unit-norm queue, key network = a copy of the query network. One loss_fn call
  (one device, so the local batch is the global batch): the queue's newest rows are exactly the
  normalized keys of view b in batch order, older rows untouched, the pointer advanced."""
  config = make_config(**SMALL)
  method = methods.make("moco_v2", config)
  params, stats, mstate = method.init(jax.random.key(0), None)
  assert set(params) == {"encoder", "projector"}
  assert set(mstate) == {"key", "queue", "queue_ptr"} and int(mstate["queue_ptr"]) == 0
  assert mstate["queue"].shape == (160, 8)
  np.testing.assert_allclose(jnp.linalg.norm(mstate["queue"], axis=1), 1.0, rtol=1e-5)
  jax.tree.map(np.testing.assert_array_equal, mstate["key"]["params"], params)
  jax.tree.map(np.testing.assert_array_equal, mstate["key"]["batch_stats"], stats)
  # The head has no BatchNorm (MoCo v2's Linear-ReLU-Linear) and biases on both layers.
  assert "projector" not in stats and params["projector"]["layers"][0]["bias"].shape == (32,)

  # Move the pointer first so the push wraps around the end of the queue.
  mstate = {**mstate, "queue_ptr": jnp.int32(158)}
  batch = _batch((8, 8, 1))
  loss, (metrics, new_stats, new_state) = jax.jit(functools.partial(
      method.loss_fn, axis_name=None))(params, stats, mstate, batch, jax.random.key(1))
  assert np.isfinite(loss) and float(metrics["loss"]) == float(loss)
  assert 0.0 < float(metrics["embedding_std_ratio"]) <= 1.0 + 1e-5
  assert jax.tree.structure(new_stats) == jax.tree.structure(stats)
  key_net = moco_v2.build_networks(config).bind(mstate["key"]["params"],
                                                mstate["key"]["batch_stats"])
  k = key_net.projector(key_net.encoder(batch["views"]["b"], train=True), train=True)
  k = k / jnp.linalg.norm(k, axis=1, keepdims=True)
  rows = [158, 159, 0, 1]
  np.testing.assert_allclose(new_state["queue"][np.array(rows)], k, rtol=1e-5, atol=1e-6)
  untouched = np.setdiff1d(np.arange(160), rows)
  np.testing.assert_array_equal(new_state["queue"][untouched], mstate["queue"][untouched])
  assert int(new_state["queue_ptr"]) == 2
  # The key network is not trained by the loss; its batch statistics moved (training mode).
  jax.tree.map(np.testing.assert_array_equal, new_state["key"]["params"],
               mstate["key"]["params"])
  assert method.features(params, stats, {}, batch["views"]["a"]).shape == (4, 16)

  # The loss is InfoNCE against the queue *before* the push.
  q = moco_v2.build_networks(config).bind(params, stats)
  q = q.projector(q.encoder(batch["views"]["a"], train=True), train=True)
  from ssl_jax import losses  # pylint: disable=import-outside-toplevel
  expected = losses.infonce(q, k, mstate["queue"], temperature=0.2)
  np.testing.assert_allclose(loss, expected, rtol=1e-5)


def test_momentum_update(make_config):
  """``key <- m * key + (1 - m) * query`` (constant m), leaf by leaf; the queue is left alone."""
  method = methods.make("moco_v2", make_config(**SMALL))
  params, stats, mstate = method.init(jax.random.key(0), None)
  moved = jax.tree.map(lambda p: p + 1.0, params)
  new = method.update(moved, stats, mstate, jnp.int32(7))
  jax.tree.map(lambda n, k, p: np.testing.assert_allclose(n, 0.9 * k + 0.1 * p, rtol=1e-6,
                                                          atol=1e-7),
               new["key"]["params"], mstate["key"]["params"], moved)
  np.testing.assert_array_equal(new["queue"], mstate["queue"])
  assert int(new["queue_ptr"]) == 0


_RUNS = {}


@pytest.fixture
def runs(make_config, digits_batches, run_steps):
  """Two steps on 8 devices (shard_map, the default); the same two steps on 1 device followed by
  a third step whose loss is made NaN (``debug.nan_at_step``). Computed once per module. The loss
  is the symmetric one (as the digits recipe): each step pushes 2 x 64 keys into a queue of 160,
  so the second push wraps around."""
  if not _RUNS:
    _RUNS["runs"] = _two_runs(make_config, digits_batches, run_steps)
  return _RUNS["runs"]


def _two_runs(make_config, digits_batches, run_steps):
  config8 = make_config(**SYMMETRIC, total_steps=3)
  config1 = make_config(**SYMMETRIC, total_steps=3, **{"debug.nan_at_step": 2})
  source, batches = digits_batches(config8, 3)
  engine8, states8, metrics8 = run_steps(config8, source, batches[:2])
  engine1, states1, metrics1 = run_steps(config1, source, batches, devices=jax.devices()[:1])
  assert (engine8.num_devices, engine8.mode, engine1.num_devices) == (8, "shard_map", 1)
  return states8, metrics8, states1, metrics1


def test_two_steps_on_eight_devices(runs):
  states8, metrics8, _, _ = runs
  for m in metrics8:
    assert np.isfinite(m["loss"]) and m["skipped"] == 0 and "embedding_std" in m
  assert int(states8[-1].step) == 2 and int(states8[-1].method_state["queue_ptr"]) == 96
  moved = jax.tree.map(lambda a, b: not np.allclose(a, b), states8[0].params, states8[-1].params)
  assert all(jax.tree.leaves(moved))


def test_queue_identical_on_one_and_eight_devices(runs):
  """The queue holds the global batch's keys in global order whatever the device count."""
  states8, metrics8, states1, metrics1 = runs
  for step, ptr in ((1, 128), (2, 96)):
    s8, s1 = states8[step].method_state, states1[step].method_state
    assert int(s8["queue_ptr"]) == int(s1["queue_ptr"]) == ptr
    np.testing.assert_allclose(s8["queue"], s1["queue"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(metrics8[step - 1]["loss"], metrics1[step - 1]["loss"], rtol=1e-5)
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-4, atol=1e-5),
               (states8[2].params, states8[2].method_state["key"]),
               (states1[2].params, states1[2].method_state["key"]))
  # Each push overwrote only the oldest rows: the second (rows 128..159, then 0..95 after the
  # wrap-around) left rows 96..127 of the first.
  queues = [s.method_state["queue"] for s in states1[:3]]
  np.testing.assert_array_equal(queues[1][128:], queues[0][128:])
  np.testing.assert_array_equal(queues[2][96:128], queues[1][96:128])
  assert not np.allclose(queues[2][:96], queues[1][:96])


def test_skipped_step_pushes_nothing(runs):
  _, _, states1, metrics1 = runs
  assert metrics1[2]["skipped"] == 1 and int(states1[3].total_skips) == 1
  before, after = states1[2], states1[3]
  jax.tree.map(np.testing.assert_array_equal,
               (before.params, before.batch_stats, before.method_state),
               (after.params, after.batch_stats, after.method_state))


def test_queue_is_checkpointed(runs, tmp_path):
  """The queue and its pointer are part of the train state: saved and restored exactly."""
  _, _, states1, _ = runs
  state = states1[2]
  ckpt = Checkpointer(str(tmp_path), async_save=False)
  try:
    ckpt.save(2, state)
    ckpt.wait()
    blank = state.replace(method_state=jax.tree.map(np.zeros_like, state.method_state))
    restored, _ = ckpt.restore(blank)
  finally:
    ckpt.close()
  np.testing.assert_array_equal(restored.method_state["queue"], state.method_state["queue"])
  assert int(restored.method_state["queue_ptr"]) == 96


@pytest.mark.slow
def test_learns_on_digits(learns_on_digits):
  """A short run of the digits recipe: the encoder's features beat the same network at random
  init (and raw pixels) on every paired label draw, with 1 and 5 labels per class."""
  # fit/val: 1-label 83.9%; smallest gain over random init 0.238 (1 label) and 0.119 (5), over
  # raw pixels 0.107 and 0.032 (0.036 after 350 steps: the half-width net's 5-label margin over
  # pixels is small, hence 0.02 here).
  results, _ = learns_on_digits("moco_v2", 250, margin=0.08, raw_margin=0.02)
  assert results["linear"]["ssl"]["1"] > 0.8