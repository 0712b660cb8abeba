"""A run's workdir as files: atomic JSON writes, its ``config.json``, its pretrained networks.

The training layer owns these because it writes the workdir (:mod:`ssl_jax.train.loop`) and
restores a pretrained encoder from another one (``config.init_from``); the evaluation protocols
(:mod:`ssl_jax.evaluate`) import them from here, and nothing in ``ssl_jax.train`` imports
``ssl_jax.evaluate``.
"""

from __future__ import annotations

import json
import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections

from ssl_jax import methods
from ssl_jax.train.checkpoint import Checkpointer
from ssl_jax.train.state import init_key


def write_json_atomic(path: str, obj: Any) -> None:
  """Writes JSON to a temporary file and renames it, so a reader never sees half a file."""
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(obj, f, indent=2, sort_keys=True)
    f.write("\n")
  os.replace(tmp, path)


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
  """The resolved config a pretraining run wrote to ``workdir/config.json`` (JSON only: no config
  code is loaded from a workdir)."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found: is {workdir!r} a pretraining workdir?")
  with open(path, encoding="utf-8") as f:
    return ml_collections.ConfigDict(json.load(f))


class Restored(NamedTuple):
  """A workdir's pretrained networks (see :func:`restore_run`)."""
  config: ml_collections.ConfigDict
  method: Any
  step: int
  trained: dict  # {"params", "batch_stats", "method_state"} restored from the checkpoint
  initial: dict  # the same the run started from (the random-init baseline)

  def features_fn(self, which: str = "trained"):
    """``inputs -> features`` of the ``trained`` or ``initial`` networks (``Method.features``
    with the restored method-state entries it reads)."""
    tree = getattr(self, which)
    return lambda x: self.method.features(tree["params"], tree["batch_stats"],
                                          tree["method_state"], x)


def restore_run(workdir: str, image_shape, *, step: int | None = None,
                config: ml_collections.ConfigDict | None = None) -> Restored:
  """Rebuilds the method of ``workdir`` from its ``config.json`` and restores the networks of
  its latest (or ``step``) committed pretraining checkpoint into their own structure.

  Args:
    workdir: a pretraining workdir.
    image_shape: ``(H, W, C)`` of the images the networks will see (None for text methods).
    step: checkpoint step (default: the latest).
    config: the run config (default: read from the workdir).

  Raises:
    FileNotFoundError: no ``config.json`` or no committed checkpoint.
  """
  config = config if config is not None else load_run_config(workdir)
  method = methods.make(config.method, config)
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"))
  try:
    used_step = step if step is not None else ckpt.latest_step()
    if used_step is None:
      raise FileNotFoundError(f"No committed checkpoint in {ckpt.directory}.")
    example = (None if image_shape is None  # text methods build their networks from the config
               else {"image": jax.ShapeDtypeStruct((1, *image_shape), jnp.uint8)})
    init_params, init_stats, init_ms = method.init(init_key(jax.random.key(config.seed)), example)
    initial = {"params": init_params, "batch_stats": init_stats,
               "method_state": {k: init_ms[k] for k in method.eval_state}}
    # Restored into the network's own structure: the stored one has string keys only ("0" for
    # the layer-list key 0).
    trained = ckpt.restore_tree(step=used_step, target=initial,
                                method_state_keys=method.eval_state)
    trained.setdefault("method_state", {})
  finally:
    ckpt.close()
  return Restored(config, method, int(used_step), trained, initial)
