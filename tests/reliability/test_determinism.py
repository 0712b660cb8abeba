"""Two identical runs produce bit-identical parameters on CPU."""

import jax
import numpy as np

from ssl_jax.train.checkpoint import Checkpointer
from ssl_jax.train.loop import pretrain


def _params(workdir):
  ckpt = Checkpointer(str(workdir / "checkpoints"))
  try:
    return ckpt.restore_tree(keys=("params", "batch_stats", "opt_state"))
  finally:
    ckpt.close()


def test_two_identical_runs_are_bit_identical(tmp_path, make_config):
  for name in ("a", "b"):
    pretrain(make_config(total_steps=20, **{"checkpoint.every_steps": 20}), str(tmp_path / name))
  a, b = _params(tmp_path / "a"), _params(tmp_path / "b")
  jax.tree.map(np.testing.assert_array_equal, a, b)
  # ... and a different seed gives different parameters (the comparison can fail).
  pretrain(make_config(total_steps=2, seed=1), str(tmp_path / "c"))
  c = _params(tmp_path / "c")
  assert not np.array_equal(jax.tree.leaves(a["params"])[0], jax.tree.leaves(c["params"])[0])
