"""The pretraining loop: workdir layout and guard, logging, non-finite steps."""

import json
import os

import numpy as np
import pytest

from ssl_jax.train import checkpoint
from ssl_jax.train.loop import NonFiniteError, pretrain


def test_workdir_layout_and_metrics(tmp_path, make_config):
  workdir = str(tmp_path / "run")
  pretrain(make_config(total_steps=3, **{"log.tensorboard": True}), workdir)
  assert sorted(os.listdir(workdir)) == ["checkpoints", "config.json", "metrics.jsonl",
                                         "tensorboard"]
  assert json.load(open(os.path.join(workdir, "config.json")))["total_steps"] == 3
  assert os.listdir(os.path.join(workdir, "tensorboard"))
  lines = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  assert [l["step"] for l in lines] == [1, 2, 3]
  for key in ("loss", "lr", "grad_norm", "skipped"):
    assert all(np.isfinite(l[key]) for l in lines), key
  assert "first_step_s" in lines[0]
  assert all(l["examples_per_s"] > 0 and l["step_time_s"] > 0 for l in lines[1:])
  assert lines[0]["lr"] < lines[-1]["lr"]  # warming up


def test_workdir_of_another_config_is_refused_unless_overwrite(tmp_path, make_config):
  workdir = str(tmp_path / "run")
  pretrain(make_config(total_steps=2), workdir)
  before = open(os.path.join(workdir, "metrics.jsonl")).read()
  with pytest.raises(ValueError, match="(?s)different config:\n  seed: 0 -> 1.*--overwrite"):
    pretrain(make_config(total_steps=2, seed=1), workdir)
  assert open(os.path.join(workdir, "metrics.jsonl")).read() == before  # nothing clobbered
  # Run-control keys may change on resume.
  pretrain(make_config(total_steps=2, **{"log.every_steps": 2}), workdir)
  pretrain(make_config(total_steps=2, seed=1), workdir, overwrite=True)
  assert json.load(open(os.path.join(workdir, "config.json")))["seed"] == 1
  assert len(open(os.path.join(workdir, "metrics.jsonl")).readlines()) == 2


def test_consecutive_nonfinite_steps_stop_the_run_without_nan_checkpoints(tmp_path, make_config):
  workdir = str(tmp_path / "run")
  config = make_config(total_steps=10, max_consecutive_skips=3,
                       **{"debug.nan_at_step": 4, "debug.nan_num_steps": 100,
                          "checkpoint.every_steps": 1})
  with pytest.raises(NonFiniteError, match="3 consecutive steps"):
    pretrain(config, workdir)
  lines = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  assert [l["skipped"] for l in lines] == [0, 0, 0, 0, 1, 1, 1]
  assert lines[-1]["total_skips"] == 3
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"))
  try:
    for step in ckpt.all_steps():
      tree = ckpt.restore_tree(step=step, keys=("params", "batch_stats", "opt_state"))
      assert all(np.isfinite(x).all() for x in __import__("jax").tree.leaves(tree)), step
  finally:
    ckpt.close()


def test_single_nonfinite_step_is_skipped_and_training_continues(tmp_path, make_config):
  workdir = str(tmp_path / "run")
  pretrain(make_config(total_steps=6, **{"debug.nan_at_step": 2}), workdir)
  lines = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  assert [l["skipped"] for l in lines] == [0, 0, 1, 0, 0, 0]
  assert lines[2]["loss"] is None  # NaN is logged as null (JSON has no NaN)
