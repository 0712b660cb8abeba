"""Helpers shared by the losses: input checks, normalization, cross-device gathers."""

from __future__ import annotations

from typing import Hashable

import jax
import jax.numpy as jnp

AxisName = Hashable | tuple[Hashable, ...] | None


def check_embeddings(name: str, *arrays: jax.Array) -> None:
  """Raises ValueError unless all ``arrays`` are 2-D ``[N, D]`` with the same shape."""
  for i, x in enumerate(arrays):
    if jnp.ndim(x) != 2:
      raise ValueError(f"{name}: argument {i} must be 2-D [batch, dim], got shape {jnp.shape(x)}.")
  shapes = {tuple(jnp.shape(x)) for x in arrays}
  if len(shapes) != 1:
    raise ValueError(f"{name}: arguments must have the same shape, got {sorted(shapes)}.")


def check_positive(name: str, **values: float) -> None:
  for key, value in values.items():
    if not value > 0:
      raise ValueError(f"{name}: {key} must be > 0, got {value}.")


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
  """``x / max(||x||, eps)`` along the last axis, in float32 (as ``F.normalize``)."""
  x = x.astype(jnp.float32)
  norm = jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True))
  return x / jnp.maximum(norm, eps)


def gather(x: jax.Array, axis_name: AxisName) -> tuple[jax.Array, jax.Array]:
  """All-gathers ``x`` [n, ...] over ``axis_name`` into [n * devices, ...].

  Returns the gathered array and the offset of this device's rows in it (0 without an axis).
  The gather is differentiable: cotangents flow back to the device that owns each row, so
  gradients through gathered negatives are exact.
  """
  if axis_name is None:
    return x, jnp.zeros((), jnp.int32)
  gathered = jax.lax.all_gather(x, axis_name, axis=0, tiled=True)
  offset = jax.lax.axis_index(axis_name) * x.shape[0]
  return gathered, offset


def global_sum(x: jax.Array, axis_name: AxisName) -> jax.Array:
  """Sum over the data axis (identity without one)."""
  return x if axis_name is None else jax.lax.psum(x, axis_name)
