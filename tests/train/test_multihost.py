"""Two processes on localhost: disjoint data, one global batch, identical parameters."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from ssl_jax.data.iterator import make_iterator
from ssl_jax.data.sources import load_source

WORKER = os.path.join(os.path.dirname(__file__), "multihost_worker.py")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


@pytest.mark.subprocess
@pytest.mark.timeout(600)
def test_two_processes_read_disjoint_data_and_agree(tmp_path):
  port = _free_port()
  cache = os.environ.get("SSL_JAX_TEST_CACHE", str(tmp_path / "cache"))
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  procs, outs = [], []
  for pid in range(2):
    out = str(tmp_path / f"p{pid}.json")
    outs.append(out)
    procs.append(subprocess.Popen([sys.executable, WORKER, str(pid), "2", str(port), out, cache],
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
  logs = []
  for p in procs:
    try:
      logs.append(p.communicate(timeout=500)[0].decode(errors="replace"))
    finally:
      p.kill()
  for p, log in zip(procs, logs):
    assert p.returncode == 0, log[-3000:]
  r0, r1 = (json.load(open(o)) for o in outs)
  assert (r0["process_count"], r0["devices"], r0["local_devices"]) == (2, 4, 2)
  # Each host read half of every global batch, disjoint, and together exactly the batch one host
  # would read with the same seed.
  single = make_iterator(load_source("digits", "train"), global_batch_size=32, seed=0,
                         process_index=0, process_count=1)
  for step in range(2):
    a, b = r0["indices"][step], r1["indices"][step]
    assert len(a) == len(b) == 16 and not set(a) & set(b)
    assert a + b == next(single)["index"].tolist()
  # Over a whole epoch the hosts' example sets are disjoint and together cover it (all but the
  # remainder dropped to keep shapes fixed), with no example read twice.
  e0, e1 = r0["epoch"], r1["epoch"]
  assert len(set(e0)) == len(e0) and len(set(e1)) == len(e1) and not set(e0) & set(e1)
  assert len(e0) + len(e1) == (1257 // 32) * 32 and set(e0) | set(e1) <= set(range(1257))
  # Both hosts hold the same parameters and loss after the steps.
  assert r0["loss"] == r1["loss"]
  np.testing.assert_array_equal(r0["params"], r1["params"])
