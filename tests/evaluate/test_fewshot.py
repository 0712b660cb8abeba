"""Tests for ssl_jax.evaluate.fewshot: label draws, eval.json schema, shared draws, no test leak."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from ssl_jax.data.budgets import percent_counts
from ssl_jax.evaluate.fewshot import cv_select_l2, evaluate_features, label_draws
from ssl_jax.evaluate.knn import knn_predict
from ssl_jax.evaluate.linear import sklearn_C
from ssl_jax.losses.utils import l2_normalize

C = 10


@pytest.fixture(scope="module")
def toy():
  """Class-structured random features: 10 classes, 30 train / 10 test each, two sources (D=16)."""
  rng = np.random.default_rng(0)
  y_tr, y_te = np.repeat(np.arange(C), 30), np.repeat(np.arange(C), 10)
  means = rng.standard_normal((C, 16))
  feats = lambda y, s: means[y] + s * rng.standard_normal((len(y), 16))   # noqa: E731
  sources = {"ssl": (feats(y_tr, 0.8), feats(y_te, 0.8)),
             "raw": (feats(y_tr, 1.5), feats(y_te, 1.5))}
  return sources, y_tr, y_te


# ------------------------------------------------------------------------------ label_draws


def test_label_draws_follow_the_protocol():
  labels = np.random.default_rng(123).integers(0, 4, size=200)
  draws = label_draws(labels, 3)
  assert draws.shape == (5, 12) and draws.dtype == np.int64
  # Reference written from the design notes' text.
  for seed in range(5):
    rng = np.random.default_rng(seed)
    expected = np.concatenate(
        [rng.choice(np.flatnonzero(labels == c), size=3, replace=False) for c in range(4)])
    np.testing.assert_array_equal(draws[seed], expected)


def test_label_draws_properties():
  labels = np.random.default_rng(1).integers(0, C, size=500)
  draws = label_draws(labels, 5)
  for d in draws:
    np.testing.assert_array_equal(labels[d].reshape(C, 5), np.repeat(np.arange(C), 5)[:, None]
                                  .reshape(C, 5))                       # classes in order, k each
    assert len(np.unique(d)) == len(d)                                  # without replacement
  np.testing.assert_array_equal(draws, label_draws(labels, 5))         # deterministic
  for a in range(5):
    for b in range(a + 1, 5):
      assert not np.array_equal(np.sort(draws[a]), np.sort(draws[b]))  # seeds 0..4 differ
  np.testing.assert_array_equal(label_draws(labels, 5, num_draws=3), draws[:3])


def test_label_draws_percent_and_errors():
  labels = np.repeat(np.arange(3), [100, 50, 7])
  draws = label_draws(labels, "10%")
  # Class-balanced: 16 labels (10% of 157), 6/5/5; at 50% class 2 gives all its 7.
  np.testing.assert_array_equal(np.bincount(labels[draws[0]]), [6, 5, 5])
  np.testing.assert_array_equal(np.bincount(labels[label_draws(labels, "50%")[0]]), [36, 35, 7])
  with pytest.raises(ValueError, match="0 < p <= 100"):
    label_draws(labels, "150%")
  np.testing.assert_array_equal(label_draws(labels, "2"), label_draws(labels, np.int64(2)))
  with pytest.raises(ValueError, match="only"):
    label_draws(labels, 8)
  with pytest.raises(ValueError, match="budget"):
    label_draws(labels, 0)


# ------------------------------------------------------------------------ evaluate_features


def test_schema_and_shared_draws(toy):
  sources, y_tr, y_te = toy
  results, info = evaluate_features(sources, y_tr, y_te, num_classes=C, budgets=(1, 5, "all"),
                                    l2_grid=None, return_info=True)
  json.dumps(results)
  assert set(results) == {"linear", "knn"}
  for protocol in results.values():
    assert set(protocol) == {"ssl", "raw"}
    for row in protocol.values():
      assert set(row) == {"1", "1_std", "5", "5_std", "all"}
      assert all(type(v) is float and 0.0 <= v <= 1.0 for v in row.values())
  assert results["linear"]["ssl"]["all"] > results["linear"]["raw"]["all"]   # less noise
  # Every source used label_draws(train_labels): recompute kNN by hand from those draws.
  draws = label_draws(y_tr, 1)
  np.testing.assert_array_equal(np.asarray(info["draws"]["1"]), draws)
  for name, (x_tr, x_te) in sources.items():
    accs = [np.mean(np.asarray(knn_predict(x_tr[d], y_tr[d], x_te, num_classes=C)) == y_te)
            for d in draws]
    assert results["knn"][name]["1"] == pytest.approx(np.mean(accs), abs=1e-6)
    assert results["knn"][name]["1_std"] == pytest.approx(np.std(accs, ddof=1), abs=1e-6)
  # A source's numbers do not depend on which other sources are evaluated beside it.
  alone = evaluate_features({"raw": sources["raw"]}, y_tr, y_te, num_classes=C,
                            budgets=(1, 5, "all"), l2_grid=None)
  assert alone["knn"]["raw"] == results["knn"]["raw"]
  assert alone["linear"]["raw"] == pytest.approx(results["linear"]["raw"], abs=1e-6)


def test_all_budget_selection_never_sees_test_labels(toy):
  sources, y_tr, y_te = toy
  kwargs = dict(num_classes=C, budgets=("all",), protocols=("linear",), return_info=True,
                l2_grid=(1e-4, 1e-2, 1.0, 10.0))
  x_tr, x_te = sources["raw"]
  rng = np.random.default_rng(0)
  base, info = evaluate_features({"raw": (x_tr, x_te)}, y_tr, y_te, **kwargs)
  perm, info_perm = evaluate_features({"raw": (x_tr, x_te)}, y_tr, rng.permutation(y_te), **kwargs)
  noise, info_noise = evaluate_features({"raw": (x_tr, rng.standard_normal(x_te.shape))}, y_tr,
                                        y_te, **kwargs)
  chosen = info["linear"]["raw"]["all_l2"]
  assert chosen in (1e-4, 1e-2)                      # the heavy penalties underfit
  assert info_perm["linear"]["raw"]["all_l2"] == chosen
  assert info_noise["linear"]["raw"]["all_l2"] == chosen
  assert perm["linear"]["raw"]["all"] < base["linear"]["raw"]["all"] - 0.3   # labels only score


def test_unknown_protocol_and_shape_mismatch(toy):
  sources, y_tr, y_te = toy
  with pytest.raises(ValueError, match="protocol"):
    evaluate_features(sources, y_tr, y_te, num_classes=C, protocols=("finetune",))
  with pytest.raises(ValueError, match="match"):
    evaluate_features({"raw": (sources["raw"][0][:-1], sources["raw"][1])}, y_tr, y_te,
                      num_classes=C)


def test_cv_inside_draw_matches_sklearn(digits):
  """Fold j mod k of each class held out; pooled held-out hits agree with sklearn's fits."""
  x_tr, y_tr, _, _ = digits
  k, grid = 3, (1e-3, 1e-1)
  draws = label_draws(y_tr, k, num_draws=2)
  xs, ys = jnp.asarray(x_tr[draws]), jnp.asarray(y_tr[draws])
  chosen, correct = cv_select_l2(xs, ys, num_classes=C, k=k, grid=grid)
  fold = np.arange(k * C) % k
  for r, d in enumerate(draws):
    x, y = np.asarray(l2_normalize(x_tr[d]), np.float64), y_tr[d]
    ref = []
    for l2 in grid:
      hits = 0
      for f in range(k):
        fit = fold != f
        clf = LogisticRegression(C=sklearn_C(l2, fit.sum()), tol=1e-6, max_iter=5000)
        hits += np.sum(clf.fit(x[fit], y[fit]).predict(x[~fit]) == y[~fit])
      ref.append(hits)
    np.testing.assert_allclose(np.asarray(correct[r]), ref, atol=1)
    best = max(range(len(grid)), key=lambda i: (float(correct[r, i]), grid[i]))
    assert float(chosen[r]) == pytest.approx(grid[best])
  with pytest.raises(ValueError, match="k >= 2"):
    cv_select_l2(xs, ys, num_classes=C, k=1)


