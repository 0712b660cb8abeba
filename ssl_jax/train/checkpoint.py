"""Orbax checkpointing of the train state and the data iterator position.

Layout: ``DIR/checkpoints/<step>/{state,data}`` managed by ``orbax.checkpoint.CheckpointManager``
(atomic: written to a temporary directory, renamed when committed; unfinalized steps are ignored).
Saves are asynchronous: :meth:`Checkpointer.save` returns once the arrays are copied off the
devices and the write continues in the background; :meth:`Checkpointer.wait` blocks until it
commits (and raises if it failed).

The train state is saved as a plain dict (typed PRNG keys as their ``key_data``). Restoring checks
the stored tree against the target first: any missing, extra or differently shaped leaf is an error
listing each path with the expected and found shapes, and nothing is restored.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from ssl_jax.train.state import TrainState

PyTree = Any
STATE, DATA = "state", "data"


def path_str(path) -> str:
  """``(DictKey('params'), GetAttrKey('count'), SequenceKey(0))`` -> ``"params/count/0"``."""
  parts = []
  for k in path:
    for attr in ("key", "name", "idx"):
      if hasattr(k, attr):
        parts.append(str(getattr(k, attr)))
        break
    else:
      parts.append(str(k))
  return "/".join(parts)


def _shapes(tree) -> dict[str, tuple]:
  flat, _ = jax.tree_util.tree_flatten_with_path(tree)
  return {path_str(p): tuple(getattr(x, "shape", np.shape(x))) for p, x in flat}


def check_compatible(expected: PyTree, found: PyTree, *, what: str = "checkpoint") -> None:
  """Raises ValueError naming every leaf whose path or shape differs between two trees."""
  want, got = _shapes(expected), _shapes(found)
  problems = []
  for path in sorted(set(want) | set(got)):
    if path not in got:
      problems.append(f"  {path}: expected {want[path]}, missing from the {what}")
    elif path not in want:
      problems.append(f"  {path}: unexpected in the {what} (shape {got[path]})")
    elif want[path] != got[path]:
      problems.append(f"  {path}: expected {want[path]}, found {got[path]}")
  if problems:
    raise ValueError(f"The {what} does not match the model built from this config "
                     f"({len(problems)} mismatched leaves); nothing was restored:\n"
                     + "\n".join(problems))


def state_to_tree(state: TrainState) -> dict:
  """TrainState -> dict of arrays (typed keys as key data)."""
  tree = {f: getattr(state, f) for f in state.__dataclass_fields__}
  tree["rng"] = jax.random.key_data(state.rng)
  return tree


def tree_to_state(tree: dict, like: TrainState) -> TrainState:
  tree = dict(tree)
  tree["rng"] = jax.random.wrap_key_data(tree["rng"], impl=jax.random.key_impl(like.rng))
  return TrainState(**tree)


class Checkpointer:
  """Saves and restores train state + data-iterator state under one directory."""

  def __init__(self, directory: str, *, max_to_keep: int = 3, every_steps: int = 0,
               async_save: bool = True):
    self.directory = os.path.abspath(directory)
    self.every_steps = every_steps
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=True, enable_async_checkpointing=async_save)
    self._manager = ocp.CheckpointManager(
        self.directory, options=options,
        item_handlers={STATE: ocp.StandardCheckpointHandler(), DATA: ocp.JsonCheckpointHandler()})

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def should_save(self, step: int, *, final: bool = False) -> bool:
    if final:
      return self.latest_step() != step
    return self.every_steps > 0 and step % self.every_steps == 0

  def save(self, step: int, state: TrainState, data_state: dict | None = None) -> None:
    """Starts an asynchronous save of ``state`` (global, unreplicated) and the iterator state."""
    items = {STATE: ocp.args.StandardSave(state_to_tree(state))}
    if data_state is not None:
      items[DATA] = ocp.args.JsonSave(data_state)
    self._manager.save(step, args=ocp.args.Composite(**items), force=True)

  def restore(self, like: TrainState, *,
              step: int | None = None) -> tuple[TrainState, dict | None]:
    """Restores ``step`` (default latest) into the structure, shapes and shardings of ``like``.

    Returns the state and the saved data-iterator state (None if the step has none).
    """
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"No committed checkpoint in {self.directory}.")
    target = state_to_tree(like)
    stored = self._manager.item_metadata(step)[STATE]
    check_compatible(target, getattr(stored, "tree", stored), what=f"checkpoint at step {step}")
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
        target)
    items = {STATE: ocp.args.StandardRestore(abstract)}
    has_data = os.path.isdir(os.path.join(self.directory, str(step), DATA))
    if has_data:
      items[DATA] = ocp.args.JsonRestore()
    restored = self._manager.restore(step, args=ocp.args.Composite(**items))
    return tree_to_state(restored[STATE], like), (restored[DATA] if has_data else None)

  def restore_tree(self, *, step: int | None = None, keys=("params", "batch_stats"),
                   target: dict | None = None) -> dict:
    """Restores only some top-level entries (e.g. for evaluation), as host NumPy arrays.

    Args:
      step: the step (default: latest).
      keys: top-level entries of the state to read.
      target: optional ``{key: tree}`` of arrays or ``ShapeDtypeStruct`` (e.g. a freshly built
        network's ``params`` and ``batch_stats``) giving the structure to restore into; checked
        against the checkpoint like :meth:`restore`. Without it the structure is the stored one,
        where every dict key is a string: the integer keys of list-like modules (``{0: ...}``)
        come back as ``"0"``, which a network rebuilt from the config does not accept.
    """
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"No committed checkpoint in {self.directory}.")
    stored = self._manager.item_metadata(step)[STATE]
    tree = getattr(stored, "tree", stored)
    missing = [k for k in keys if k not in tree]
    if missing:
      raise ValueError(f"checkpoint at step {step} has no {missing}; it holds {sorted(tree)}.")
    if target is not None:
      target = {k: target[k] for k in keys}
      check_compatible(target, {k: tree[k] for k in keys}, what=f"checkpoint at step {step}")
      tree = target
    abstract = {k: jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), tree[k])
                for k in keys}
    restore_args = jax.tree.map(lambda _: ocp.ArrayRestoreArgs(restore_type=np.ndarray), abstract)
    # A partial read of the state item (only ``keys``), straight from its directory.
    with ocp.Checkpointer(ocp.PyTreeCheckpointHandler()) as reader:
      return reader.restore(
          os.path.join(self.directory, str(step), STATE),
          args=ocp.args.PyTreeRestore(item=abstract, restore_args=restore_args,
                                      partial_restore=True))

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
