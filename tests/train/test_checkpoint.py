"""Checkpointing: bit-exact resume, refusal of mismatched models, partial restores."""

import json
import os

import jax
import numpy as np
import pytest

from ssl_jax.train import checkpoint
from ssl_jax.train.loop import pretrain


def _final_state(workdir):
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"))
  try:
    return ckpt.latest_step(), ckpt.restore_tree(
        keys=("params", "batch_stats", "opt_state", "method_state", "rng", "step"))
  finally:
    ckpt.close()


def test_ten_steps_equal_five_restart_five(tmp_path, make_config):
  straight = str(tmp_path / "straight")
  pretrain(make_config(), straight)
  interrupted = str(tmp_path / "interrupted")
  _run_until(make_config(), interrupted, stop_after=5)  # dies right after committing step 5
  assert _final_state(interrupted)[0] == 5
  pretrain(make_config(), interrupted)  # auto-resumes: params, optimizer, data position, RNG
  step_a, a = _final_state(straight)
  step_b, b = _final_state(interrupted)
  assert step_a == step_b == 10
  jax.tree.map(np.testing.assert_array_equal, a, b)
  lines = [json.loads(l) for l in open(os.path.join(interrupted, "metrics.jsonl"))]
  assert [l["step"] for l in lines] == list(range(1, 11))


def _run_until(config, workdir, stop_after):
  """Runs ``config`` but stops (as if killed) right after the checkpoint at ``stop_after``."""
  import ssl_jax.train.loop as loop

  class Stop(Exception):
    pass

  original = loop.Checkpointer.save

  def save_then_stop(self, step, *args, **kwargs):
    original(self, step, *args, **kwargs)
    if step == stop_after:
      self.wait()
      raise Stop

  loop.Checkpointer.save = save_then_stop
  try:
    with pytest.raises(Stop):
      pretrain(config, workdir)
  finally:
    loop.Checkpointer.save = original


def test_restore_into_mismatched_model_names_every_leaf(tmp_path, make_config):
  workdir = str(tmp_path / "run")
  head = {"method_kwargs.proj_layers": 2, "method_kwargs.proj_hidden_dim": 32}
  pretrain(make_config(total_steps=1, **head, **{"method_kwargs.proj_dim": 16}), workdir)
  with pytest.raises(ValueError) as err:
    pretrain(make_config(total_steps=1, **head, **{"method_kwargs.proj_dim": 24}), workdir)
  assert "method_kwargs.proj_dim: 16 -> 24" in str(err.value)  # the config guard fires first

  # Below the config guard: restoring a state of another shape into this model.
  from ssl_jax.train.loop import build, example_batch, load_train_source
  config = make_config(total_steps=1, **head, **{"method_kwargs.proj_dim": 24})
  source = load_train_source(config)
  _, engine, _ = build(config, len(source))
  like = engine.init_state(jax.random.key(0), example_batch(64, source.image_shape))
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"))
  try:
    with pytest.raises(ValueError) as err:
      ckpt.restore(like)
  finally:
    ckpt.close()
  msg = str(err.value)
  assert "nothing was restored" in msg
  assert "params/projector" in msg and "expected (32, 24), found (32, 16)" in msg


def test_check_compatible_reports_missing_and_extra():
  a = {"w": np.zeros((2, 3)), "b": np.zeros(3)}
  b = {"w": np.zeros((2, 4)), "c": np.zeros(1)}
  with pytest.raises(ValueError) as err:
    checkpoint.check_compatible(a, b)
  msg = str(err.value)
  assert "b: expected (3,), missing" in msg
  assert "c: unexpected" in msg
  assert "w: expected (2, 3), found (2, 4)" in msg
  assert "online probe" not in msg


