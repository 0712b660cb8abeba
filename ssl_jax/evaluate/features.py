"""Frozen features of a whole dataset in fixed-size batches (one compilation serves every batch),
and what every image protocol reads before that: a split with the run's data settings
(:func:`eval_source`, :func:`eval_arrays`) and the checkpoint step to restore (:func:`checkpoint_step`).

Used by every evaluation protocol (:mod:`ssl_jax.evaluate.runner`, ``finetune``, ``text``,
``report``); it imports none of them.
"""

from __future__ import annotations

import copy
import os

import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax import augment, modalities
from ssl_jax.data import load_arrays
from ssl_jax.train.checkpoint import Checkpointer


def eval_source(config, split: str, *, dataset: str | None = None):
  """The source of ``split`` of ``dataset`` (default ``config.dataset``), read as the run's
  training data are (the run's modality's ``load_source``: ``data_dir`` and every
  ``config.data`` setting, e.g. ``image_size``, ``on_corrupt``, the held-out split of a folder).
  Every split that evaluation, fine-tuning and the report read comes from here, so they see the
  images pretraining saw."""
  if dataset is not None and dataset != config.dataset:
    config = copy.deepcopy(config)
    with config.unlocked():
      config.dataset = dataset
  return modalities.of(config).load_source(config, split)


def eval_arrays(config, split: str, *, dataset: str | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
  """``(images uint8 [N, H, W, C], labels int32 [N])`` of :func:`eval_source`."""
  return load_arrays(eval_source(config, split, dataset=dataset))


def checkpoint_step(workdir: str, step: int | None = None) -> int:
  """The committed pretraining checkpoint step of ``workdir`` to evaluate: ``step``, or the latest.

  Raises:
    FileNotFoundError: no committed checkpoint, or no step ``step`` (listing the steps there).
  """
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"))
  try:
    steps = ckpt.all_steps()
  finally:
    ckpt.close()
  if not steps:
    raise FileNotFoundError(f"no committed checkpoint in {ckpt.directory}: pretrain the run "
                            "first (ssl-jax pretrain --workdir ...).")
  if step is None:
    return max(steps)
  if step not in steps:
    raise FileNotFoundError(f"step {step} not found in {ckpt.directory}; available steps: "
                            f"{', '.join(map(str, sorted(steps)))}.")
  return step


def extract_features(features_fn, images: np.ndarray, *, batch_size: int,
                     preprocess: str = "") -> np.ndarray:
  """Runs ``features_fn(images) -> [B, D]`` over uint8 ``images`` [N, H, W, C] in fixed-size
  batches (the last one padded, so one compilation serves all), after ``preprocess``."""
  recipe = augment.parse_recipe(preprocess)
  key = jax.random.key(0)  # eval preprocessing is deterministic; the key is unused by its ops

  @jax.jit
  def run(batch):
    x = jax.vmap(lambda im: recipe(key, im))(augment.to_float(batch))
    return features_fn(x).astype(jnp.float32)

  return map_in_batches(run, images, batch_size=min(batch_size, len(images)))


def fixed_size_batches(tree, batch_size: int):
  """Yields ``(chunk, real)``: consecutive ``batch_size`` rows of every array of ``tree`` (all
  with the same leading size), the last chunk padded with zeros, and its number of real rows."""
  n = len(jax.tree.leaves(tree)[0])
  for start in range(0, n, batch_size):
    chunk = jax.tree.map(lambda x: x[start:start + batch_size], tree)
    real = min(batch_size, n - start)
    if real < batch_size:
      chunk = jax.tree.map(
          lambda x: np.concatenate([x, np.zeros((batch_size - real, *x.shape[1:]), x.dtype)]),
          chunk)
    yield chunk, real


def map_in_batches(fn, tree, *, batch_size: int) -> np.ndarray:
  """``fn(batch) -> [batch_size, ...]`` over every row of ``tree`` in fixed-size batches (so one
  compilation serves all), concatenated without the padding rows."""
  return np.concatenate([np.asarray(fn(chunk))[:real]
                         for chunk, real in fixed_size_batches(tree, batch_size)])
