"""SIGKILL during an async save and SIGTERM preemption: no work lost, bit-exact resumption."""

import glob
import json
import os
import signal
import time

import jax
import numpy as np
import pytest

pytestmark = [pytest.mark.subprocess, pytest.mark.slow, pytest.mark.timeout(900)]


def _wait_for(predicate, proc, timeout=600, what=""):
  deadline = time.time() + timeout
  while time.time() < deadline:
    if predicate():
      return
    if proc.poll() is not None:
      raise AssertionError(f"worker exited ({proc.returncode}) before {what}:\n"
                           + proc.stdout.read()[-3000:])
    time.sleep(0.2)
  raise AssertionError(f"timed out waiting for {what}")


def _finish(proc, timeout=600):
  out, _ = proc.communicate(timeout=timeout)
  return proc.returncode, out


# MoCo v2 has every kind of method state: an EMA key network (with its own BatchNorm statistics)
# and a queue with its pointer; a queue of 160 keys wraps around within the 15 steps of 64.
MOCO_V2 = ("--config.method=moco_v2", "--config.method_kwargs.queue_size=160",
           "--config.method_kwargs.proj_hidden_dim=16", "--config.method_kwargs.proj_dim=8")


def test_sigkill_during_async_save_resumes_bit_exactly(tmp_path, start_worker, final_state):
  straight = tmp_path / "straight"
  code, out = _finish(start_worker(straight, 15, *MOCO_V2))
  assert code == 0, out[-3000:]

  killed = tmp_path / "killed"
  proc = start_worker(killed, 15, "--stall-commit-at", 10, *MOCO_V2)
  tmp_glob = str(killed / "checkpoints" / "10.orbax-checkpoint-tmp*")
  _wait_for(lambda: glob.glob(tmp_glob), proc, what="the uncommitted step-10 directory")
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert glob.glob(tmp_glob), "an uncommitted temporary step directory existed at the kill"
  committed = sorted(int(d) for d in os.listdir(killed / "checkpoints") if d.isdigit())
  assert committed == [5]  # step 10 never committed: it is not "latest"

  code, out = _finish(start_worker(killed, 15, *MOCO_V2))
  assert code == 0, out[-3000:]
  assert "Resumed from step 5" in out
  step_a, a, data_a = final_state(str(straight))
  step_b, b, data_b = final_state(str(killed))
  assert step_a == step_b == 15 and data_a == data_b  # data position
  assert {"key", "queue", "queue_ptr"} <= set(a["method_state"])
  jax.tree.map(np.testing.assert_array_equal, a, b)  # params, optimizer, method state, RNG


def test_sigterm_saves_at_the_next_step_and_resumes(tmp_path, start_worker):
  workdir = tmp_path / "run"
  proc = start_worker(workdir, 60)
  metrics = workdir / "metrics.jsonl"
  _wait_for(lambda: metrics.exists() and len(metrics.read_text().splitlines()) >= 3, proc,
            what="three logged steps")
  proc.send_signal(signal.SIGTERM)
  code, out = _finish(proc)
  assert code == 143, out[-3000:]
  assert "Preempted (SIGTERM): saved a checkpoint at step" in out
  stopped = json.loads(metrics.read_text().splitlines()[-1])["step"]
  assert 3 <= stopped < 60
  assert stopped in [int(d) for d in os.listdir(workdir / "checkpoints") if d.isdigit()]

  code, out = _finish(start_worker(workdir, 60))
  assert code == 0, out[-3000:]
  assert f"Resumed from step {stopped}" in out
  steps = [json.loads(l)["step"] for l in metrics.read_text().splitlines()]
  assert steps == list(range(1, 61))  # every step logged exactly once across the two runs
