"""Checkpoint integrity: manifests, uncommitted steps, writer errors, retention, device counts."""

import json
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from ssl_jax.train import checkpoint
from ssl_jax.train.loop import (build, build_for_pretraining, example_batch, load_train_source,
                                pretrain)


def _largest_array_file(step_dir):
  files = [os.path.join(r, f) for r, _, fs in os.walk(os.path.join(step_dir, "state"))
           for f in fs]
  return max(files, key=os.path.getsize)


def _pretrain(make_config, workdir, **kw):
  pretrain(make_config(**{"checkpoint.every_steps": 2, **kw}), str(workdir))


def test_every_committed_step_has_a_verifying_manifest(tmp_path, make_config):
  _pretrain(make_config, tmp_path, total_steps=4)
  ckpt = checkpoint.Checkpointer(str(tmp_path / "checkpoints"))
  try:
    assert ckpt.all_steps() == [2, 4]
    for step in (2, 4):
      assert checkpoint.verify_manifest(ckpt.step_dir(step), step)
  finally:
    ckpt.close()


@pytest.mark.parametrize("damage", ["bitflip", "truncate"])
def test_corrupt_file_is_refused_naming_step_and_file_or_falls_back(tmp_path, make_config, damage):
  _pretrain(make_config, tmp_path, total_steps=6)  # checkpoints at 2, 4, 6
  victim = _largest_array_file(str(tmp_path / "checkpoints" / "6"))
  with open(victim, "r+b") as f:
    if damage == "bitflip":
      f.seek(os.path.getsize(victim) // 2)
      byte = f.read(1)
      f.seek(-1, 1)
      f.write(bytes([byte[0] ^ 0x01]))
    else:
      f.truncate(os.path.getsize(victim) // 2)
  with pytest.raises(checkpoint.CorruptCheckpointError) as err:
    _pretrain(make_config, tmp_path, total_steps=6)
  msg = str(err.value)
  assert "checkpoint step 6" in msg and os.path.basename(victim) in msg
  assert "on_corrupt=previous" in msg
  # The documented fallback resumes from step 4 (never from scratch) and redoes steps 5-6.
  _pretrain(make_config, tmp_path, total_steps=6, **{"checkpoint.on_corrupt": "previous"})
  steps = [json.loads(l)["step"] for l in open(tmp_path / "metrics.jsonl").read().splitlines()]
  assert steps == [1, 2, 3, 4, 5, 6, 5, 6]


def test_every_step_corrupt_is_an_error_not_a_restart(tmp_path, make_config):
  _pretrain(make_config, tmp_path, total_steps=4)
  for step in (2, 4):
    with open(_largest_array_file(str(tmp_path / "checkpoints" / str(step))), "r+b") as f:
      f.write(b"\xff\xff\xff\xff")
  with pytest.raises(checkpoint.CorruptCheckpointError, match="Every committed checkpoint"):
    _pretrain(make_config, tmp_path, total_steps=4, **{"checkpoint.on_corrupt": "previous"})


def test_uncommitted_temporary_step_is_ignored(tmp_path, make_config):
  _pretrain(make_config, tmp_path, total_steps=2)
  tmp_step = tmp_path / "checkpoints" / "8.orbax-checkpoint-tmp-1234567"
  tmp_step.mkdir()
  (tmp_step / "state").mkdir()
  ckpt = checkpoint.Checkpointer(str(tmp_path / "checkpoints"))
  try:
    assert ckpt.latest_step() == 2 and ckpt.all_steps() == [2]
  finally:
    ckpt.close()


def test_writer_error_surfaces_and_keeps_old_checkpoints(tmp_path, monkeypatch, make_config):
  """Disk full inside the async writer: the error reaches the main process at the next wait or
  save, older steps survive, and max_to_keep keeps exactly that many committed steps."""
  config = make_config()
  source = load_train_source(config)
  _, engine, _ = build(config, len(source))
  state = engine.init_state(jax.random.key(0), example_batch(64, source.image_shape))
  ckpt = checkpoint.Checkpointer(str(tmp_path / "ck"), max_to_keep=2)
  for step in (1, 2, 3):
    ckpt.save(step, state, {"step": step})
  ckpt.wait()
  assert ckpt.all_steps() == [2, 3]

  # The write itself (in Orbax's background thread) fails, as a full disk would make it.
  from orbax.checkpoint._src.handlers import json_checkpoint_handler as json_handler
  original = json_handler.JsonCheckpointHandler._save_fn

  async def disk_full(self, x, directory):
    raise OSError(28, "No space left on device")

  monkeypatch.setattr(json_handler.JsonCheckpointHandler, "_save_fn", disk_full)
  ckpt.save(4, state, {"step": 4})  # returns: the write runs in the background
  with pytest.raises(Exception, match="No space left"):
    ckpt.wait()  # ... and its error surfaces here (or at the next save)
  monkeypatch.setattr(json_handler.JsonCheckpointHandler, "_save_fn", original)
  assert ckpt.all_steps() == [2, 3]  # nothing deleted for a step that never committed
  ckpt.save(5, state, {"step": 5})
  ckpt.wait()
  assert ckpt.all_steps() == [3, 5]
  ckpt.close()


def test_changed_config_names_missing_and_extra_leaves(tmp_path, make_config):
  head = {"method_kwargs.proj_hidden_dim": 32, "method_kwargs.proj_dim": 16}
  _pretrain(make_config, tmp_path, total_steps=2, **head, **{"method_kwargs.proj_layers": 2})
  config = make_config(**head, **{"method_kwargs.proj_layers": 3})  # one more layer
  source = load_train_source(config)
  _, engine, _ = build(config, len(source))
  like = engine.init_state(jax.random.key(0), example_batch(64, source.image_shape))
  ckpt = checkpoint.Checkpointer(str(tmp_path / "checkpoints"))
  try:
    with pytest.raises(ValueError) as err:
      ckpt.restore(like)
  finally:
    ckpt.close()
  msg = str(err.value)
  assert "nothing was restored" in msg and "missing from the checkpoint" in msg
  assert "params/projector" in msg


@pytest.mark.parametrize("devices", [1, 2])
def test_saved_on_eight_devices_restores_on_fewer(tmp_path, make_config, devices):
  _pretrain(make_config, tmp_path, total_steps=2)
  config = make_config()
  source = load_train_source(config)
  _, engine, _ = build_for_pretraining(config, source, devices=jax.devices()[:devices])
  like = engine.init_state(jax.random.key(1), example_batch(64, source.image_shape))
  ckpt = checkpoint.Checkpointer(str(tmp_path / "checkpoints"))
  try:
    restored, data = ckpt.restore(like)
    reference = ckpt.restore_tree(keys=("params", "batch_stats", "opt_state"))
  finally:
    ckpt.close()
  assert data["step"] == 2 and int(restored.step) == 2
  assert {d.id for d in jax.tree.leaves(restored.params)[0].sharding.device_set} == set(
      range(devices))
  got = jax.tree.map(np.asarray, (restored.params, restored.batch_stats, restored.opt_state))
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(
      (reference["params"], reference["batch_stats"], reference["opt_state"]))):
    np.testing.assert_array_equal(a, b)
