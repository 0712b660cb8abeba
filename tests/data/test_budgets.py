"""Tests for ssl_jax.data.budgets: labels per class for each budget form."""

import numpy as np
import pytest

from ssl_jax.data.budgets import labels_per_class, percent_counts


def test_percent_counts_properties():
  rng = np.random.default_rng(0)
  for _ in range(50):
    counts = rng.integers(1, 60, size=rng.integers(2, 12))
    for frac in (0.01, 0.1, 0.37, 1.0):
      want = percent_counts(counts, frac)
      total = min(counts.sum(), max(len(counts), round(frac * counts.sum())))
      assert want.sum() == total and (want >= 1).all() and (want <= counts).all()
      # Balanced where possible: a class below the largest share gave everything it had.
      assert all(w == c for w, c in zip(want, counts) if w < want.max() - 1)


def test_labels_per_class_takes_k_and_percent_and_refuses_the_rest():
  counts = np.array([9, 3])
  assert labels_per_class(counts, 4).tolist() == labels_per_class(counts, "4").tolist() == [4, 4]
  assert labels_per_class(counts, np.int64(2)).tolist() == [2, 2]
  np.testing.assert_array_equal(labels_per_class(counts, "50%"), percent_counts(counts, 0.5))
  for bad in (0, -1, True, "0%", "150%", "x%", "all", "many"):
    with pytest.raises(ValueError, match="budget must be a positive int"):
      labels_per_class(counts, bad)
