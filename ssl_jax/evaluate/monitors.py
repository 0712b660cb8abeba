"""Health monitors computed inside the train step (collapse detection).

``embedding_std(z)``: the per-dimension standard deviation of L2-normalized embeddings over the
global batch, averaged over dimensions. Embeddings spread over the unit sphere of ``d`` dimensions
give about ``1 / sqrt(d)``; a collapsed representation (every input mapped to the same point, as
SimSiam without its stop-gradient) gives ~0 (Chen & He, 2021, "Exploring Simple Siamese
Representation Learning", section 4.1 and figure 2, https://arxiv.org/abs/2011.10566).
``embedding_std_ratio = embedding_std * sqrt(d)`` puts that on a scale where 1 is healthy and 0 is
collapse; the train loop warns below :data:`COLLAPSE_THRESHOLD`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ssl_jax.losses._utils import AxisName, global_sum, l2_normalize

COLLAPSE_THRESHOLD = 0.1  # on embedding_std_ratio


def embedding_std(z: jax.Array, *, axis_name: AxisName = None) -> dict[str, jax.Array]:
  """Collapse monitor of ``z`` ``[n, d]`` (the local shard under ``axis_name``).

  Returns ``{"embedding_std": mean_j std_j(z / ||z||), "embedding_std_ratio": that * sqrt(d)}``,
  statistics over the global batch (sums reduced over ``axis_name``), computed without gradient.

  Example:
    >>> import jax.numpy as jnp
    >>> m = embedding_std(jnp.ones((4, 16)))  # every example the same: collapsed
    >>> float(m["embedding_std"])
    0.0
  """
  z = l2_normalize(jax.lax.stop_gradient(z))
  n = global_sum(jnp.asarray(z.shape[0], jnp.float32), axis_name)
  mean = global_sum(jnp.sum(z, axis=0), axis_name) / n
  var = global_sum(jnp.sum(jnp.square(z - mean), axis=0), axis_name) / n
  std = jnp.mean(jnp.sqrt(jnp.maximum(var, 0.0)))
  return {"embedding_std": std, "embedding_std_ratio": std * jnp.sqrt(float(z.shape[1]))}
