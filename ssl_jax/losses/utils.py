"""Helpers shared by the losses and their callers: input checks, normalization, cross-device
reductions and gathers.

Public so that methods and monitors use the same `l2_normalize` and gathers as the losses (one
copy of each in the package); not part of `ssl_jax.losses.__all__`, which lists only losses.

The input policy every loss follows, with one helper per check: arrays may be Python lists, NumPy
or JAX arrays, and embeddings/logits must be floating point (:func:`as_float_arrays`); each loss
declares the fewest examples it needs (:func:`needs_examples`, :func:`check_min_examples`); shape
errors name each argument with its shape, in argument order (:func:`check_same_shape`); labels are
integer and, outside ``jit``, in range (:func:`as_labels`); scalar hyperparameters may be traced
(scheduled or learnable) and are validated only when concrete (:func:`check_scalars`).
"""

from __future__ import annotations

import math
from typing import Callable, Hashable, TypeVar

import jax
import jax.numpy as jnp
import numpy as np

AxisName = Hashable | tuple[Hashable, ...] | None
F = TypeVar("F", bound=Callable)


def needs_examples(minimum: int) -> Callable[[F], F]:
  """Decorator declaring the fewest examples per (global) batch a loss needs, as its
  ``min_examples`` attribute: the one place each loss states it. The loss enforces it with
  :func:`check_min_examples` and the shared test sweep reads it."""
  def declare(fn: F) -> F:
    fn.min_examples = minimum
    return fn
  return declare


def as_float_arrays(name: str, **arrays) -> tuple[jax.Array, ...]:
  """Each array as a ``jax.Array`` (Python lists and NumPy arrays accepted), in argument order.

  Raises:
    TypeError: naming the argument, unless its dtype is floating point (embeddings and logits are
      network outputs: integer or bool inputs are a caller's mistake, not something to cast).
  """
  out = []
  for arg, x in arrays.items():
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
      raise TypeError(f"{name}: {arg} must be a floating-point array, got dtype {x.dtype} (shape "
                      f"{tuple(x.shape)}); pass jnp.asarray({arg}, jnp.float32).")
    out.append(x)
  return tuple(out)


def as_labels(name: str, arg: str, labels, num_classes: int, counted=None) -> jax.Array:
  """``labels`` as an integer ``jax.Array``; outside ``jit`` also checks their range.

  Args:
    name: the loss, for the message.
    arg: the argument's name, for the message.
    labels: integer class ids (list, NumPy or JAX array).
    num_classes: ids must lie in ``[0, num_classes)``.
    counted: optional array of ``labels``' shape; only ids where it is nonzero are range-checked
      (a loss's documented ignored positions, e.g. unmasked tokens, may hold anything).

  Raises:
    TypeError: unless ``labels`` has an integer dtype.
    ValueError: when the values are concrete (not traced under ``jit``/``shard_map``) and a
      counted id is out of range (under ``jit`` nothing is checked: the loss is then not finite).
  """
  labels = jnp.asarray(labels)
  if not jnp.issubdtype(labels.dtype, jnp.integer):
    raise TypeError(f"{name}: {arg} must be an integer array of class ids, got dtype "
                    f"{labels.dtype}; pass jnp.asarray({arg}, jnp.int32).")
  if _is_traced(labels) or (counted is not None and _is_traced(counted)):
    return labels
  values = np.asarray(labels)
  if counted is not None:
    values = values[np.asarray(counted) != 0]
  if values.size and (values.min() < 0 or values.max() >= num_classes):
    raise ValueError(f"{name}: {arg} must lie in [0, {num_classes}) (the number of classes of the "
                     f"logits' last axis), got values in [{values.min()}, {values.max()}].")
  return labels


def check_min_examples(name: str, minimum: int, x: jax.Array, *, arg: str,
                       axis_name: AxisName = None, unit: str = "example",
                       scope: str = "per batch") -> None:
  """Raises ValueError, naming the minimum, unless ``x``'s leading axis holds ``minimum`` rows.

  With ``axis_name`` the rows of all devices are counted (the global batch; a static count).
  """
  n = global_count(jnp.shape(x)[0], axis_name)
  if n < minimum:
    units = unit if minimum == 1 else unit + "s"
    where = f"{scope} (over all devices on axis {axis_name!r})" if axis_name is not None else scope
    raise ValueError(f"{name} needs at least {minimum} {units} {where}, got {n} ({arg} has shape "
                     f"{tuple(jnp.shape(x))}).")


def as_views(name: str, minimum: int, axis_name: AxisName = None,
             **views) -> tuple[jax.Array, ...]:
  """Paired ``[n, d]`` views (row ``i`` of each is example ``i``), in argument order: float
  arrays (:func:`as_float_arrays`), 2-D, of one shape, with at least ``minimum`` examples over
  the global batch (:func:`check_min_examples`, counted on the first)."""
  arrays = dict(zip(views, as_float_arrays(name, **views)))
  check_matrices(name, **arrays)
  check_same_shape(name, **arrays)
  first = next(iter(arrays))
  check_min_examples(name, minimum, arrays[first], arg=first, axis_name=axis_name)
  return tuple(arrays.values())


def check_scalars(name: str, *, allow_zero: bool = False, **values) -> None:
  """Raises ValueError unless each hyperparameter is a finite scalar ``> 0`` (``>= 0`` with
  ``allow_zero``).

  Traced values (a temperature under ``jit``, scheduled or learnable) are checked for rank only:
  their value is unknown until run time.
  """
  bound = ">= 0" if allow_zero else "> 0"
  for key, value in values.items():
    if jnp.ndim(value) != 0:
      raise ValueError(f"{name}: {key} must be a scalar, got shape {jnp.shape(value)}.")
    if _is_traced(value):
      continue
    v = float(value)
    if not (math.isfinite(v) and (v >= 0 if allow_zero else v > 0)):
      raise ValueError(f"{name}: {key} must be finite and {bound}, got {v}.")


def _is_traced(x) -> bool:
  return isinstance(x, jax.core.Tracer)


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


def _listed(arrays: dict) -> str:
  """``"z_a has shape (8, 4) and z_b has shape (6, 4)"``, in argument order."""
  return " and ".join(f"{arg} has shape {tuple(jnp.shape(x))}" for arg, x in arrays.items())


def check_same_shape(name: str, **arrays: jax.Array) -> None:
  """Raises ValueError, naming each argument with its shape in argument order, unless all shapes
  are equal."""
  if len({tuple(jnp.shape(x)) for x in arrays.values()}) != 1:
    raise ValueError(f"{name}: {_listed(arrays)}; {' and '.join(arrays)} must have the same "
                     "shape (row i of each is the same example).")


def check_same_dim(name: str, **arrays: jax.Array) -> None:
  """Raises ValueError, naming each argument with its shape in argument order, unless all arrays
  have the same last (feature) dimension."""
  if len({jnp.shape(x)[-1] for x in arrays.values()}) != 1:
    raise ValueError(f"{name}: {_listed(arrays)}; {' and '.join(arrays)} must have the same "
                     "feature dimension (last axis).")


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
