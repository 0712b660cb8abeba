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

Scaling: with ``train_chunk_size`` the labeled set is also tiled (a :func:`jax.lax.scan` over
chunks keeps a running top-``k`` of similarities and labels per test example), so the similarity
matrix is ``[batch_size, train_chunk_size]``. When the labeled features themselves do not fit in
device memory (ImageNet-1k: 1.28M x 2048 float32 is 10.5 GB), :func:`knn_predict_streaming` keeps
them on the host and streams them to the device chunk by chunk, merging the same running top-``k``
(memory on device: the test features, ``[M, k]`` running values and one chunk). All three give the
same predictions (ties between equal similarities go to the earlier labeled example in each).

References:
  Wu et al., "Unsupervised Feature Learning via Non-Parametric Instance Discrimination", CVPR 2018.
  Caron et al., "Emerging Properties in Self-Supervised Vision Transformers", ICCV 2021.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax.losses.utils import l2_normalize

#: DINO's kNN defaults.
DEFAULT_K = 20
DEFAULT_TEMPERATURE = 0.07


def _merge_topk(vals, labs, new_vals, new_labs, kk: int):
  """Running top-``kk`` of ``[..., kk]`` and ``[..., c]`` candidates (earlier ones win ties)."""
  top, idx = jax.lax.top_k(jnp.concatenate([vals, new_vals], -1), kk)
  return top, jnp.take_along_axis(jnp.concatenate([labs, new_labs], -1), idx, -1)


def _chunk_topk(q, train, labels, valid, kk: int):
  """Top-``min(kk, c)`` similarities of ``q`` ``[b, D]`` against one chunk ``[c, D]``, padded to
  ``kk`` with ``-inf``; returns ``(values [b, kk], labels [b, kk])``."""
  sim = q @ train.T                                                   # [b, c]
  if valid is not None:
    sim = jnp.where(valid[None, :], sim, -jnp.inf)
  top, idx = jax.lax.top_k(sim, min(kk, train.shape[0]))
  labs = labels[idx]
  pad = kk - top.shape[-1]
  if pad:
    top = jnp.pad(top, ((0, 0), (0, pad)), constant_values=-jnp.inf)
    labs = jnp.pad(labs, ((0, 0), (0, pad)))
  return top, labs


def _vote(top_sim, top_labels, num_classes: int, temperature):
  """Weighted vote ``exp(sim / T)`` of the neighbours -> ``[b]`` int32 classes."""
  b = top_sim.shape[0]
  weights = jnp.exp((top_sim - top_sim[:, :1]) / temperature)  # exp(-inf) = 0 for masked
  votes = jnp.zeros((b, num_classes), jnp.float32).at[
      jnp.arange(b)[:, None], top_labels].add(weights)
  return jnp.argmax(votes, axis=-1).astype(jnp.int32)


def _pad_rows(x: jax.Array, rows: int, value=0) -> jax.Array:
  return jnp.pad(x, ((0, rows - x.shape[0]),) + ((0, 0),) * (x.ndim - 1), constant_values=value)


@functools.partial(jax.jit, static_argnames=("num_classes", "k", "batch_size",
                                             "train_chunk_size"))
