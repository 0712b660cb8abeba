"""The method contract's optional parts through the real engine, with the toy method of
tests/train/toy_method.py: run information, a head frozen for the first epoch (optimizer parameter
groups), prototypes projected to unit norm after every step, periodic work at exactly the right
steps (also after a resume), a memory bank split over the data axis, and the same numbers on 1
and 8 devices."""

import os
import shutil

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from ssl_jax import methods
from ssl_jax.data import make_iterator
from ssl_jax.train.loop import (build_for_pretraining, example_batch_for, load_train_source,
                                periodic_due, pretrain)
from ssl_jax.train.workdir import restore_run

STEPS = 12  # digits' train split has 1257 examples: 9 steps of 128 per epoch
EVERY = 4
TOY = {"method": "toy", "batch_size": 128, "total_steps": STEPS, "eval.online_probe": "off",
       "method_kwargs.every_steps": EVERY}


@pytest.fixture(scope="module")
def toy_registered():
  """The toy method in the registry (and its module importable) for this module's tests."""
  with pytest.MonkeyPatch.context() as mp:
    mp.syspath_prepend(os.path.dirname(__file__))
    mp.setitem(methods.METHODS, "toy", "toy_method")
    yield


def _run(config, num_devices):
  """Steps the engine as pretraining does (periodic work included); returns the run info, the
  host state before the first step and after each, each step's metrics and the batches' indices."""
  source = load_train_source(config)
  method, engine, run = build_for_pretraining(config, source, devices=jax.devices()[:num_devices])
  state = engine.init_state(jax.random.key(config.seed), example_batch_for(config, source))
  bank = engine.global_state(state).method_state["bank"]
  if engine.mode != "pmap":
    assert bank.sharding.spec == P("data") or num_devices == 1
  shards = engine.global_state(state).method_state["bank"].shape[0] // num_devices
  assert {s.data.shape[-2:] for s in state.method_state["bank"].addressable_shards} == {(shards, 8)}
  iterator = make_iterator(source, global_batch_size=config.batch_size, seed=config.seed)
  states, metrics, seen = [jax.device_get(engine.global_state(state))], [], []
  for step in range(run.total_steps):
    batch = next(iterator)
    seen.append(batch["index"])
    placed = engine.put_batch(batch)
    if engine.mode != "pmap":  # pmap takes host arrays with a leading device axis
      assert len(placed["image"].sharding.device_set) == num_devices
    state, m = engine.step(state, placed)
    for index in periodic_due(method, run, step + 1):
      state = engine.run_periodic(state, index)
    states.append(jax.device_get(engine.global_state(state)))
    metrics.append(jax.device_get(m))
  iterator.close()
  return run, states, metrics, np.concatenate(seen)


def _config(**overrides):
  from ssl_jax import config as config_lib  # pylint: disable=import-outside-toplevel
  return config_lib.load_config(None, [(k, str(v)) for k, v in {**TOY, **overrides}.items()])


@pytest.fixture(scope="module")
def runs(toy_registered):
  return {n: _run(_config(), n) for n in (1, 8)}


