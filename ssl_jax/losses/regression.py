"""Regression losses: a prediction regresses a stop-gradient target (SimSiam, BYOL)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ssl_jax.losses.utils import AxisName, as_views, global_mean, l2_normalize, needs_examples


@needs_examples(1)  # each example regresses its own target
def negative_cosine(p: jax.Array, z: jax.Array, *, axis_name: AxisName = None) -> jax.Array:
  """SimSiam's negative cosine similarity ``D(p, z) = -cos(p, stop_gradient(z))``, batch mean.

  ``loss = -(1 / N) sum_i  <p_i, z_i> / (||p_i|| ||z_i||)`` with no gradient through ``z`` (the
  stop-gradient is part of the loss: Chen & He, 2021, "Exploring Simple Siamese Representation
  Learning", eq. 1-3, https://arxiv.org/abs/2011.10566). The SimSiam method symmetrizes by
  averaging both directions itself, ``0.5 * (D(p1, z2) + D(p2, z1))``, as ``main_simsiam.py`` of
  facebookresearch/simsiam does with ``nn.CosineSimilarity``; the forward value follows both
  (they agree). Vectors are L2-normalized in float32 with their norm clamped at 1e-12 (the
  official ``CosineSimilarity`` clamps at 1e-8: the two differ only for near-zero vectors).

  ``axis_name`` is an optional, backward-compatible extension of the paper's ``D(p, z)``: inside
  ``shard_map`` each device passes its shard and the result is the mean over the global batch,
  identical on every device, with exact gradients. Without it, a per-device call returns the
  per-device mean.

  Args:
    p: ``[n, d]`` predictor outputs (local shard when ``axis_name`` is set).
    z: ``[n, d]`` targets (projections of the other view); no gradient flows to them.
    axis_name: data-parallel axis to reduce over (inside ``shard_map``/``pmap``), or None.

  Returns:
    Scalar float32 loss in ``[-1, 1]``.

  Raises:
    TypeError: if an input is not floating point.
    ValueError: if the inputs are not 2-D of equal shape or the global batch is empty.

  Example:
    >>> import jax.numpy as jnp
    >>> p = jnp.array([[1.0, 0.0], [1.0, 1.0]])
    >>> z = jnp.array([[2.0, 0.0], [0.0, 3.0]])
    >>> round(float(negative_cosine(p, z)), 4)  # -(1 + 1/sqrt(2)) / 2
    -0.8536
  """
  p, z = as_views("negative_cosine", negative_cosine.min_examples, axis_name, p=p, z=z)
  cos = jnp.sum(l2_normalize(p) * l2_normalize(jax.lax.stop_gradient(z)), axis=-1)
  return -global_mean(cos, axis_name)


@needs_examples(1)  # each example regresses its own target
def byol_loss(p: jax.Array, z: jax.Array, *, axis_name: AxisName = None) -> jax.Array:
  """BYOL's regression loss ``2 - 2 cos(p, stop_gradient(z))``, averaged over the batch.

  ``loss = (1 / N) sum_i ||p_i / ||p_i|| - z_i / ||z_i||||^2`` with no gradient through the
  target ``z`` (Grill et al., 2020, "Bootstrap Your Own Latent", eq. 2,
  https://arxiv.org/abs/2006.07733). The forward value follows the official code
  (``regression_loss`` in ``byol/utils/helpers.py`` of google-deepmind/deepmind-research, whose
  mean over the batch is taken in ``byol/byol_experiment.py``): the squared distance of the
  normalized vectors, which equals the paper's ``2 - 2 cos`` without its cancellation for nearly
  aligned vectors. The BYOL method sums both directions itself,
  ``byol_loss(p1, z2') + byol_loss(p2, z1')``. Norms are clamped at 1e-12 in float32 (the
  official code clamps the squared norm at 1e-12: the two differ only for near-zero vectors).

  ``axis_name`` is an optional, backward-compatible extension of the paper's loss: inside
  ``shard_map`` each device passes its shard and the result is the mean over the global batch,
  identical on every device, with exact gradients.

  Args:
    p: ``[n, d]`` online predictions (local shard when ``axis_name`` is set).
    z: ``[n, d]`` target projections of the other view; no gradient flows to them.
    axis_name: data-parallel axis to reduce over (inside ``shard_map``/``pmap``), or None.

  Returns:
    Scalar float32 loss in ``[0, 4]``.

  Raises:
    TypeError: if an input is not floating point.
    ValueError: if the inputs are not 2-D of equal shape or the global batch is empty.

  Example:
    >>> import jax.numpy as jnp
    >>> p = jnp.array([[1.0, 0.0], [1.0, 1.0]])
    >>> z = jnp.array([[2.0, 0.0], [0.0, 3.0]])
    >>> round(float(byol_loss(p, z)), 4)  # (0 + (2 - sqrt(2))) / 2
    0.2929
  """
  p, z = as_views("byol_loss", byol_loss.min_examples, axis_name, p=p, z=z)
  diff = l2_normalize(p) - l2_normalize(jax.lax.stop_gradient(z))
  return global_mean(jnp.sum(diff * diff, axis=-1), axis_name)
