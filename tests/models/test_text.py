"""Text Transformers: paper parameter counts, packed-document isolation, causality, cached decoding
equal to uncached, dropout keyed per example, remat, mixed precision."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ssl_jax.models.text import (MLMHead, NSPHead, Transformer, build_text_encoder, count_params,
                                 generate, mean_pool, rotary)


def _params(module):
  return nnx.state(module, nnx.Param)


def test_bert_base_and_gpt2_small_parameter_counts():
  bert = nnx.eval_shape(lambda: build_text_encoder("bert_base", vocab_size=30522,
                                                   rngs=nnx.Rngs(0)))
  assert count_params(_params(bert)) == 109_482_240  # Hugging Face BertModel
  heads = nnx.eval_shape(lambda: (MLMHead(768, 30522, rngs=nnx.Rngs(0)),
                                  NSPHead(768, rngs=nnx.Rngs(0))))
  assert count_params(_params(bert)) + count_params(_params(heads)) == 110_106_428
  gpt = nnx.eval_shape(lambda: build_text_encoder("gpt2_small", vocab_size=50257,
                                                  rngs=nnx.Rngs(0)))
  assert count_params(_params(gpt)) == 124_439_808  # tied output layer


def _tiny(causal, positions="learned", **kw):
  return Transformer(50, 16, 32, 2, 2, 64, causal=causal, norm="pre" if causal else "post",
                     positions=positions, rngs=nnx.Rngs(0), **kw)


@pytest.mark.parametrize("num_positions", [None, 512])
def test_rotary_rotates_pairs_by_position_times_frequency(num_positions):
  rng = np.random.default_rng(6)
  x = rng.normal(size=(2, 5, 3, 8)).astype(np.float32)
  positions = np.array([[0, 1, 2, 300, 511], [7, 7, 0, 64, 128]])
  got = rotary(jnp.asarray(x), jnp.asarray(positions), num_positions=num_positions)
  angle = positions[..., None, None] / 10000.0**(np.arange(4) / 4)  # float64
  x1, x2 = x[..., :4].astype(np.float64), x[..., 4:].astype(np.float64)
  want = np.concatenate([x1 * np.cos(angle) - x2 * np.sin(angle),
                         x2 * np.cos(angle) + x1 * np.sin(angle)], axis=-1)
  # The constant table is computed in float64; the computed angles lose float32 digits at 511.
  np.testing.assert_allclose(got, want, atol=2e-6 if num_positions else 1e-4)
  # Scores depend on the offset only: <R(p) q, R(p') k> = <R(p + s) q, R(p' + s) k>.
  q, k = x[:1, :1], x[:1, 1:2]

  def score(p_q, p_k):
    rq = rotary(jnp.asarray(q), jnp.full((1, 1), p_q), num_positions=num_positions)
    rk = rotary(jnp.asarray(k), jnp.full((1, 1), p_k), num_positions=num_positions)
    return np.sum(np.asarray(rq) * np.asarray(rk), axis=-1)
  np.testing.assert_allclose(score(3, 10), score(103, 110), atol=1e-5)
  assert not np.allclose(score(3, 10), score(3, 11), atol=1e-3)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("positions", ["learned", "rotary"])
def test_packed_documents_do_not_see_each_other(causal, positions):
  model = _tiny(causal, positions)
  rng = np.random.default_rng(0)
  tokens = rng.integers(7, 50, size=(2, 12))
  segment_ids = np.array([[1] * 5 + [2] * 4 + [0] * 3] * 2)
  positions_ = np.array([list(range(5)) + list(range(4)) + [0] * 3] * 2)
  h = model(jnp.asarray(tokens), segment_ids=segment_ids, positions=positions_)
  other = tokens.copy()
  other[:, 5:] = rng.integers(7, 50, size=(2, 7))  # change document 2 and the padding
  h2 = model(jnp.asarray(other), segment_ids=segment_ids, positions=positions_)
  np.testing.assert_allclose(h[:, :5], h2[:, :5], atol=1e-6)
  assert not np.allclose(h[:, 5:9], h2[:, 5:9], atol=1e-3)
  # Document 2 alone (shifted to the front) gives the same hidden states as inside the pack.
  alone = model(jnp.asarray(tokens[:, 5:9]))
  np.testing.assert_allclose(alone, h[:, 5:9], atol=1e-5)


def test_causal_model_ignores_the_future_and_encoder_does_not():
  tokens = jnp.asarray(np.random.default_rng(1).integers(7, 50, size=(2, 10)))
  changed = tokens.at[:, 7].set(3)
  for causal in (True, False):
    model = _tiny(causal)
    same = np.allclose(model(tokens)[:, :7], model(changed)[:, :7], atol=1e-6)
    assert same == causal


@pytest.mark.parametrize("positions", ["learned", "rotary"])
def test_cached_decoding_equals_uncached_logits(positions):
  model = _tiny(True, positions)
  tokens = jnp.asarray(np.random.default_rng(2).integers(7, 50, size=(3, 9)))
  full = model.logits(model(tokens))
  cache = model.init_cache(3, 12)
  hidden, cache = model(tokens[:, :4], cache=cache, cache_index=0)  # prefill
  stepped = [model.logits(hidden)]
  for i in range(4, 9):
    hidden, cache = model(tokens[:, i:i + 1], cache=cache, cache_index=i)
    stepped.append(model.logits(hidden))
  np.testing.assert_allclose(jnp.concatenate(stepped, axis=1), full, atol=1e-5)


def test_generate_greedy_matches_uncached_argmax_and_sampling_respects_top_k():
  model = _tiny(True)
  prompt = jnp.asarray(np.random.default_rng(3).integers(7, 50, size=(2, 3)))
  out = generate(model, prompt, max_new_tokens=5)
  seq = prompt
  for _ in range(5):
    nxt = jnp.argmax(model.logits(model(seq))[:, -1], axis=-1)
    seq = jnp.concatenate([seq, nxt[:, None]], axis=1)
  np.testing.assert_array_equal(out, seq)
  # top_k=1 sampling is greedy whatever the temperature.
  sampled = generate(model, prompt, max_new_tokens=5, rng=jax.random.key(1), temperature=2.0,
                     top_k=1)
  np.testing.assert_array_equal(sampled, seq)
  with pytest.raises(ValueError, match="exceeds max_len"):
    generate(model, prompt, max_new_tokens=20)


def test_dropout_is_keyed_per_example_and_off_without_keys():
  model = _tiny(False, dropout=0.3)
  tokens = jnp.asarray(np.random.default_rng(4).integers(7, 50, size=(4, 8)))
  keys = jax.random.split(jax.random.key(0), 4)
  a = model(tokens, dropout_keys=keys)
  perm = np.array([2, 0, 3, 1])
  b = model(tokens[perm], dropout_keys=keys[perm])
  np.testing.assert_allclose(a[perm], b, atol=1e-6)
  assert not np.allclose(a, model(tokens, dropout_keys=jax.random.split(jax.random.key(1), 4)))
  np.testing.assert_allclose(model(tokens), model(tokens), atol=0)


def test_remat_gives_the_same_values_and_gradients():
  tokens = jnp.asarray(np.random.default_rng(5).integers(7, 50, size=(2, 8)))

  def loss(model):
    return jnp.mean(model(tokens) ** 2)

  plain, remat = _tiny(False), _tiny(False, remat=True)
  g1, g2 = nnx.grad(loss)(plain), nnx.grad(loss)(remat)
  np.testing.assert_allclose(loss(plain), loss(remat), rtol=1e-6)
  for x, y in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
    np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-7)


def test_bfloat16_compute_float32_parameters_and_outputs():
  model = _tiny(False, dtype=jnp.bfloat16)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(_params(model)))
  tokens = jnp.asarray(np.random.default_rng(6).integers(7, 50, size=(2, 8)))
  hidden = model(tokens)
  assert hidden.dtype == jnp.float32 and model.logits(hidden).dtype == jnp.float32
  full = _tiny(False)
  np.testing.assert_allclose(hidden, full(tokens), atol=0.1)


def test_mean_pool_and_bad_input():
  hidden = jnp.arange(12.0).reshape(1, 4, 3)
  np.testing.assert_allclose(mean_pool(hidden, jnp.array([[1, 1, 0, 0]])), [[1.5, 2.5, 3.5]])
  model = _tiny(False)
  with pytest.raises(ValueError, match="exceeds the model's max_len"):
    model(jnp.zeros((1, 17), jnp.int32))
  with pytest.raises(ValueError, match="Unknown text encoder"):
    build_text_encoder("bert_huge", vocab_size=10, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="Unknown positions"):
    Transformer(10, 8, 8, 1, 2, 8, positions="alibi", rngs=nnx.Rngs(0))