def test_run_information_reaches_the_method(runs):
  run, _, metrics, _ = runs[8]
  assert (run.total_steps, run.steps_per_epoch, run.num_examples, run.global_batch_size,
          run.num_devices) == (STEPS, 1257 // 128, 1257, 128, 8)
  expected = [0.2 + (0.1 - 0.2) * k / STEPS for k in range(STEPS)]  # toy_method.temperature
  np.testing.assert_allclose([m["temperature"] for m in metrics], expected, rtol=1e-6)


def test_head_frozen_for_the_first_epoch_then_moves(runs):
  run, states, _, _ = runs[8]
  frozen = run.steps_per_epoch  # updates of steps 0 .. frozen - 1 are frozen
  head = [s.params["head"]["w"] for s in states]
  for k in range(1, frozen + 1):
    np.testing.assert_array_equal(head[k], head[0], err_msg=f"head moved at step {k}")
  assert not np.allclose(head[frozen + 1], head[0])
  # (the first update is at warm-up learning rate 0)
  assert not np.allclose(states[2].params["encoder"]["w"], states[0].params["encoder"]["w"])


def test_prototypes_unit_norm_after_every_step(runs):
  _, states, _, _ = runs[8]
  norms = lambda s: np.linalg.norm(s.params["prototypes"], axis=-1)
  assert not np.allclose(norms(states[0]), 1.0)  # not unit-norm before the first projection
  for s in states[1:]:
    np.testing.assert_allclose(norms(s), 1.0, rtol=1e-6)
  assert not np.allclose(states[-1].params["prototypes"], states[1].params["prototypes"])


def test_periodic_work_at_exactly_its_steps(runs):
  _, states, _, seen = runs[8]
  for k, s in enumerate(states):
    calls = list(range(EVERY, k + 1, EVERY))
    assert int(s.method_state["ncalls"]) == len(calls)
    assert s.method_state["calls"][:len(calls)].tolist() == calls
  bank = states[-1].method_state["bank"]
  written = np.zeros(len(bank), bool)
  written[seen] = True
  np.testing.assert_allclose(np.linalg.norm(bank[written], axis=-1), 1.0, rtol=1e-5)
  assert not bank[~written].any()
  # The last call (after step 12) saw the whole bank as it was then.
  np.testing.assert_allclose(states[-1].method_state["centroid"], bank.sum(0) / 1257, atol=1e-6)


def test_one_vs_eight_devices(runs):
  (_, one, m1, _), (_, eight, m8, _) = runs[1], runs[8]
  np.testing.assert_allclose([m["loss"] for m in m8], [m["loss"] for m in m1], rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               one[-1].params, eight[-1].params)
  n = 1257  # the 8-device bank has 7 padding rows
  np.testing.assert_allclose(one[-1].method_state["bank"][:n], eight[-1].method_state["bank"][:n],
                             atol=1e-5)
  np.testing.assert_allclose(one[-1].method_state["centroid"],
                             eight[-1].method_state["centroid"], atol=1e-6)


@pytest.mark.parametrize("mode", ["pmap", "gspmd"])
def test_split_state_and_periodic_work_in_the_other_modes(runs, mode):
  """pmap keeps the bank's rows split on the device axis, GSPMD as one sharded global array; both
  end where shard_map does."""
  _, states, _, _ = _run(_config(parallel=mode), 8)
  reference = runs[8][1][-1]
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               (reference.params, reference.method_state), (states[-1].params,
                                                            states[-1].method_state))


def test_periodic_work_after_a_resume(toy_registered, make_config, tmp_path):
  """A run resumed between two periodic calls calls each exactly once and ends bit-identical to
  the uninterrupted run."""
  config = make_config(**TOY, **{"checkpoint.every_steps": 3, "checkpoint.max_to_keep": 10})
  pretrain(config, str(tmp_path / "whole"))
  pretrain(config, str(tmp_path / "resumed"))
  for step in (9, 12):  # back to the checkpoint of step 6: calls 8 and 12 are still to come
    shutil.rmtree(tmp_path / "resumed" / "checkpoints" / str(step))
  pretrain(config, str(tmp_path / "resumed"))
  from ssl_jax.train.checkpoint import Checkpointer  # pylint: disable=import-outside-toplevel
  final = {}
  for name in ("whole", "resumed"):
    ckpt = Checkpointer(str(tmp_path / name / "checkpoints"))
    final[name] = ckpt.restore_tree(keys=("params", "method_state"))
    ckpt.close()
  assert final["resumed"]["method_state"]["calls"][:3].tolist() == [4, 8, 12]
  assert int(final["resumed"]["method_state"]["ncalls"]) == 3
  jax.tree.map(np.testing.assert_array_equal, final["whole"], final["resumed"])
  # Evaluation restores the method-state entries features reads (eval_state), and only those.
  run = restore_run(str(tmp_path / "whole"), (8, 8, 1))
  assert set(run.trained["method_state"]) == {"centroid"}
  centroid = final["whole"]["method_state"]["centroid"]
  np.testing.assert_array_equal(run.trained["method_state"]["centroid"], centroid)
  images = np.random.default_rng(0).uniform(size=(3, 8, 8, 1)).astype(np.float32)
  params = final["whole"]["params"]
  expected = np.tanh(images.reshape(3, -1) @ params["encoder"]["w"]) @ params["head"]["w"]
  np.testing.assert_allclose(run.features_fn()(images), expected - centroid, rtol=1e-5, atol=1e-6)
  assert not run.initial["method_state"]["centroid"].any()  # the random-init baseline
