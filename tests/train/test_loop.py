"""The pretraining loop: workdir layout and guard, logging, non-finite steps."""

import json
import os
import signal

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


def test_a_finished_run_is_extended_by_a_larger_total_steps(tmp_path, make_config, capsys):
  workdir = tmp_path / "run"
  pretrain(make_config(total_steps=4), str(workdir))
  before = (workdir / "config.json").read_text()
  with pytest.raises(ValueError, match="checkpoint at step 4, so a run of 3 steps does not "
                     r"extend it: pass a larger --config.total_steps"):
    pretrain(make_config(total_steps=3), str(workdir))
  assert (workdir / "config.json").read_text() == before  # a refused run writes nothing
  with pytest.raises(ValueError, match="different config:\n  seed: 0 -> 1"):
    pretrain(make_config(total_steps=6, seed=1), str(workdir))  # length and more: refused
  capsys.readouterr()
  pretrain(make_config(total_steps=6), str(workdir))
  out = capsys.readouterr().out
  assert "Extending the run from 4 to 6 steps (config.json updated)" in out
  assert "Resumed from step 4" in out
  assert json.loads((workdir / "config.json").read_text())["total_steps"] == 6
  logged = [json.loads(line)["step"] for line in open(workdir / "metrics.jsonl")]
  assert logged == [1, 2, 3, 4, 5, 6]


def test_consecutive_nonfinite_steps_stop_the_run_without_nan_checkpoints(tmp_path, make_config):
  workdir = str(tmp_path / "run")
  config = make_config(total_steps=10, max_consecutive_skips=3,
                       **{"debug.nan_at_step": 4, "debug.nan_num_steps": 100,
                          "checkpoint.every_steps": 1})
  with pytest.raises(NonFiniteError, match="3 consecutive steps") as raised:
    pretrain(config, workdir)
  lines = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  assert [l["skipped"] for l in lines] == [0, 0, 0, 0, 1, 1, 1]
  assert lines[-1]["total_skips"] == 3
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"))
  try:
    steps = ckpt.all_steps()
    assert steps  # the message names the checkpoints that exist
    assert f"Checkpoints of steps {', '.join(map(str, steps))} in" in str(raised.value)
    assert f"a rerun resumes from step {steps[-1]}" in str(raised.value)
    for step in steps:
      tree = ckpt.restore_tree(step=step, keys=("params", "batch_stats", "opt_state"))
      assert all(np.isfinite(x).all() for x in __import__("jax").tree.leaves(tree)), step
  finally:
    ckpt.close()


def test_a_nonfinite_stop_before_any_checkpoint_says_there_is_none(tmp_path, make_config):
  config = make_config(total_steps=10, max_consecutive_skips=2,
                       **{"debug.nan_at_step": 1, "debug.nan_num_steps": 100,
                          "checkpoint.every_steps": 5})
  with pytest.raises(NonFiniteError, match=r"stopping at step 3\. No checkpoint was saved \(the "
                     r"first is due at step 5: --config.checkpoint.every_steps=5\), so there is "
                     r"nothing to resume from\. Lower the learning rate \(--config.optimizer.lr"):
    pretrain(config, str(tmp_path / "run"))
  assert not os.listdir(tmp_path / "run" / "checkpoints")


def test_refused_runs_write_nothing(tmp_path, make_config):
  """Every refusal (unknown dataset, views the method cannot take) comes before the workdir is
  created, so no config.json of a run that never started is left behind."""
  for i, overrides in enumerate([{"dataset": "nosuch"},
                                 {"views.a": "random_resized_crop(size=4)"}]):
    workdir = tmp_path / f"run{i}"
    with pytest.raises(ValueError):
      pretrain(make_config(total_steps=2, **overrides), str(workdir))
    assert not workdir.exists(), overrides


