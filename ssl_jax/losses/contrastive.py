"""Contrastive losses: positives against negatives drawn from the (global) batch."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ssl_jax.losses._utils import (AxisName, check_embeddings, check_positive, gather, global_sum,
                                   l2_normalize)

# Logit given to an anchor's similarity with itself: finite (so no inf - inf in gradients) and far
# below any cosine / temperature, so exp() of it is exactly 0 in float32.
_MASKED = -1e9


def ntxent(z_a: jax.Array, z_b: jax.Array, *, temperature: float,
           axis_name: AxisName = None) -> jax.Array:
  """NT-Xent, the normalized temperature-scaled cross-entropy loss of SimCLR.

  For a global batch of N pairs, each of the 2N embeddings is an anchor; its positive is the other
  view of the same example and its negatives are the other 2N - 2 embeddings. With cosine
  similarity ``s`` and temperature ``t``, anchor ``i`` with positive ``j`` contributes
  ``-log(exp(s_ij / t) / sum_{k != i} exp(s_ik / t))``; the loss is the mean over all 2N anchors
  (Chen et al., 2020, "A Simple Framework for Contrastive Learning of Visual Representations",
  eq. 1, https://arxiv.org/abs/2002.05709; as ``add_contrastive_loss`` in google-research/simclr,
  whose two cross-entropies over ``[ab, aa]`` and ``[ba, bb]`` are averaged over N each and summed:
  that is twice this value, ``loss = 2 * ntxent``).

  Inputs are L2-normalized inside (float32). With ``axis_name`` each device passes its local
  shard; the embeddings are all-gathered so negatives span the global batch, and the returned
  value is the loss of the whole global batch, identical on every device. Gradients are exact:
  each device differentiates its own anchors' terms and the gather routes the negatives'
  cotangents back to the devices that own them.

  Args:
    z_a: ``[n, d]`` embeddings of the first view (local shard when ``axis_name`` is set).
    z_b: ``[n, d]`` embeddings of the second view, row ``i`` pairs with ``z_a[i]``.
    temperature: softmax temperature ``t > 0`` (SimCLR: 0.1 for large batches, 0.5 on CIFAR-10).
    axis_name: data-parallel axis to gather over (inside ``shard_map``/``pmap``), or None.

  Returns:
    Scalar float32 loss.

  Example:
    >>> import jax.numpy as jnp
    >>> z_a = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    >>> z_b = jnp.array([[2.0, 0.1], [0.1, 2.0]])
    >>> round(float(ntxent(z_a, z_b, temperature=0.5)), 4)
    0.2627
  """
  check_embeddings("ntxent", z_a, z_b)
  check_positive("ntxent", temperature=temperature)
  z_a, z_b = l2_normalize(z_a), l2_normalize(z_b)
  n = z_a.shape[0]
  a_all, offset = gather(z_a, axis_name)
  b_all, _ = gather(z_b, axis_name)
  big_n = a_all.shape[0]

  anchors = jnp.concatenate([z_a, z_b], axis=0)  # [2n, d]
  candidates = jnp.concatenate([a_all, b_all], axis=0)  # [2N, d]
  logits = anchors @ candidates.T / temperature  # [2n, 2N]

  rows = jnp.arange(2 * n)
  local = jnp.where(rows < n, rows, rows - n) + offset  # global example index of each anchor
  self_col = jnp.where(rows < n, local, local + big_n)
  pos_col = jnp.where(rows < n, local + big_n, local)
  cols = jnp.arange(2 * big_n)
  logits = jnp.where(cols[None, :] == self_col[:, None], _MASKED, logits)
  positive = jnp.take_along_axis(logits, pos_col[:, None], axis=1)[:, 0]
  loss_sum = jnp.sum(jax.nn.logsumexp(logits, axis=1) - positive)
  return global_sum(loss_sum, axis_name) / (2 * big_n)
