"""BERT masking: the 15% / 80-10-10 statistics over many draws, specials and padding never chosen,
whole words kept together, keys per example."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax.masking import bert_mask

SPECIAL = (0, 1, 2, 3, 4)  # [PAD] [UNK] [CLS] [SEP] [MASK]
MASK_ID, V = 4, 50


def _batch(n=2000, t=40, seed=0):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(5, V, size=(n, t))
  lengths = rng.integers(10, t + 1, size=n)
  tokens[:, 0] = 2
  tokens[np.arange(n), lengths - 1] = 3
  tokens[np.arange(t)[None] >= lengths[:, None]] = 0
  # a few [UNK] inside: special, never chosen
  tokens[:, 3] = np.where(rng.random(n) < 0.3, 1, tokens[:, 3])
  return jnp.asarray(tokens, jnp.int32)


@pytest.fixture(scope="module")
def masked():
  tokens = _batch()
  keys = jax.random.split(jax.random.key(0), tokens.shape[0])
  f = jax.jit(lambda k, t: bert_mask(k, t, special_ids=SPECIAL, mask_id=MASK_ID, vocab_size=V))
  return (np.asarray(tokens),) + tuple(np.asarray(x) for x in f(keys, tokens))


def test_fifteen_percent_of_non_special_tokens_per_sequence(masked):
  tokens, inputs, labels, mask = masked
  np.testing.assert_array_equal(labels, tokens)
  candidates = ~np.isin(tokens, SPECIAL)
  n = candidates.sum(1)
  np.testing.assert_array_equal(mask.sum(1), np.maximum(np.round(0.15 * n), 1))
  assert not np.any(mask & ~candidates)  # specials and padding never chosen
  assert abs(mask.sum() / candidates.sum() - 0.15) < 0.01


def test_eighty_ten_ten(masked):
  tokens, inputs, _, mask = masked
  chosen_in, chosen_orig = inputs[mask], tokens[mask]
  to_mask = np.mean(chosen_in == MASK_ID)
  unchanged = np.mean(chosen_in == chosen_orig)
  randomized = 1 - to_mask - unchanged
  # A random draw equals the original 1/45 of the time: counted as unchanged.
  total = mask.sum()
  for value, p in ((to_mask, 0.8), (unchanged, 0.1 + 0.1 / 45), (randomized, 0.1 * 44 / 45)):
    assert abs(value - p) < 4 * np.sqrt(p * (1 - p) / total), (value, p)
  assert not np.any(np.isin(chosen_in[chosen_in != MASK_ID], SPECIAL))  # random ids not special
  np.testing.assert_array_equal(inputs[~mask], tokens[~mask])  # nothing else changes


def test_whole_word_masking_takes_every_piece_of_a_word():
  tokens = _batch(500, 30, seed=1)
  rng = np.random.default_rng(2)
  starts = jnp.asarray(rng.random(tokens.shape) < 0.4)  # words of ~2.5 tokens
  keys = jax.random.split(jax.random.key(1), tokens.shape[0])
  _, _, mask = bert_mask(keys, tokens, special_ids=SPECIAL, mask_id=MASK_ID, vocab_size=V,
                         word_starts=starts)
  mask, tokens, starts = np.asarray(mask), np.asarray(tokens), np.asarray(starts)
  candidates = ~np.isin(tokens, SPECIAL)
  assert not np.any(mask & ~candidates)
  for row in range(len(tokens)):
    word, words = -1, []
    for t in range(tokens.shape[1]):
      if not candidates[row, t]:
        word = -1
        continue
      if starts[row, t] or word == -1:
        words.append([])
      word = len(words) - 1
      words[word].append(bool(mask[row, t]))
    assert all(len(set(w)) == 1 for w in words)  # all or none of each word
    k = max(round(0.15 * candidates[row].sum()), 1)
    # whole words while fewer than k tokens: at least k, and less than k + the longest word
    assert k <= mask[row].sum() < k + max(len(w) for w in words)


def test_mask_of_an_example_depends_only_on_its_key():
  tokens = _batch(16, 20, seed=3)
  keys = jax.random.split(jax.random.key(4), 16)
  out = bert_mask(keys, tokens, special_ids=SPECIAL, mask_id=MASK_ID, vocab_size=V)
  perm = np.random.default_rng(5).permutation(16)
  out_perm = bert_mask(keys[perm], tokens[perm], special_ids=SPECIAL, mask_id=MASK_ID, vocab_size=V)
  for a, b in zip(out, out_perm):
    np.testing.assert_array_equal(np.asarray(a)[perm], b)


def test_bad_arguments_raise():
  tokens = _batch(4, 10)
  keys = jax.random.split(jax.random.key(0), 4)
  with pytest.raises(ValueError, match="tokens must be"):
    bert_mask(keys, tokens[0], special_ids=SPECIAL, mask_id=MASK_ID, vocab_size=V)
  with pytest.raises(ValueError, match="mask_id 7 must be one of"):
    bert_mask(keys, tokens, special_ids=SPECIAL, mask_id=7, vocab_size=V)
  with pytest.raises(ValueError, match="rate"):
    bert_mask(keys, tokens, special_ids=SPECIAL, mask_id=MASK_ID, vocab_size=V, rate=1.5)
