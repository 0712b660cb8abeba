"""Weighted cosine k-nearest-neighbour classifier on frozen features (DINO's kNN protocol).

For each test example, the ``k`` labeled examples with the highest cosine similarity vote for their
class with weight ``exp(sim / T)``; the class with the largest total wins (ties: lowest class id).
Features are L2-normalized inside. ``k`` is clipped to the number of labeled examples, so with
fewer labeled examples than ``k`` (e.g. 1 label per class) every labeled example votes.

The default temperature ``T = 0.07`` and ``k = 20`` are DINO's (Caron et al., 2021, Sec. 4 and
``eval_knn.py``), themselves from Wu et al. (2018). Weights are computed as
``exp((sim - max_sim) / T)``: a per-test-example constant factor that leaves the vote unchanged
and cannot overflow float32 for small ``T``.

Test examples are processed on device in fixed-size batches (:func:`jax.lax.map` over a padded
``[num_batches, batch_size, D]`` array inside one jit), so the similarity matrix never exceeds
``[batch_size, N]``. A boolean ``train_mask`` selects a labeled subset without changing shapes,
which lets several label draws of one budget share one compile under :func:`jax.vmap`.

References:
  Wu et al., "Unsupervised Feature Learning via Non-Parametric Instance Discrimination", CVPR 2018.
  Caron et al., "Emerging Properties in Self-Supervised Vision Transformers", ICCV 2021.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

#: DINO's kNN defaults.
DEFAULT_K = 20
DEFAULT_TEMPERATURE = 0.07


def _normalize(x: jax.Array) -> jax.Array:
  x = jnp.asarray(x, jnp.float32)
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@functools.partial(jax.jit, static_argnames=("num_classes", "k", "batch_size"))
def knn_predict(train_feats: jax.Array, train_labels: jax.Array, test_feats: jax.Array, *,
                num_classes: int, k: int = DEFAULT_K, temperature: float = DEFAULT_TEMPERATURE,
                train_mask: jax.Array | None = None, batch_size: int = 256) -> jax.Array:
  """Weighted cosine kNN predictions (DINO), batched over test examples.

  Jitted and vmappable (``train_mask`` and ``temperature`` are traced).

  Args:
    train_feats: ``[N, D]`` labeled features.
    train_labels: ``[N]`` int labels in ``[0, num_classes)``.
    test_feats: ``[M, D]`` features to classify.
    num_classes: ``C``.
    k: neighbours; clipped to ``N`` (and, with a mask, only selected examples vote, so it is
      effectively clipped to the number selected).
    temperature: ``T`` in the vote weight ``exp(sim / T)``.
    train_mask: optional ``[N]`` bool; ``False`` rows are never neighbours.
    batch_size: test examples per on-device batch.

  Returns:
    ``[M]`` int32 predicted classes.
  """
  train = _normalize(train_feats)
  test = _normalize(test_feats)
  labels = jnp.asarray(train_labels, jnp.int32)
  n, m = train.shape[0], test.shape[0]
  kk = min(k, n)
  bs = max(1, min(batch_size, m))
  num_batches = -(-m // bs)
  test = jnp.pad(test, ((0, num_batches * bs - m), (0, 0))).reshape(num_batches, bs, -1)
  valid = None if train_mask is None else jnp.asarray(train_mask, bool)

  def predict_batch(q: jax.Array) -> jax.Array:
    sim = q @ train.T                                              # [bs, N]
    if valid is not None:
      sim = jnp.where(valid[None, :], sim, -jnp.inf)
    top_sim, top_idx = jax.lax.top_k(sim, kk)                     # [bs, kk]
    weights = jnp.exp((top_sim - top_sim[:, :1]) / temperature)  # exp(-inf) = 0 for masked
    votes = jnp.zeros((bs, num_classes), jnp.float32).at[
        jnp.arange(bs)[:, None], labels[top_idx]].add(weights)
    return jnp.argmax(votes, axis=-1).astype(jnp.int32)

  return jax.lax.map(predict_batch, test).reshape(-1)[:m]
