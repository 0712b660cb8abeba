"""Pieces shared by method modules: views, momentum (EMA) teachers and their schedules."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

PyTree = Any


def two_views(batch) -> tuple[jax.Array, jax.Array]:
  """The two views of a batch, in sorted name order (``config.views`` has exactly two)."""
  views = batch["views"]
  if len(views) != 2:
    raise ValueError(f"This method takes exactly 2 views, got {sorted(views)}: "
                     "set config.views to two recipes.")
  a, b = sorted(views)
  return views[a], views[b]


def ema(target: PyTree, online: PyTree, momentum) -> PyTree:
  """``momentum * target + (1 - momentum) * online``, leaf by leaf (float32)."""
  return jax.tree.map(lambda t, o: momentum * t + (1.0 - momentum) * o, target, online)


def cosine_momentum(step, total_steps: int, base: float, final: float = 1.0):
  """BYOL's schedule: ``final - (final - base) * (cos(pi * step / total_steps) + 1) / 2``.

  Grill et al. 2020, section 3.2 (``tau = 1 - (1 - tau_base)(cos(pi k / K) + 1) / 2``); MoCo v3
  uses the same from 0.99 to 1 (Chen et al. 2021, section 4).

  >>> round(float(cosine_momentum(0, 100, 0.996)), 6), float(cosine_momentum(100, 100, 0.996))
  (0.996, 1.0)
  """
  if total_steps is None or total_steps <= 0:
    raise ValueError(f"cosine_momentum needs total_steps > 0, got {total_steps}; build the method "
                     "with make(config, total_steps=...).")
  progress = jnp.clip(jnp.asarray(step, jnp.float32) / total_steps, 0.0, 1.0)
  return final - (final - base) * (jnp.cos(math.pi * progress) + 1.0) / 2.0


def gather_global(x: jax.Array, axis_name) -> jax.Array:
  """The global batch of ``x`` ``[n, ...]`` -> ``[n * devices, ...]``, identical on every device,
  without gradient: for method state such as queues (MoCo's keys, NNCLR's support set).

  Typed invariant over ``axis_name`` (``all_gather(..., to="invarying")``) so it can live in the
  replicated train state under ``shard_map(check_vma=True)``. Identity without an axis.
  """
  x = jax.lax.stop_gradient(x)
  if axis_name is None:
    return x
  return jax.lax.all_gather(x, axis_name, axis=0, tiled=True, to="invarying")


def push(queue: jax.Array, ptr: jax.Array, rows: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Writes ``rows`` ``[b, D]`` into the ring buffer ``queue`` ``[K, D]`` at ``ptr`` (oldest
  first, wrapping around); returns the new queue and pointer. ``b`` must divide ``K``."""
  k, b = queue.shape[0], rows.shape[0]
  if k % b:
    raise ValueError(f"queue size {k} must be a multiple of the global batch {b}.")
  queue = jax.lax.dynamic_update_slice(queue, rows.astype(queue.dtype), (ptr, 0))
  return queue, (ptr + b) % k
