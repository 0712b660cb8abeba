"""Helpers shared by the losses and their callers: input checks, normalization, cross-device
reductions and gathers.

Public so that methods and monitors use the same `l2_normalize` and gathers as the losses (one
copy of each in the package); not part of `ssl_jax.losses.__all__`, which lists only losses.
"""

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
  """``x / max(||x||, eps)`` along the last axis, in float32 (as ``F.normalize``).

  Computed as ``x * rsqrt(max(||x||^2, eps^2))``: the same value, and a finite gradient for an
  all-zero row (``1 / eps``, as PyTorch's), where ``sqrt``'s infinite derivative at 0 would make
  it NaN (a predictor row that is exactly zero, e.g. every ReLU of a narrow hidden layer off with
  a zero-initialized bias, then turned the whole step non-finite).
  """
  x = x.astype(jnp.float32)
  squared = jnp.sum(x * x, axis=-1, keepdims=True)
  return x * jax.lax.rsqrt(jnp.maximum(squared, eps * eps))


def all_gather(x: jax.Array, axis_name: AxisName, *, invariant: bool = False) -> jax.Array:
  """The global batch of ``x`` ``[n, ...]`` -> ``[n * devices, ...]`` (identity without an axis).

  The package's one all-gather (``jax.lax.all_gather(..., axis=0, tiled=True)``); its callers differ
  only in two choices:

  * gradient: the gather is differentiable (cotangents flow back to the device that owns each
    row: gathered negatives in the losses); callers that want none (method state, monitors)
    ``stop_gradient`` the input, as :func:`ssl_jax.methods.common.gather_global` does.
  * ``invariant``: types the result as replicated over ``axis_name`` (``to="invarying"``), so it
    can be stored in the replicated train state or returned as is under
    ``shard_map(check_vma=True)``; otherwise it stays varying, like its input.
  """
  if axis_name is None:
    return x
  if invariant:
    return jax.lax.all_gather(x, axis_name, axis=0, tiled=True, to="invarying")
  return jax.lax.all_gather(x, axis_name, axis=0, tiled=True)


def gather(x: jax.Array, axis_name: AxisName) -> tuple[jax.Array, jax.Array]:
  """:func:`all_gather` of ``x`` [n, ...] (differentiable, varying) and the offset of this
  device's rows in the result (0 without an axis): where a loss finds its positives among the
  gathered negatives.
  """
  if axis_name is None:
    return x, jnp.zeros((), jnp.int32)
  return all_gather(x, axis_name), jax.lax.axis_index(axis_name) * x.shape[0]


def global_sum(x: jax.Array, axis_name: AxisName) -> jax.Array:
  """Sum over the data axis (identity without one)."""
  return x if axis_name is None else jax.lax.psum(x, axis_name)


def check_matrices(name: str, **arrays: jax.Array) -> None:
  """Raises ValueError, naming the argument and its shape, unless each array is 2-D."""
  for arg, x in arrays.items():
    if jnp.ndim(x) != 2:
      raise ValueError(f"{name}: {arg} must be 2-D [batch, dim], got shape {jnp.shape(x)}.")


def check_same_shape(name: str, **arrays: jax.Array) -> None:
  """Raises ValueError, naming the arguments and their shapes, unless all shapes are equal."""
  shapes = {arg: tuple(jnp.shape(x)) for arg, x in arrays.items()}
  if len(set(shapes.values())) != 1:
    listed = ", ".join(f"{arg} {shape}" for arg, shape in shapes.items())
    raise ValueError(f"{name}: {' and '.join(shapes)} must have the same shape, got {listed}.")


def check_same_dim(name: str, **arrays: jax.Array) -> None:
  """Raises ValueError unless all arrays have the same last (feature) dimension."""
  dims = {arg: jnp.shape(x)[-1] for arg, x in arrays.items()}
  if len(set(dims.values())) != 1:
    listed = ", ".join(f"{arg} {tuple(jnp.shape(x))}" for arg, x in arrays.items())
    raise ValueError(f"{name}: {' and '.join(dims)} must have the same feature dimension, "
                     f"got {listed}.")


def global_count(n: int, axis_name: AxisName) -> int:
  """The number of rows over the data axis when each device holds ``n`` (static)."""
  return n if axis_name is None else jax.lax.psum(n, axis_name)


def global_mean(x: jax.Array, axis_name: AxisName) -> jax.Array:
  """Mean over the leading (batch) axis of the global batch: a reduced sum over a reduced count.

  Equal to ``mean(x, axis=0)`` of the concatenated shards; with ``axis_name`` the result is
  identical on every device and its gradient reaches each device's own rows exactly.
  """
  return global_sum(jnp.sum(x, axis=0), axis_name) / global_count(x.shape[0], axis_name)


def standardize(z: jax.Array, axis_name: AxisName, *, eps: float = 1e-5) -> jax.Array:
  """``(z - mean) / sqrt(var + eps)`` per dimension of ``z`` ``[N, D]`` over the global batch
  (biased variance): ``nn.BatchNorm1d(affine=False)`` in training mode, whose default ``eps``
  (1e-5) is the one Barlow Twins standardizes with (:func:`ssl_jax.losses.barlow_twins`)."""
  centered = z - global_mean(z, axis_name)
  var = global_mean(centered * centered, axis_name)
  return centered * jax.lax.rsqrt(var + eps)


def off_diagonal_mask(d: int) -> jax.Array:
  """``[d, d]`` float32 mask, 1 off the diagonal and 0 on it."""
  return 1.0 - jnp.eye(d, dtype=jnp.float32)