@pytest.mark.slow
def test_digits_raw_pixels_sanity(digits):
  """Reference (logistic regression on raw digits): ~0.71 / 0.84 / 0.90 / 0.97."""
  x_tr, y_tr, x_te, y_te = digits
  results = evaluate_features({"raw": (x_tr, x_te)}, y_tr, y_te, num_classes=C)
  lin, knn = results["linear"]["raw"], results["knn"]["raw"]
  assert 0.6 <= lin["1"] <= 0.8 and 0.78 <= lin["5"] <= 0.9 and 0.85 <= lin["10"] <= 0.95
  assert lin["all"] > 0.93 and knn["all"] > 0.93 and 0.6 <= knn["1"] <= 0.8
  assert all(0.0 < lin[f"{b}_std"] < 0.1 for b in (1, 5, 10))


def test_one_and_ten_percent_of_a_mock_tfds_dataset():
  """The 1% / 10% budgets on a TFDS dataset (mock data of MNIST's spec): class-balanced,
  deterministic, the same draws for every source, in the eval.json schema."""
  tfds = pytest.importorskip("tensorflow_datasets")
  from ssl_jax.data import load_arrays
  with tfds.testing.mock_data(num_examples=400, policy=tfds.testing.MockPolicy.USE_CODE):
    x, y = load_arrays("tfds:mnist", "train")
  num_classes = int(y.max()) + 1
  counts = np.bincount(y, minlength=num_classes)
  for budget, total in (("1%", 10), ("10%", 40)):
    draws = label_draws(y, budget, num_classes=num_classes)
    assert draws.shape == (5, total)
    per_class = np.bincount(y[draws[0]], minlength=num_classes)
    np.testing.assert_array_equal(per_class, percent_counts(counts, float(budget[:-1]) / 100))
    assert per_class.max() - per_class.min() <= 1 or per_class.min() == counts.min()
    np.testing.assert_array_equal(draws, label_draws(y, budget, num_classes=num_classes))
  feats = x.reshape(len(x), -1).astype(np.float32) / 255
  results = evaluate_features({"raw": (feats[:300], feats[300:])}, y[:300], y[300:],
                              num_classes=num_classes, budgets=("1%", "10%"),
                              protocols=("knn",), num_draws=2)
  assert set(results["knn"]["raw"]) == {"1%", "1%_std", "10%", "10%_std"}
