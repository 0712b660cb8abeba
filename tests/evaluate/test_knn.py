"""Tests for ssl_jax.evaluate.knn: agreement with scikit-learn, masks, batching, temperature."""

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.neighbors import KNeighborsClassifier

from ssl_jax.evaluate.knn import knn_predict

T = 0.07


def sklearn_knn(x_tr, y_tr, x_te, k, temperature=T):
  """Reference: cosine distance d = 1 - sim, weight exp(sim / T) = exp((1 - d) / T)."""
  clf = KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute",
                             weights=lambda d: np.exp((1.0 - d) / temperature))
  return clf.fit(x_tr, y_tr).predict(x_te)


def test_matches_sklearn_on_digits(digits):
  x_tr, y_tr, x_te, y_te = digits
  ours = np.asarray(knn_predict(x_tr, y_tr, x_te, num_classes=10, k=20, temperature=T))
  ref = sklearn_knn(x_tr, y_tr, x_te, 20)
  assert ours.shape == y_te.shape and ours.dtype == np.int32
  assert np.mean(ours == ref) >= 0.99
  assert abs(np.mean(ours == y_te) - np.mean(ref == y_te)) <= 0.01
  assert np.mean(ours == y_te) > 0.95


def test_k_clipped_to_labeled_count_matches_sklearn(digits):
  """With 10 labeled examples and k=20 every labeled example votes (sklearn with k=10)."""
  x_tr, y_tr, x_te, _ = digits
  idx = np.array([np.flatnonzero(y_tr == c)[0] for c in range(10)])
  ours = np.asarray(knn_predict(x_tr[idx], y_tr[idx], x_te, num_classes=10, k=20))
  ref = sklearn_knn(x_tr[idx], y_tr[idx], x_te, 10)
  assert np.mean(ours == ref) >= 0.99


def test_mask_equals_subset_and_vmaps(digits):
  x_tr, y_tr, x_te, _ = digits
  rng = np.random.default_rng(0)
  masks = np.zeros((3, len(y_tr)), bool)
  for r in range(3):
    masks[r, rng.choice(len(y_tr), size=15, replace=False)] = True   # fewer than k = 20
  batched = jax.vmap(lambda m: knn_predict(x_tr, y_tr, x_te, num_classes=10, train_mask=m))(
      jnp.asarray(masks))
  for r in range(3):
    subset = knn_predict(x_tr[masks[r]], y_tr[masks[r]], x_te, num_classes=10)
    np.testing.assert_array_equal(np.asarray(batched[r]), np.asarray(subset))


def test_batch_size_does_not_change_predictions(digits):
  x_tr, y_tr, x_te, _ = digits
  x_te = x_te[:101]
  a = knn_predict(x_tr, y_tr, x_te, num_classes=10, batch_size=7)      # padded last batch
  b = knn_predict(x_tr, y_tr, x_te, num_classes=10, batch_size=1000)   # one batch
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_temperature_weighting_by_hand():
  """One class-0 neighbour at sim 1.0 against two class-1 neighbours at sim 0.8 (k = 3).

  T = 0.07: exp(1/0.07) ~ 1.6e6 > 2 exp(0.8/0.07) ~ 1.9e5, class 0 wins; T = 1: e ~ 2.72 <
  2 e^0.8 ~ 4.45, class 1 wins; a far class-2 example is not among the 3 neighbours.
  """
  s = np.sqrt(1 - 0.8 ** 2)
  train = np.array([[1.0, 0, 0], [0.8, s, 0], [0.8, 0, s], [-1.0, 0, 0]], np.float32)
  labels = np.array([0, 1, 1, 2])
  test = np.array([[3.0, 0, 0]], np.float32)   # norm does not matter (cosine)
  assert int(knn_predict(train, labels, test, num_classes=3, k=3, temperature=0.07)[0]) == 0
  assert int(knn_predict(train, labels, test, num_classes=3, k=3, temperature=1.0)[0]) == 1
  # A tiny temperature must not overflow (weights are shifted by the top similarity).
  assert int(knn_predict(train, labels, test, num_classes=3, k=3, temperature=1e-4)[0]) == 0


def test_matches_sklearn_on_frozen_encoder_features(frozen_features):
  """Same frozen features, same weighting as a callable: within one accuracy point."""
  f_tr, y_tr, f_te, y_te = frozen_features
  for k in (20, 5):
    ours = np.asarray(knn_predict(f_tr, y_tr, f_te, num_classes=10, k=k, temperature=T))
    ref = sklearn_knn(f_tr, y_tr, f_te, k)
    print(f"k={k}: ours {np.mean(ours == y_te):.4f} sklearn {np.mean(ref == y_te):.4f}")
    assert abs(np.mean(ours == y_te) - np.mean(ref == y_te)) <= 0.01, k
    assert np.mean(ours == ref) >= 0.98, k


def test_tiled_and_streamed_labeled_set_give_the_same_predictions(digits):
  """Tiling the labeled set (running top-k inside one jit) and streaming it from the host
  (past device memory) give the same predictions as one [batch, N] similarity matrix."""
  from ssl_jax.evaluate.knn import knn_predict_streaming
  x_tr, y_tr, x_te, _ = digits
  full = np.asarray(knn_predict(x_tr, y_tr, x_te, num_classes=10, k=20))
  tiled = np.asarray(knn_predict(x_tr, y_tr, x_te, num_classes=10, k=20, train_chunk_size=97))
  np.testing.assert_array_equal(tiled, full)
  streamed = knn_predict_streaming(x_tr, y_tr, x_te, num_classes=10, k=20, chunk_size=300)
  np.testing.assert_array_equal(streamed, full)
  # With a mask (few labels, fewer than k in some tiles) and vmapped over two draws.
  masks = np.stack([np.arange(len(y_tr)) % 7 == s for s in (0, 3)])
  fn = jax.vmap(lambda m: knn_predict(x_tr, y_tr, x_te, num_classes=10, k=20, train_mask=m,
                                      train_chunk_size=64))
  for mask, got in zip(masks, np.asarray(fn(jnp.asarray(masks)))):
    np.testing.assert_array_equal(got, np.asarray(knn_predict(
        x_tr[mask], y_tr[mask], x_te, num_classes=10, k=20)))