def test_check_compatible_says_when_only_the_online_probe_differs():
  """A run pretrained with the online probe (the default on labeled data) restored into an engine
  built without one: the error says how to build the engine as the run did."""
  model = {"params": {"w": np.zeros((2, 3))}, "method_state": {}}
  run = {"params": {"w": np.zeros((2, 3))},
         "method_state": {"online_probe": {"params": {"w": np.zeros((3, 10))}}}}
  with pytest.raises(ValueError, match=r"(?s)method_state/online_probe/params/w: unexpected.*"
                     r"Only the online probe differs \(the run had one, this engine has "
                     r"none\).*probe_classes"):
    checkpoint.check_compatible(model, run)
  with pytest.raises(ValueError, match="this engine has one, the run had none"):
    checkpoint.check_compatible(run, model)
  other = {"params": {"w": np.zeros((2, 3))},
           "method_state": {"online_probe": {"params": {"w": np.zeros((3, 4))}}}}
  with pytest.raises(ValueError, match="its class count differs"):
    checkpoint.check_compatible(other, run)


def test_restore_tree_into_a_target_keeps_integer_keys(tmp_path):
  """Orbax stores dict keys as strings; with a target, layer-list keys come back as ints (in the
  target's order: 0, 1, ..., 10, not "0", "1", "10", "2"), and a mismatched target is refused."""
  from ssl_jax.train.state import TrainState  # pylint: disable=import-outside-toplevel

  params = {"layers": {i: {"w": np.full((2,), i, np.float32)} for i in range(11)}}
  stats = {"norms": {0: {"mean": np.ones((3,), np.float32)}}}
  state = TrainState(step=np.int32(1), params=params, batch_stats=stats, opt_state={},
                     method_state={}, rng=jax.random.key(0), skips=np.int32(0),
                     total_skips=np.int32(0))
  ckpt = checkpoint.Checkpointer(str(tmp_path), async_save=False)
  try:
    ckpt.save(1, state)
    assert set(ckpt.restore_tree()["params"]["layers"]) == {str(i) for i in range(11)}
    restored = ckpt.restore_tree(target={"params": params, "batch_stats": stats})
    assert jax.tree.structure(restored) == jax.tree.structure(
        {"params": params, "batch_stats": stats})
    jax.tree.map(np.testing.assert_array_equal, restored["params"], params)
    with pytest.raises(ValueError, match="layers/0/w: expected"):
      ckpt.restore_tree(target={"params": {"layers": {0: {"w": np.zeros(3, np.float32)}}},
                                "batch_stats": stats})
  finally:
    ckpt.close()


def test_one_host_saves_replicated_arrays_whole_without_compiling(tmp_path):
  """On one host a state replicated over 8 devices is written by one replica: the save compiles no
  slicing program (Orbax's replica-parallel default compiled one per shape and device), and the
  state restores onto the same shardings."""
  from jax.sharding import Mesh, NamedSharding, PartitionSpec

  from ssl_jax.train.state import TrainState
  replicated = NamedSharding(Mesh(jax.devices(), ("data",)), PartitionSpec())
  put = lambda x: jax.device_put(np.asarray(x), replicated)
  # Replica-parallel slices arrays with a dimension that the 8 replicas divide.
  state = TrainState(step=put(np.int32(3)), params={"w": put(np.arange(48.0).reshape(16, 3)),
                                                    "b": put(np.ones(8, np.float32))},
                     batch_stats={}, opt_state=(put(np.zeros((16, 3), np.float32)),),
                     method_state={}, rng=jax.device_put(jax.random.key(1), replicated),
                     skips=put(np.int32(0)), total_skips=put(np.int32(0)))
  assert len(state.params["w"].sharding.device_set) == 8
  ckpt = checkpoint.Checkpointer(str(tmp_path))
  compiled = []
  listen = lambda event, *_, **__: compiled.append(event) if "backend_compile" in event else None
  jax.monitoring.register_event_duration_secs_listener(listen)
  try:
    ckpt.save(3, state)
    ckpt.wait()
  finally:
    jax.monitoring.unregister_event_duration_listener(listen)
  assert not compiled, compiled
  restored, _ = ckpt.restore(state)
  ckpt.close()
  np.testing.assert_array_equal(restored.params["w"], state.params["w"])
  assert restored.params["w"].sharding == replicated
  assert jax.random.key_data(restored.rng).tolist() == jax.random.key_data(state.rng).tolist()
