"""Contrastive losses: positives against negatives drawn from the (global) batch."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ssl_jax.losses.utils import (AxisName, as_float_arrays, as_views, check_matrices,
                                  check_min_examples, check_same_dim, check_scalars, gather,
                                  global_count, global_sum, l2_normalize, needs_examples)

# Logit given to an anchor's similarity with itself: finite (so no inf - inf in gradients) and far
# below any cosine / temperature, so exp() of it is exactly 0 in float32.
_MASKED = -1e9


@needs_examples(2)  # an anchor needs another example as a negative
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

  Raises:
    TypeError: if an input is not floating point.
    ValueError: if the inputs are not 2-D of equal shape, the global batch has fewer than 2
      examples, or a concrete ``temperature`` is not > 0.

  Example:
    >>> import jax.numpy as jnp
    >>> z_a = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    >>> z_b = jnp.array([[2.0, 0.1], [0.1, 2.0]])
    >>> round(float(ntxent(z_a, z_b, temperature=0.5)), 4)
    0.2627
  """
  z_a, z_b = as_views("ntxent", ntxent.min_examples, axis_name, z_a=z_a, z_b=z_b)
  check_scalars("ntxent", temperature=temperature)
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


def _batch_cross_entropy(anchors: jax.Array, candidates: jax.Array, temperature: float,
                         axis_name: AxisName) -> jax.Array:
  """Mean over the global batch of ``-log softmax(anchors @ gather(candidates)^T / t)[i, i]``.

  Anchor ``i`` (local row, global row ``offset + i``) has the candidate of the same global row as
  its positive and every other gathered candidate as a negative. Inputs are normalized already.
  """
  cands, offset = gather(candidates, axis_name)
  logits = anchors @ cands.T / temperature  # [n, N]
  labels = jnp.arange(anchors.shape[0]) + offset
  positive = jnp.take_along_axis(logits, labels[:, None], axis=1)[:, 0]
  loss_sum = jnp.sum(jax.nn.logsumexp(logits, axis=1) - positive)
  return global_sum(loss_sum, axis_name) / cands.shape[0]


