"""Frozen features of a whole dataset in fixed-size batches (one compilation serves every batch).

Used by every evaluation protocol (:mod:`ssl_jax.evaluate.runner`, ``finetune``, ``text``,
``report``); it imports none of them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax import augment


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
