"""Language losses: NumPy references of the papers' formulas, fixed values, reductions of sums and
counts across devices (1 vs 8 devices with a negative control), gradients, bfloat16, bad shapes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax import losses
from ssl_jax.losses.text import causal_targets, token_cross_entropy

B, T, V = 16, 6, 11


def _np_ce(logits, labels):
  logits = logits.astype(np.float64)
  m = logits.max(-1, keepdims=True)
  lse = (m + np.log(np.exp(logits - m).sum(-1, keepdims=True)))[..., 0]
  return lse - np.take_along_axis(logits, labels[..., None], -1)[..., 0]


def _data(seed=0):
  rng = np.random.default_rng(seed)
  logits = rng.normal(size=(B, T, V)).astype(np.float32) * 2
  labels = rng.integers(0, V, size=(B, T))
  # Counts differ a lot between examples (and so between devices): rows 0-1 have none.
  mask = (rng.random((B, T)) < np.linspace(0.0, 0.9, B)[:, None]).astype(np.float32)
  return logits, labels, mask


def test_masked_lm_matches_numpy():
  logits, labels, mask = _data()
  expected = (_np_ce(logits, labels) * mask).sum() / mask.sum()
  np.testing.assert_allclose(losses.masked_lm(logits, labels, mask), expected, rtol=1e-5)
  # Only masked positions count: changing an unmasked prediction changes nothing.
  other = logits.copy()
  other[mask == 0] = 0.0
  np.testing.assert_allclose(losses.masked_lm(other, labels, mask), expected, rtol=1e-5)
  assert float(losses.masked_lm(logits, labels, np.zeros_like(mask))) == 0.0


def test_masked_lm_ignores_labels_where_nothing_is_masked():
  # Labels are read (and range-checked) only where mask is set: elsewhere any id, e.g. -100.
  logits, labels, mask = _data()
  ignored = np.where(mask > 0, labels, -100)
  np.testing.assert_allclose(losses.masked_lm(logits, ignored, mask),
                             losses.masked_lm(logits, labels, mask), rtol=1e-6)
  with pytest.raises(ValueError, match=r"labels must lie in \[0, 11\).*got values in \[-100, "):
    losses.masked_lm(logits, ignored, np.ones_like(mask))


def test_causal_lm_shifts_inside_and_counts_real_pairs():
  logits, tokens, _ = _data(1)
  rng = np.random.default_rng(2)
  lengths = rng.integers(1, T + 1, size=B)
  mask = (np.arange(T)[None] < lengths[:, None]).astype(np.float32)
  ce = _np_ce(logits[:, :-1], tokens[:, 1:])
  w = mask[:, 1:] * mask[:, :-1]
  np.testing.assert_allclose(losses.causal_lm(logits, tokens, mask=mask), (ce * w).sum() / w.sum(),
                             rtol=1e-5)
  np.testing.assert_allclose(losses.causal_lm(logits, tokens), ce.mean(), rtol=1e-5)
  # The last position's logits predict nothing.
  changed = logits.copy()
  changed[:, -1] = 100.0
  np.testing.assert_allclose(losses.causal_lm(changed, tokens), ce.mean(), rtol=1e-5)


def test_causal_lm_never_predicts_across_packed_documents():
  segment_ids = np.array([[1, 1, 1, 2, 2, 0]] * B)
  w = np.asarray(causal_targets(jnp.zeros((B, T), jnp.int32), segment_ids=segment_ids))
  # Targets 1, 2 (doc 1) and 4 (doc 2) count; 3 starts doc 2 from doc 1's context; 5 is padding.
  np.testing.assert_array_equal(w[0], [1, 1, 0, 1, 0])
  logits, tokens, _ = _data(3)
  ce = _np_ce(logits[:, :-1], tokens[:, 1:])
  np.testing.assert_allclose(losses.causal_lm(logits, tokens, segment_ids=segment_ids),
                             (ce * w).sum() / w.sum(), rtol=1e-5)


def test_next_sentence_matches_numpy():
  rng = np.random.default_rng(4)
  logits = rng.normal(size=(B, 2)).astype(np.float32)
  is_next = rng.integers(0, 2, size=B)
  np.testing.assert_allclose(losses.next_sentence(logits, is_next),
                             _np_ce(logits, is_next).mean(), rtol=1e-5)


def test_simcse_matches_numpy():
  rng = np.random.default_rng(5)
  a, b = rng.normal(size=(2, B, 8))
  an = a / np.linalg.norm(a, axis=1, keepdims=True)
  bn = b / np.linalg.norm(b, axis=1, keepdims=True)
  logits = an @ bn.T / 0.05
  expected = _np_ce(logits, np.arange(B)).mean()  # one direction, as the official code
  np.testing.assert_allclose(losses.simcse(a, b), expected, rtol=1e-5)


# Shared properties of the token losses (as test_common.py does for the view losses).
def _token_cases():
  logits, labels, mask = _data(6)
  rng = np.random.default_rng(7)
  return {
      "masked_lm": (lambda lg, lb, m, **kw: losses.masked_lm(lg, lb.astype(jnp.int32), m, **kw),
                    (logits, labels, mask)),
      "causal_lm": (lambda lg, lb, m, **kw: losses.causal_lm(lg, lb.astype(jnp.int32), mask=m, **kw),
                    (logits, labels, (mask > 0) | (np.arange(T) < 2))),
      "next_sentence": (lambda lg, lb, **kw: losses.next_sentence(lg, lb.astype(jnp.int32), **kw),
                        (rng.normal(size=(B, 2)), rng.integers(0, 2, size=B))),
  }


@pytest.mark.parametrize("name", ["masked_lm", "causal_lm", "next_sentence"])
def test_token_losses_eight_devices_match_one_device(name, eight_devices):
  loss, args = _token_cases()[name]
  value, grads = eight_devices.check(loss, args, sharded=(True,) * len(args))
  assert np.any(grads[0] != 0)


def test_masked_lm_is_not_a_mean_of_device_means():
  logits, labels, mask = _data()
  per_device = [float(losses.masked_lm(lg, lb, m)) for lg, lb, m in
                zip(*(np.split(x, 8) for x in (logits, labels, mask)))]
  assert not np.isclose(np.mean(per_device), float(losses.masked_lm(logits, labels, mask)),
                        rtol=1e-3)


def test_simcse_eight_devices_match_one_device(eight_devices):
  rng = np.random.default_rng(8)
  a, b = rng.normal(size=(2, B, 8))
  eight_devices.check(lambda x, y, **kw: losses.simcse(x, y, **kw), (a, b), sharded=(True, True))


@pytest.mark.parametrize("name", ["masked_lm", "causal_lm", "next_sentence"])
def test_token_losses_float32_jittable_bfloat16(name):
  loss, args = _token_cases()[name]
  args = tuple(jnp.asarray(x) for x in args)
  value = loss(*args)
  assert value.shape == () and value.dtype == jnp.float32 and np.isfinite(value)
  np.testing.assert_allclose(jax.jit(loss)(*args), value, rtol=1e-5)
  low = loss(args[0].astype(jnp.bfloat16), *args[1:])
  assert low.dtype == jnp.float32
  np.testing.assert_allclose(low, loss(args[0].astype(jnp.bfloat16).astype(jnp.float32),
                                       *args[1:]), rtol=1e-6)
  grad = jax.grad(lambda lg: loss(lg, *args[1:]))(args[0])
  assert np.all(np.isfinite(grad))


def test_gradient_of_masked_lm_is_softmax_minus_onehot_over_count():
  logits, labels, mask = _data(9)
  grad = np.asarray(jax.grad(losses.masked_lm)(jnp.asarray(logits), labels, mask))
  p = np.exp(logits - logits.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  expected = (p - np.eye(V)[labels]) * mask[..., None] / mask.sum()
  np.testing.assert_allclose(grad, expected, atol=1e-6)


def test_token_cross_entropy_fixed_value():
  assert np.isclose(float(token_cross_entropy(jnp.array([0.0, np.log(3.0)]), jnp.array(1))),
                    np.log(4 / 3))


def test_bad_shapes_raise_naming_the_argument():
  logits, labels, mask = _data()
  with pytest.raises(ValueError, match="logits must be 3-D"):
    losses.masked_lm(logits[0], labels, mask)
  with pytest.raises(ValueError, match="mask must have shape"):
    losses.masked_lm(logits, labels, mask[:, :3])
  with pytest.raises(ValueError, match="segment_ids must have shape"):
    losses.causal_lm(logits, labels, segment_ids=labels[:4])
  with pytest.raises(ValueError, match="at least 2 tokens"):
    losses.causal_lm(logits[:, :1], labels[:, :1])
  with pytest.raises(ValueError, match=r"\[batch, 2\]"):
    losses.next_sentence(logits[:, 0, :3], labels[:, 0])
  with pytest.raises(ValueError, match=r"is_next has shape \(4,\); is_next must have shape"):
    losses.next_sentence(logits[:, 0, :2], labels[:4, 0])
  with pytest.raises(ValueError, match="simcse: z_a must be 2-D"):
    losses.simcse(logits, logits)