@needs_examples(2)  # without a queue the negatives are the batch's other keys (1 with a queue)
def infonce(query: jax.Array, key: jax.Array, negatives: jax.Array | None = None, *,
            temperature: float, axis_name: AxisName = None) -> jax.Array:
  """InfoNCE of MoCo: each query must pick its own key out of the negatives.

  With cosine similarity ``s`` and temperature ``t``, query ``q_i`` with positive key ``k_i``
  contributes ``-log(exp(s(q_i, k_i) / t) / (exp(s(q_i, k_i) / t) + sum_neg exp(s(q_i, k-) / t)))``
  (cross-entropy with the positive as the target class); the loss is the mean over the global
  batch of N queries. Queries, keys and negatives are L2-normalized inside (float32).

  - ``negatives`` given (a queue ``[K, d]``): MoCo v1/v2 (He et al., 2020, "Momentum Contrast
    for Unsupervised Visual Representation Learning", eq. 1, https://arxiv.org/abs/1911.05722;
    Chen et al., 2020, https://arxiv.org/abs/2003.04297). Logits ``[q . k+, q . queue^T] / t``,
    label 0, as ``MoCo.forward`` in ``moco/builder.py`` of facebookresearch/moco (which stores the
    queue transposed, ``[d, K]``, already normalized: normalizing it again changes nothing). The
    queue must be identical on every device.
  - ``negatives`` None: MoCo v3 (Chen, Xie & He, 2021, "An Empirical Study of Training
    Self-Supervised Vision Transformers", Algorithm 1, https://arxiv.org/abs/2104.02057). The keys
    of all the other examples of the global batch are the negatives: logits
    ``q . all_gather(k)^T / t``, label = the query's global index, as ``MoCo.contrastive_loss`` in
    ``moco/builder.py`` of facebookresearch/moco-v3. The official code multiplies this
    cross-entropy by ``2 * t``; that factor belongs to the MoCo v3 *method* (which also sums the
    two symmetric terms), not to this loss.

  The forward value follows the official code in both modes (it matches the papers' formulas).
  Gradients flow to ``query``, ``key`` and ``negatives`` alike: MoCo's keys and queue come from the
  momentum encoder and carry no gradient there, so the method passes ``stop_gradient`` of them
  or never differentiates with respect to them (the official ``concat_all_gather`` has no
  gradient; here the gather is differentiable, which also lets this loss serve NNCLR with a
  predictor, see :func:`nnclr`).

  With ``axis_name`` each device passes its shard of ``query`` and ``key``; the returned value is
  the loss of the whole global batch, identical on every device, with exact gradients (without
  ``negatives`` the keys are all-gathered and the gather routes their cotangents back).

  Args:
    query: ``[n, d]`` queries (local shard when ``axis_name`` is set).
    key: ``[n, d]`` keys, row ``i`` is the positive of ``query[i]``.
    negatives: optional ``[K, d]`` negative keys (MoCo v2's queue), the same on every device.
    temperature: softmax temperature ``t > 0`` (MoCo v2: 0.2; MoCo v3: 0.2 for ViT, 1.0 ResNet).
    axis_name: data-parallel axis to reduce/gather over (inside ``shard_map``/``pmap``), or None.

  Returns:
    Scalar float32 loss.

  Raises:
    TypeError: if an input is not floating point.
    ValueError: if the inputs are not 2-D, ``query`` and ``key`` differ in shape or
      ``negatives`` in feature dimension, the global batch has fewer than 2 examples (1 with
      ``negatives``, which needs at least 1 row), or a concrete ``temperature`` is not > 0.

  Example:
    >>> import jax.numpy as jnp
    >>> q = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    >>> k = jnp.array([[2.0, 0.0], [0.0, 3.0]])
    >>> round(float(infonce(q, k, temperature=1.0)), 4)  # log(1 + e^-1)
    0.3133
    >>> queue = jnp.array([[-1.0, 0.0], [0.0, -1.0]])
    >>> round(float(infonce(q, k, queue, temperature=1.0)), 4)  # -log(e / (e + 1 + e^-1))
    0.4076
  """
  minimum = infonce.min_examples if negatives is None else 1
  query, key = as_views("infonce", minimum, axis_name, query=query, key=key)
  check_scalars("infonce", temperature=temperature)
  query, key = l2_normalize(query), l2_normalize(key)
  if negatives is None:
    return _batch_cross_entropy(query, key, temperature, axis_name)

  (negatives,) = as_float_arrays("infonce", negatives=negatives)
  check_matrices("infonce", negatives=negatives)
  check_same_dim("infonce", query=query, negatives=negatives)
  check_min_examples("infonce", 1, negatives, arg="negatives", unit="row", scope="in negatives")
  negatives = l2_normalize(negatives)
  positive = jnp.sum(query * key, axis=1, keepdims=True)  # [n, 1]
  logits = jnp.concatenate([positive, query @ negatives.T], axis=1) / temperature  # [n, 1 + K]
  loss_sum = jnp.sum(jax.nn.logsumexp(logits, axis=1) - logits[:, 0])
  return global_sum(loss_sum, axis_name) / global_count(query.shape[0], axis_name)


@needs_examples(1)
def nearest_neighbour(z: jax.Array, support: jax.Array) -> tuple[jax.Array, jax.Array]:
  """NNCLR's ``NN(z, Q)``: the row of the support set closest to each embedding, no gradient.

  ``NN(z, Q) = argmin_{q in Q} ||z / ||z|| - q / ||q||||_2`` = the support row of highest cosine
  similarity (Dwibedi et al., 2021, "With a Little Help from My Friends: Nearest-Neighbor
  Contrastive Learning of Visual Representations", eq. 2, https://arxiv.org/abs/2104.14548; ties
  go to the lowest index). The lookup is wrapped in ``stop_gradient`` as in the paper: no gradient
  reaches ``support`` (nor ``z``, which only selects rows).

  Args:
    z: ``[n, d]`` embeddings.
    support: ``[Q, d]`` support set (NNCLR's queue of past embeddings).

  Returns:
    ``(neighbours, indices)``: ``[n, d]`` float32 rows of ``support`` as given (not normalized)
    and their ``[n]`` int32 indices into ``support`` (for NN-accuracy metrics).

  Raises:
    TypeError: if an input is not floating point.
    ValueError: if the inputs are not 2-D of the same feature dimension, or either is empty.

  Example:
    >>> import jax.numpy as jnp
    >>> support = jnp.array([[1.0, 0.0], [0.0, 5.0], [-1.0, 0.0]])
    >>> nn, idx = nearest_neighbour(jnp.array([[0.1, 1.0], [-3.0, 0.2]]), support)
    >>> idx.tolist(), nn.tolist()
    ([1, 2], [[0.0, 5.0], [-1.0, 0.0]])
  """
  z, support = _check_support("nearest_neighbour", z, support, arg="z")
  check_min_examples("nearest_neighbour", nearest_neighbour.min_examples, z, arg="z")
  support = jax.lax.stop_gradient(support.astype(jnp.float32))
  sims = l2_normalize(jax.lax.stop_gradient(z)) @ l2_normalize(support).T  # [n, Q]
  indices = jnp.argmax(sims, axis=1).astype(jnp.int32)
  return support[indices], indices


