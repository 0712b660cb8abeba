"""Assembling per-process NumPy batches into global ``jax.Array`` batches."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec


def batch_sharding(mesh: Mesh, data_axis: str | tuple[str, ...] = "data") -> NamedSharding:
  """The sharding of a batch over ``mesh``: leading dim split over ``data_axis``, rest replicated.

  Args:
    mesh: The device mesh.
    data_axis: Mesh axis name (or names, for data parallelism over several axes) of the batch.

  Returns:
    ``NamedSharding(mesh, PartitionSpec(data_axis))``.
  """
  axes = (data_axis,) if isinstance(data_axis, str) else tuple(data_axis)
  missing = [a for a in axes if a not in mesh.axis_names]
  if missing:
    raise ValueError(f"mesh has no axis {missing[0]!r}; its axes are {mesh.axis_names} (pass "
                     f"data_axis=)")
  return NamedSharding(mesh, PartitionSpec(axes[0] if len(axes) == 1 else axes))


def to_global(local_batch: Any, sharding_or_mesh: jax.sharding.Sharding | Mesh, *,
              data_axis: str | tuple[str, ...] = "data") -> Any:
  """Assembles this process's batch into a global batch of ``jax.Array``s.

  Every leaf's leading dimension is the batch: the global array is the concatenation of all
  processes' local batches in process order (matching :func:`ssl_jax.data.make_iterator`), sharded
  over the data axis, via ``jax.make_array_from_process_local_data``.

  Args:
    local_batch: Pytree of NumPy arrays with a common leading (local batch) dimension.
    sharding_or_mesh: A ``Mesh`` (the batch is split over ``data_axis``) or a ``Sharding`` used for
      every leaf as is.
    data_axis: With a mesh, the batch axis name(s).

  Returns:
    The same pytree of global ``jax.Array``s.

  Raises:
    ValueError: if the mesh lacks ``data_axis`` or a leaf's batch does not split over it evenly.
  """
  if isinstance(sharding_or_mesh, Mesh):
    sharding = batch_sharding(sharding_or_mesh, data_axis)
  elif isinstance(sharding_or_mesh, jax.sharding.Sharding):
    sharding = sharding_or_mesh
  else:
    raise TypeError(f"expected a jax.sharding.Mesh or Sharding, got {type(sharding_or_mesh)}")

  def one(path: Any, x: Any) -> jax.Array:
    x = np.asarray(x)
    if x.ndim == 0:
      raise ValueError(f"batch leaf {jax.tree_util.keystr(path)} is a scalar; every leaf needs "
                       f"a leading batch dimension")
    if isinstance(sharding, NamedSharding) and sharding.spec and sharding.spec[0] is not None:
      names = sharding.spec[0] if isinstance(sharding.spec[0], tuple) else (sharding.spec[0],)
      shards = int(np.prod([sharding.mesh.shape[a] for a in names]))
      global_size = x.shape[0] * jax.process_count()
      if global_size % shards:
        raise ValueError(f"batch leaf {jax.tree_util.keystr(path)}: global batch {global_size} "
                         f"does not split evenly over {shards} devices of axis {names}")
    return jax.make_array_from_process_local_data(sharding, x)

  return jax.tree_util.tree_map_with_path(one, local_batch)
