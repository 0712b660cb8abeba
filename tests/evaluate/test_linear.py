"""Tests for ssl_jax.evaluate.linear: scikit-learn agreement at matched C, weights, selection.

Fits reuse a few shapes (the full digits train split) so that XLA compiles stay few.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from ssl_jax.evaluate.linear import (linear_probe_fit, linear_probe_predict, select_l2, sklearn_C,
                                     stratified_split)
from ssl_jax.losses.utils import l2_normalize


def sklearn_fit(x, y, l2, sample_weight=None):
  """Reference at matched regularization: C = 1 / (l2 * sum of weights), normalized features."""
  total = len(y) if sample_weight is None else float(np.sum(sample_weight))
  clf = LogisticRegression(C=sklearn_C(l2, total), tol=1e-6, max_iter=5000)
  return clf.fit(np.asarray(l2_normalize(x), np.float64), y, sample_weight=sample_weight)


def assert_params_close(params, ref, rtol):
  """Coefficients and (sum-zero) intercepts agree to ``rtol`` of the largest coefficient."""
  atol = rtol * np.abs(ref.coef_).max()
  np.testing.assert_allclose(np.asarray(params.w), ref.coef_.T, atol=atol)
  np.testing.assert_allclose(np.asarray(params.b), ref.intercept_ - ref.intercept_.mean(),
                             atol=atol)


def test_sklearn_C():
  assert sklearn_C(1e-3, 200) == pytest.approx(5.0)


@pytest.mark.parametrize("solver", ["lbfgs", "adam"])
@pytest.mark.parametrize("l2", [1e-3, 1e-2])
def test_matches_sklearn_logistic_regression(digits, solver, l2):
  x_tr, y_tr, x_te, y_te = digits
  params = linear_probe_fit(x_tr, y_tr, num_classes=10, l2=l2, solver=solver,
                            steps=1000 if solver == "lbfgs" else 2000)
  ref = sklearn_fit(x_tr, y_tr, l2)
  ours = np.asarray(linear_probe_predict(params, x_te))
  theirs = ref.predict(np.asarray(l2_normalize(x_te), np.float64))
  assert abs(np.mean(ours == y_te) - np.mean(theirs == y_te)) <= 0.01
  assert np.mean(ours == theirs) >= 0.99
  assert_params_close(params, ref, rtol=2e-3)
  assert abs(float(jnp.sum(params.b))) < 1e-4


def test_sample_weight_matches_sklearn_and_mask_selects_subset(digits):
  x_tr, y_tr, _, _ = digits
  l2 = 1e-2
  w = np.random.default_rng(0).uniform(0.5, 2.0, size=len(y_tr)).astype(np.float32)
  params = linear_probe_fit(x_tr, y_tr, num_classes=10, l2=l2, sample_weight=w)
  assert_params_close(params, sklearn_fit(x_tr, y_tr, l2, sample_weight=w), rtol=2e-3)
  mask = (np.arange(len(y_tr)) % 5 == 0).astype(np.float32)
  masked = linear_probe_fit(x_tr, y_tr, num_classes=10, l2=l2, sample_weight=mask)
  keep = mask > 0
  assert_params_close(masked, sklearn_fit(x_tr[keep], y_tr[keep], l2), rtol=2e-3)


def test_deterministic_and_vmappable_over_l2(digits):
  x_tr, y_tr, _, _ = digits
  a = linear_probe_fit(x_tr, y_tr, num_classes=10, l2=1e-3)
  b = linear_probe_fit(x_tr, y_tr, num_classes=10, l2=1e-3)
  np.testing.assert_array_equal(np.asarray(a.w), np.asarray(b.w))
  batched = jax.vmap(lambda l2: linear_probe_fit(x_tr, y_tr, num_classes=10, l2=l2))(
      jnp.asarray([1e-3, 1e-1]))
  np.testing.assert_allclose(np.asarray(batched.w[0]), np.asarray(a.w), atol=1e-3)
  assert np.linalg.norm(batched.w[1]) < np.linalg.norm(batched.w[0])   # stronger penalty


def test_unknown_solver_raises(digits):
  x_tr, y_tr, _, _ = digits
  with pytest.raises(ValueError, match="solver"):
    linear_probe_fit(x_tr, y_tr, num_classes=10, l2=1e-3, solver="sgd")


def test_select_l2_uses_a_stratified_split_and_breaks_ties_upward():
  rng = np.random.default_rng(0)
  labels = np.repeat(np.arange(3), 20)
  fit_idx, val_idx = stratified_split(labels)
  assert len(val_idx) == 12 and np.all(np.bincount(labels[val_idx]) == 4)
  assert not set(fit_idx) & set(val_idx)
  # Well-separated classes: every l2 reaches validation accuracy 1, the largest one is chosen.
  feats = np.eye(3, 8)[labels] * 5 + 0.05 * rng.standard_normal((60, 8))
  best, accs = select_l2(feats, labels, num_classes=3, grid=(1e-4, 1e-3, 1e-2))
  np.testing.assert_array_equal(accs, 1.0)
  assert best == 1e-2


def test_select_l2_on_digits_rejects_underfitting_penalty(digits):
  """Enough labels: a heavy penalty (1) underfits on the validation split and is not chosen."""
  x_tr, y_tr, _, _ = digits
  best, accs = select_l2(x_tr, y_tr, num_classes=10, grid=(1e-4, 1.0))
  assert best == 1e-4 and accs[0] > accs[1] + 0.05


def test_matches_sklearn_on_frozen_encoder_features(frozen_features):
  """Same frozen features, matched regularization (C = 1 / (l2 N)): within one accuracy point,
  with the L-BFGS solver (the default for these small feature sets)."""
  f_tr, y_tr, f_te, y_te = frozen_features
  l2 = 1e-3
  params = linear_probe_fit(f_tr, y_tr, num_classes=10, l2=l2, solver="lbfgs", steps=1000)
  ref = sklearn_fit(f_tr, y_tr, l2)
  ours = np.asarray(linear_probe_predict(params, f_te))
  theirs = ref.predict(np.asarray(l2_normalize(f_te), np.float64))
  print("frozen CNN features: ours", np.mean(ours == y_te), "sklearn", np.mean(theirs == y_te))
  assert abs(np.mean(ours == y_te) - np.mean(theirs == y_te)) <= 0.01
  assert np.mean(ours == theirs) >= 0.98
