"""Helpers for the reliability tests: run the worker process, read a workdir's final state."""

import os
import subprocess
import sys

import pytest

WORKER = os.path.join(os.path.dirname(__file__), "worker.py")


@pytest.fixture
def start_worker():
  """``start_worker(workdir, total_steps, *extra) -> Popen`` running tests/reliability/worker.py."""
  procs = []

  def start(workdir, total_steps, *extra):
    env = dict(os.environ)
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    p = subprocess.Popen([sys.executable, WORKER, str(workdir), str(total_steps), *map(str, extra)],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    procs.append(p)
    return p

  yield start
  for p in procs:
    if p.poll() is None:
      p.kill()
      p.wait()


@pytest.fixture
def final_state():
  """``final_state(workdir) -> (step, state tree, data-iterator state)`` of the latest checkpoint."""
  return _final_state


def _final_state(workdir):
  """Every entry of the latest checkpoint (as NumPy) and its data-iterator state."""
  import json

  from ssl_jax.train.checkpoint import Checkpointer
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"))
  try:
    step = ckpt.latest_step()
    tree = ckpt.restore_tree(keys=("step", "params", "batch_stats", "opt_state", "method_state",
                                   "rng", "skips", "total_skips"))
  finally:
    ckpt.close()
  with open(os.path.join(workdir, "checkpoints", str(step), "data", "metadata")) as f:
    data = json.load(f)
  return step, tree, data
