"""Redundancy-reduction losses on batch statistics of the embeddings (Barlow Twins, VICReg).

Both losses depend on statistics of the whole batch (means, variances, cross-correlations), so
across devices they reduce *sums* over the data axis with ``psum`` and divide by the global count.
The value and the gradients then equal the single-device computation on the global batch, which
the official PyTorch code does not give exactly (see each function).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ssl_jax.losses.utils import (AxisName, as_views, check_scalars, global_count, global_mean,
                                  global_sum, needs_examples, off_diagonal_mask, standardize)


@needs_examples(2)  # a variance / correlation over the batch needs two examples
def barlow_twins(z_a: jax.Array, z_b: jax.Array, *, lambda_: float = 0.0051,
                 axis_name: AxisName = None) -> jax.Array:
  """Barlow Twins: drive the cross-correlation of the two views' embeddings to the identity.

  Each dimension is standardized over the global batch of N examples (mean 0, biased variance,
  ``eps = 1e-5``: ``nn.BatchNorm1d(affine=False)`` in training mode, synced across GPUs), then
  ``C = z_a_norm^T z_b_norm / N`` (``[D, D]``) and

  ``loss = sum_i (1 - C_ii)^2 + lambda_ * sum_i sum_{j != i} C_ij^2``

  (Zbontar et al., 2021, "Barlow Twins: Self-Supervised Learning via Redundancy Reduction",
  eq. 1-2, https://arxiv.org/abs/2103.03230). The forward value follows the current official code
  (``BarlowTwins.forward`` in ``main.py`` of facebookresearch/barlowtwins, ``--lambd 0.0051``),
  which is the paper's formula with C from batch standardization (the paper's eq. 2 is the
  correlation: they differ only by BatchNorm's eps). The first release multiplied both terms by
  ``--scale-loss 1/32`` (with ``--lambd 3.9e-3``); commit 046eec3 replaced it by separate learning
  rates for biases and set ``--lambd 0.0051``; no scale factor is applied here. Computed in float32
  (the official code runs the projector under autocast).

  With ``axis_name`` each device passes its shard; the per-dimension means and variances and
  ``C`` are built from sums reduced with ``psum``, so the value and the gradients equal the
  single-device computation on the global batch. (The official code all-reduces ``C`` without a
  backward all-reduce, which scales the gradient of ``C`` by 1 / world size; that is not
  reproduced.) Communication is one ``[D, D]`` reduction, like the official all-reduce.

  Args:
    z_a: ``[n, d]`` projector outputs of the first view (local shard with ``axis_name``).
    z_b: ``[n, d]`` projector outputs of the second view, row ``i`` pairs with ``z_a[i]``.
    lambda_: weight of the off-diagonal (redundancy-reduction) term.
    axis_name: data-parallel axis to reduce over (inside ``shard_map``/``pmap``), or None.

  Returns:
    Scalar float32 loss.

  Raises:
    TypeError: if an input is not floating point.
    ValueError: if the inputs are not 2-D of equal shape, the global batch has < 2 rows, or a
      concrete ``lambda_`` is negative or not finite.

  Example:
    >>> import jax.numpy as jnp
    >>> z_a = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    >>> z_b = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    >>> round(float(barlow_twins(z_a, z_b, lambda_=1.0)), 4)  # C ~ identity: ~0
    0.0
    >>> round(float(barlow_twins(z_a, z_b[:, ::-1], lambda_=1.0)), 4)  # C ~ [[0, 1], [1, 0]]
    3.9998
  """
  z_a, z_b = as_views("barlow_twins", barlow_twins.min_examples, axis_name, z_a=z_a, z_b=z_b)
  check_scalars("barlow_twins", allow_zero=True, lambda_=lambda_)
  z_a = standardize(z_a.astype(jnp.float32), axis_name)
  z_b = standardize(z_b.astype(jnp.float32), axis_name)
  n_global = global_count(z_a.shape[0], axis_name)
  c = global_sum(z_a.T @ z_b, axis_name) / n_global
  on_diag = jnp.sum(jnp.square(1.0 - jnp.diagonal(c)))
  off_diag = jnp.sum(jnp.square(c) * off_diagonal_mask(c.shape[0]))
  return on_diag + lambda_ * off_diag


@needs_examples(2)  # the unbiased covariance divides by N - 1
def vicreg(z_a: jax.Array, z_b: jax.Array, *, sim_weight: float = 25.0, var_weight: float = 25.0,
           cov_weight: float = 1.0, eps: float = 1e-4, axis_name: AxisName = None) -> jax.Array:
  """VICReg: variance-invariance-covariance regularization of two views' embeddings.

  For a global batch of N examples of dimension D, with ``Cov(z)`` the unbiased ``[D, D]``
  covariance over the batch and ``std_j = sqrt(Cov(z)_jj + eps)``:

  - invariance ``s = (1 / (N D)) sum_ij (z_a_ij - z_b_ij)^2`` (``F.mse_loss``);
  - variance ``v = 0.5 * [mean_j relu(1 - std_j(z_a)) + mean_j relu(1 - std_j(z_b))]``;
  - covariance ``c = sum_{i != j} Cov(z_a)_ij^2 / D + sum_{i != j} Cov(z_b)_ij^2 / D``;
  - ``loss = sim_weight * s + var_weight * v + cov_weight * c``

  (Bardes, Ponce & LeCun, 2022, "VICReg", eq. 1-6, https://arxiv.org/abs/2105.04906). The forward
  value follows the official code (``VICReg.forward`` in ``main_vicreg.py`` of
  facebookresearch/vicreg): the variance hinge of the two branches is *averaged* (the paper's
  eq. 6 sums ``v(Z) + v(Z')``), the covariance terms are summed, the variance is unbiased
  (``torch.var``) and the covariance divides by ``N - 1``. Computed in float32.

  With ``axis_name`` each device passes its shard; the MSE, the per-dimension means and the
  covariances are built from sums reduced with ``psum``, so statistics are global and the value
  and gradients equal the single-device computation on the global batch. (The official code
  all-gathers the embeddings with a gradient-summing ``FullGatherLayer`` and takes the MSE on the
  local shard; with equal shards and DDP's gradient averaging that is the same loss.) The
  reduction moves two ``[D, D]`` matrices instead of gathering ``[N, D]``, and each device
  multiplies only its own rows.

  Args:
    z_a: ``[n, d]`` expander outputs of the first view (local shard with ``axis_name``).
    z_b: ``[n, d]`` expander outputs of the second view, row ``i`` pairs with ``z_a[i]``.
    sim_weight: invariance coefficient (paper's lambda, ``--sim-coeff``).
    var_weight: variance coefficient (paper's mu, ``--std-coeff``).
    cov_weight: covariance coefficient (paper's nu, ``--cov-coeff``).
    eps: added to the variance under the square root (``> 0``).
    axis_name: data-parallel axis to reduce over (inside ``shard_map``/``pmap``), or None.

  Returns:
    Scalar float32 loss.

  Raises:
    TypeError: if an input is not floating point.
    ValueError: if the inputs are not 2-D of equal shape, the global batch has < 2 rows, or a
      concrete ``eps`` is not > 0 or a weight is negative (all must be finite).

  Example:
    >>> import jax.numpy as jnp
    >>> z = jnp.array([[2.0, 0.0], [-2.0, 0.0], [0.0, 2.0], [0.0, -2.0]])
    >>> round(float(vicreg(z, z)), 4)  # equal views, std >= 1, Cov diagonal: ~0
    0.0
    >>> round(float(vicreg(z, z + 1.0)), 4)  # a shift only costs invariance: 25 * 1
    25.0
  """
  z_a, z_b = as_views("vicreg", vicreg.min_examples, axis_name, z_a=z_a, z_b=z_b)
  check_scalars("vicreg", eps=eps)
  check_scalars("vicreg", allow_zero=True, sim_weight=sim_weight, var_weight=var_weight,
                cov_weight=cov_weight)
  z_a, z_b = z_a.astype(jnp.float32), z_b.astype(jnp.float32)
  n_global = global_count(z_a.shape[0], axis_name)
  d = z_a.shape[1]

  invariance = jnp.sum(global_mean(jnp.square(z_a - z_b), axis_name)) / d
  variance = 0.0
  covariance = 0.0
  for z in (z_a, z_b):
    centered = z - global_mean(z, axis_name)
    cov = global_sum(centered.T @ centered, axis_name) / (n_global - 1)
    std = jnp.sqrt(jnp.diagonal(cov) + eps)
    variance += jnp.mean(jax.nn.relu(1.0 - std)) / 2
    covariance += jnp.sum(jnp.square(cov) * off_diagonal_mask(d)) / d
  return sim_weight * invariance + var_weight * variance + cov_weight * covariance