def test_single_nonfinite_step_is_skipped_and_training_continues(tmp_path, make_config):
  workdir = str(tmp_path / "run")
  pretrain(make_config(total_steps=6, **{"debug.nan_at_step": 2}), workdir)
  lines = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  assert [l["skipped"] for l in lines] == [0, 0, 1, 0, 0, 0]
  assert lines[2]["loss"] is None  # NaN is logged as null (JSON has no NaN)


def test_init_from_takes_another_runs_encoder_and_refuses_a_mismatch(tmp_path, make_config):
  """``config.init_from``: the encoder (here also BYOL's teacher copy) starts as the latest
  checkpoint of another workdir; heads stay freshly built; another architecture is refused with
  the mismatched arrays listed."""
  import jax

  from ssl_jax.train.workdir import restore_run
  from ssl_jax.train.loop import _init_encoder_from, build, example_batch_for, load_train_source
  first = tmp_path / "first"
  pretrain(make_config(total_steps=2), str(first))
  pretrained = restore_run(str(first), (8, 8, 1)).trained["params"]["encoder"]

  config = make_config(method="byol", total_steps=2, init_from=str(first))
  source = load_train_source(config)
  _, engine, _ = build(config, len(source))
  state = engine.init_state(jax.random.key(1), example_batch_for(config, source))
  state = jax.device_get(_init_encoder_from(config, engine, state, source.image_shape))
  jax.tree.map(np.testing.assert_array_equal, state.params["encoder"], pretrained)
  jax.tree.map(np.testing.assert_array_equal, state.method_state["target"]["params"]["encoder"],
               pretrained)
  assert "projector" in state.params  # built here, not taken

  wider = make_config(method="byol", total_steps=2, init_from=str(first),
                      encoder_kwargs="{'widths': (8, 32), 'strides': (1, 2), 'fc_features': 16}")
  _, engine, _ = build(wider, len(source))
  state = engine.init_state(jax.random.key(1), example_batch_for(wider, source))
  with pytest.raises(ValueError, match="does not match this run's"):
    _init_encoder_from(wider, engine, state, source.image_shape)
  with pytest.raises(ValueError, match="does not match this run's"):  # the loop: nothing written
    pretrain(wider, str(tmp_path / "second"))
  assert not (tmp_path / "second").exists()


def _signal_after_steps(monkeypatch, steps: int, signums):
  """Makes the engine send itself ``signums`` (in order) during step ``steps``."""
  from ssl_jax.train.parallel import Engine  # pylint: disable=import-outside-toplevel
  step, calls = Engine.step, []

  def stepped(self, state, batch):
    calls.append(1)
    if len(calls) == steps:
      for signum in signums:
        os.kill(os.getpid(), signum)
    return step(self, state, batch)

  monkeypatch.setattr(Engine, "step", stepped)


def test_ctrl_c_saves_the_step_reached_and_the_run_resumes(tmp_path, make_config, monkeypatch):
  from ssl_jax.train.loop import Preempted  # pylint: disable=import-outside-toplevel
  _signal_after_steps(monkeypatch, 3, [signal.SIGINT])
  config = make_config(**{"checkpoint.every_steps": 100})
  before = signal.getsignal(signal.SIGINT)  # SIG_IGN in a pytest-xdist worker
  with pytest.raises(Preempted, match=r"Interrupted \(Ctrl-C\): saved a checkpoint at step 3"):
    pretrain(config, str(tmp_path))
  assert _steps(tmp_path) == [3]
  assert signal.getsignal(signal.SIGINT) is before  # the guard is gone
  monkeypatch.undo()
  pretrain(config, str(tmp_path))
  assert _steps(tmp_path)[-1] == 10


def test_second_ctrl_c_aborts_without_saving(tmp_path, make_config, monkeypatch):
  _signal_after_steps(monkeypatch, 2, [signal.SIGINT, signal.SIGINT])
  with pytest.raises(KeyboardInterrupt):
    pretrain(make_config(**{"checkpoint.every_steps": 100}), str(tmp_path))
  assert not _steps(tmp_path)


def _steps(workdir) -> list[int]:
  return sorted(int(d) for d in os.listdir(workdir / "checkpoints") if d.isdigit())