def knn_predict(train_feats: jax.Array, train_labels: jax.Array, test_feats: jax.Array, *,
                num_classes: int, k: int = DEFAULT_K, temperature: float = DEFAULT_TEMPERATURE,
                train_mask: jax.Array | None = None, batch_size: int = 256,
                train_chunk_size: int | None = None) -> jax.Array:
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
    train_chunk_size: if set, labeled examples per tile (a scan with a running top-``k``).

  Returns:
    ``[M]`` int32 predicted classes.
  """
  train = l2_normalize(train_feats)
  test = l2_normalize(test_feats)
  labels = jnp.asarray(train_labels, jnp.int32)
  n, m = train.shape[0], test.shape[0]
  kk = min(k, n)
  bs = max(1, min(batch_size, m))
  num_batches = -(-m // bs)
  test = jnp.pad(test, ((0, num_batches * bs - m), (0, 0))).reshape(num_batches, bs, -1)
  valid = None if train_mask is None else jnp.asarray(train_mask, bool)

  if train_chunk_size is None or train_chunk_size >= n:
    def predict_batch(q: jax.Array) -> jax.Array:
      return _vote(*_chunk_topk(q, train, labels, valid, kk), num_classes, temperature)
  else:
    c = train_chunk_size
    chunks = -(-n // c)
    valid_all = jnp.ones((n,), bool) if valid is None else valid
    tiles = (_pad_rows(train, chunks * c).reshape(chunks, c, -1),
             _pad_rows(labels, chunks * c).reshape(chunks, c),
             _pad_rows(valid_all, chunks * c, False).reshape(chunks, c))

    def predict_batch(q: jax.Array) -> jax.Array:
      def body(carry, tile):
        return _merge_topk(*carry, *_chunk_topk(q, *tile, kk), kk), None
      init = (jnp.full((q.shape[0], kk), -jnp.inf), jnp.zeros((q.shape[0], kk), jnp.int32))
      (top, labs), _ = jax.lax.scan(body, init, tiles)
      return _vote(top, labs, num_classes, temperature)

  return jax.lax.map(predict_batch, test).reshape(-1)[:m]


def knn_predict_streaming(train_feats, train_labels, test_feats, *, num_classes: int,
                          k: int = DEFAULT_K, temperature: float = DEFAULT_TEMPERATURE,
                          chunk_size: int = 65536, batch_size: int = 256) -> np.ndarray:
  """:func:`knn_predict` for labeled features that stay on the host (e.g. a memory-mapped
  ``[N, D]`` array larger than device memory): chunks of ``chunk_size`` rows are normalized on
  the host, sent to the device one at a time and merged into a running top-``k`` of every test
  example.

  Args:
    train_feats: ``[N, D]`` host array (NumPy, memmap).
    train_labels: ``[N]`` int labels.
    test_feats: ``[M, D]`` features to classify (put on device).
    num_classes, k, temperature, batch_size: as :func:`knn_predict`.
    chunk_size: labeled rows per transfer (the last chunk is padded, so one compile serves all).

  Returns:
    ``[M]`` int32 NumPy predictions, equal to :func:`knn_predict`'s.
  """
  n = len(train_feats)
  if n == 0:
    raise ValueError("knn_predict_streaming: no labeled examples.")
  kk = min(k, n)
  c = min(chunk_size, n)
  test = l2_normalize(test_feats)
  m = test.shape[0]
  bs = max(1, min(batch_size, m))
  num_batches = -(-m // bs)
  test = jnp.pad(test, ((0, num_batches * bs - m), (0, 0))).reshape(num_batches, bs, -1)

  @jax.jit
  def step(top, labs, chunk, chunk_labels, valid):
    def one(args):
      q, t, l = args
      return _merge_topk(t, l, *_chunk_topk(q, chunk, chunk_labels, valid, kk), kk)
    return jax.lax.map(one, (test, top, labs))

  top = jnp.full((num_batches, bs, kk), -jnp.inf)
  labs = jnp.zeros((num_batches, bs, kk), jnp.int32)
  labels = np.asarray(train_labels, np.int32)
  for start in range(0, n, c):
    x = np.asarray(train_feats[start:start + c], np.float32)
    rows = len(x)
    x = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
    pad = c - rows
    chunk = np.pad(x, ((0, pad), (0, 0)))
    chunk_labels = np.pad(labels[start:start + c], (0, pad))
    valid = np.arange(c) < rows
    top, labs = step(top, labs, chunk, chunk_labels, valid)
  vote = jax.jit(jax.vmap(lambda t, l: _vote(t, l, num_classes, temperature)))
  return np.asarray(vote(top, labs)).reshape(-1)[:m]
