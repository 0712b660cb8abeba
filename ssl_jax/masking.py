"""Input masking on device, jitted and keyed per example: BERT's masked-LM corruption.

:func:`bert_mask` chooses positions and corrupts them the way BERT's ``create_pretraining_data.py``
does (Devlin et al., 2019, section 3.1 and appendix A.1, https://arxiv.org/abs/1810.04805):

* ``round(rate * n)`` positions per sequence (at least 1 when there is any candidate), where ``n``
  counts the candidates: real tokens that are not special (``[CLS]``, ``[SEP]``, ``[PAD]``, ...).
  Special and padding tokens are never chosen. An exact count per sequence (BERT) rather than an
  independent coin per token (as some PyTorch collators do).
* Each chosen position becomes ``[MASK]`` with probability 0.8, a random non-special token with
  probability 0.1, and stays unchanged with probability 0.1 (decided per position).
* Whole-word masking (BERT's later release; RoBERTa's ablation): with ``word_starts`` the draw is
  over words (a word = a start token and the continuation tokens after it), taking whole words in
  random order while fewer than ``round(rate * n)`` tokens are chosen, so every piece of a chosen
  word is predicted.

Keys: the caller passes one key per example (``fold_in(step_key, index)`` for RoBERTa's dynamic
masking, a key independent of the step for BERT's static masking), so the mask of an example does
not depend on the number of devices or on its place in the batch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _num_to_predict(candidates: jax.Array, rate: float) -> jax.Array:
  n = jnp.sum(candidates.astype(jnp.int32))
  k = jnp.round(rate * n).astype(jnp.int32)
  return jnp.where(n > 0, jnp.maximum(k, 1), 0)


def _choose_tokens(key: jax.Array, candidates: jax.Array, rate: float) -> jax.Array:
  """Exactly ``round(rate * n)`` candidates of one sequence, uniformly at random."""
  scores = jnp.where(candidates, jax.random.uniform(key, candidates.shape), 2.0)
  ranks = jnp.argsort(jnp.argsort(scores))
  return candidates & (ranks < _num_to_predict(candidates, rate))


def _choose_words(key: jax.Array, candidates: jax.Array, word_starts: jax.Array,
                  rate: float) -> jax.Array:
  """Whole words of one sequence in random order while fewer than ``round(rate * n)`` tokens."""
  length = candidates.shape[0]
  # Word id of each token: a new word at each start, and after every non-candidate (a special
  # token ends the word before it).
  starts = word_starts | ~candidates | jnp.concatenate([jnp.ones((1,), bool), ~candidates[:-1]])
  word = jnp.cumsum(starts.astype(jnp.int32)) - 1  # [T], in [0, T)
  word_score = jax.random.uniform(key, (length,))[word]
  word_score = jnp.where(candidates, word_score, 2.0)
  # Sort tokens by (word score, position): each word's tokens are contiguous in this order.
  order = jnp.lexsort((jnp.arange(length), word_score))
  before = jnp.cumsum(candidates[order].astype(jnp.int32)) - candidates[order]  # chosen earlier
  first_before = jax.ops.segment_min(before, word[order], num_segments=length)  # per word
  chosen_sorted = candidates[order] & (first_before[word[order]] < _num_to_predict(candidates,
                                                                                   rate))
  return jnp.zeros((length,), bool).at[order].set(chosen_sorted)


def bert_mask(keys: jax.Array, tokens: jax.Array, *, special_ids, mask_id: int, vocab_size: int,
              valid: jax.Array | None = None, word_starts: jax.Array | None = None,
              rate: float = 0.15, mask_prob: float = 0.8, random_prob: float = 0.1):
  """BERT's masked-LM corruption of a batch of token sequences.

  Args:
    keys: ``[B]`` PRNG keys, one per example.
    tokens: ``[B, T]`` integer token ids.
    special_ids: the special token ids (never chosen, never drawn as random replacements).
    mask_id: the ``[MASK]`` id.
    vocab_size: the vocabulary size ``V`` (random replacements are drawn uniformly from the
      ``V - len(special_ids)`` non-special ids).
    valid: optional ``[B, T]`` bool, False on padding (padding is also excluded by ``special_ids``
      when it holds the pad id).
    word_starts: optional ``[B, T]`` bool, True where a token starts a word: whole-word masking.
    rate: fraction of candidate tokens chosen per sequence (BERT: 0.15).
    mask_prob, random_prob: of the chosen, the fraction replaced by ``[MASK]`` and by a random
      token (BERT: 0.8 and 0.1; the rest stay unchanged).

  Returns:
    ``(inputs, labels, mask)``: ``inputs`` the corrupted ``[B, T]`` tokens, ``labels`` the
    original tokens, ``mask`` ``[B, T]`` bool of the chosen positions (what
    :func:`ssl_jax.losses.masked_lm` scores).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> tokens = jnp.array([[2, 10, 11, 12, 13, 14, 15, 3, 0, 0]])  # [CLS] ... [SEP] [PAD] [PAD]
    >>> keys = jax.random.split(jax.random.key(0), 1)
    >>> inputs, labels, mask = bert_mask(keys, tokens, special_ids=(0, 1, 2, 3, 4), mask_id=4,
    ...                                  vocab_size=20)
    >>> int(mask.sum())  # round(0.15 * 6) = 1 of the 6 non-special tokens
    1
  """
  if jnp.ndim(tokens) != 2:
    raise ValueError(f"bert_mask: tokens must be [batch, length], got shape {jnp.shape(tokens)}.")
  if not 0 < rate < 1 or mask_prob < 0 or random_prob < 0 or mask_prob + random_prob > 1:
    raise ValueError(f"bert_mask: need 0 < rate < 1 and mask_prob + random_prob <= 1, got "
                     f"rate={rate}, mask_prob={mask_prob}, random_prob={random_prob}.")
  special = np.unique(np.asarray(special_ids, np.int64))
  if mask_id not in special:
    raise ValueError(f"bert_mask: mask_id {mask_id} must be one of special_ids {special.tolist()}.")
  regular = np.setdiff1d(np.arange(vocab_size), special).astype(np.int32)
  if regular.size == 0:
    raise ValueError("bert_mask: the vocabulary has no non-special token to draw.")
  candidates = ~jnp.isin(tokens, jnp.asarray(special, jnp.int32))
  if valid is not None:
    candidates = candidates & valid.astype(bool)

  def one(key, toks, cand, starts):
    choose_key, how_key, random_key = jax.random.split(key, 3)
    if starts is None:
      chosen = _choose_tokens(choose_key, cand, rate)
    else:
      chosen = _choose_words(choose_key, cand, starts.astype(bool), rate)
    u = jax.random.uniform(how_key, toks.shape)
    replacement = jnp.asarray(regular)[jax.random.randint(random_key, toks.shape, 0, regular.size)]
    corrupted = jnp.where(u < mask_prob, mask_id,
                          jnp.where(u < mask_prob + random_prob, replacement, toks))
    return jnp.where(chosen, corrupted, toks).astype(toks.dtype), chosen

  if word_starts is None:
    inputs, mask = jax.vmap(lambda k, t, c: one(k, t, c, None))(keys, tokens, candidates)
  else:
    inputs, mask = jax.vmap(one)(keys, tokens, candidates, word_starts)
  return inputs, tokens, mask