def _check_support(name: str, z, support, *, arg: str) -> tuple[jax.Array, jax.Array]:
  """``(z, support)`` as float arrays, ``support`` ``[Q, d]`` checked: floating point, 2-D, at
  least one row, the feature dimension of the embeddings ``z`` (named ``arg``)."""
  z, support = as_float_arrays(name, **{arg: z}, support=support)
  check_matrices(name, **{arg: z}, support=support)
  check_same_dim(name, **{arg: z}, support=support)
  check_min_examples(name, 1, support, arg="support", unit="row", scope="in support")
  return z, support


@needs_examples(2)  # an anchor needs another example as a negative
def nnclr(z_a: jax.Array, z_b: jax.Array, support: jax.Array, *, temperature: float,
          axis_name: AxisName = None) -> jax.Array:
  """NNCLR: the nearest neighbour of one view in a support set is the anchor for the other view.

  For a global batch of N pairs, with ``NN`` from :func:`nearest_neighbour` (no gradient),
  L2-normalized embeddings and temperature ``t`` (Dwibedi et al., 2021, eq. 1-2,
  https://arxiv.org/abs/2104.14548):

  ``L_ab = (1 / N) sum_i -log(exp(NN(a_i) . b_i / t) / sum_k exp(NN(a_i) . b_k / t))``

  and the loss is the symmetrized ``0.5 * (L_ab + L_ba)`` (the roles of the views swapped). There
  is no official code release; this follows the paper's eq. 2 for each direction and averages the
  two directions, the symmetrization used by the common reimplementations (solo-learn's
  ``nnclr_loss_func``, lightly's NNCLR example). The paper's implementation details describe a
  symmetric variant that also includes the transposed terms (softmax over the anchors
  ``NN(a_k) . b_i``, as the Keras NNCLR example does); that variant is not what this returns.

  The positives and negatives are the other view's embeddings of the whole global batch: with
  ``axis_name`` they are all-gathered (differentiably) and the result is the global loss,
  identical on every device, with exact gradients. The support set must be identical on every
  device (a replicated queue); no gradient reaches it.

  With a prediction head (the paper's default), neighbours are looked up from the projections and
  the positives are the predictions; compose the pieces instead::

    nn_a, _ = nearest_neighbour(z_a, support)
    loss = 0.5 * (infonce(nn_a, p_b, temperature=t, axis_name=ax)
                  + infonce(nn_b, p_a, temperature=t, axis_name=ax))

  which equals ``nnclr(z_a, z_b, support)`` when ``p = z``.

  Args:
    z_a: ``[n, d]`` embeddings of the first view (local shard with ``axis_name``).
    z_b: ``[n, d]`` embeddings of the second view, row ``i`` pairs with ``z_a[i]``.
    support: ``[Q, d]`` support set, the same on every device.
    temperature: softmax temperature ``t > 0`` (paper: 0.1).
    axis_name: data-parallel axis to gather over (inside ``shard_map``/``pmap``), or None.

  Returns:
    Scalar float32 loss.

  Raises:
    TypeError: if an input is not floating point.
    ValueError: if the inputs are not 2-D, ``z_a`` and ``z_b`` differ in shape or ``support`` in
      feature dimension, the global batch has fewer than 2 examples, ``support`` is empty, or a
      concrete ``temperature`` is not > 0.

  Example:
    >>> import jax.numpy as jnp
    >>> support = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    >>> z_a = jnp.array([[0.9, 0.1], [0.2, 0.8]])
    >>> round(float(nnclr(z_a, z_a, support, temperature=1.0)), 4)
    0.3697
  """
  z_a, z_b = as_views("nnclr", nnclr.min_examples, axis_name, z_a=z_a, z_b=z_b)
  _check_support("nnclr", z_a, support, arg="z_a")
  check_scalars("nnclr", temperature=temperature)
  nn_a, _ = nearest_neighbour(z_a, support)
  nn_b, _ = nearest_neighbour(z_b, support)
  z_a, z_b, nn_a, nn_b = map(l2_normalize, (z_a, z_b, nn_a, nn_b))
  return 0.5 * (_batch_cross_entropy(nn_a, z_b, temperature, axis_name)
                + _batch_cross_entropy(nn_b, z_a, temperature, axis_name))
