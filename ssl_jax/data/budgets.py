"""Label budgets of the few-label protocol: how many labeled examples each class gives.

A budget is ``k`` labels per class (an int, or its digits as a string), ``"p%"`` (a class-balanced
``p%`` of all train labels: :func:`percent_counts`) or ``"all"``. The rule lives here, in the data
layer, because two layers apply it: evaluation draws the labels
(:func:`ssl_jax.evaluate.fewshot.label_draws`) and a run refuses, before training, a budget that its
data cannot meet (``check_evaluable`` of :mod:`ssl_jax.modalities.image`).
"""

from __future__ import annotations

import numpy as np

Budget = int | str


def normalize_budget(budget: Budget) -> Budget:
  """``5``, ``"5"`` and ``np.int64(5)`` -> ``5``; ``"1%"`` and ``"all"`` unchanged."""
  if isinstance(budget, str) and budget.isdigit():
    return int(budget)
  if isinstance(budget, np.integer):
    return int(budget)
  return budget


def labels_per_class(counts: np.ndarray, budget: Budget) -> np.ndarray:
  """``[C]`` labels to draw from each class for ``budget`` (``k`` or ``"p%"``), given ``counts``
  ``[C]`` train examples per class; a class may be asked for more than it has (the caller
  refuses that, naming the class).

  Raises:
    ValueError: a budget that is neither a positive int nor ``"p%"`` with ``0 < p <= 100``.

  Example:
    >>> counts = np.array([9, 3])
    >>> labels_per_class(counts, "5").tolist(), labels_per_class(counts, "50%").tolist()
    ([5, 5], [3, 3])
  """
  budget = normalize_budget(budget)
  counts = np.asarray(counts)
  if isinstance(budget, str) and budget.endswith("%"):
    try:
      frac = float(budget[:-1]) / 100.0
    except ValueError:
      frac = -1.0
    if not 0 < frac <= 1:
      raise ValueError(f"budget must be a positive int or 'p%' with 0 < p <= 100, got {budget!r}")
    return percent_counts(counts, frac)
  if isinstance(budget, int) and not isinstance(budget, bool) and budget >= 1:
    return np.full(len(counts), budget)
  raise ValueError(f"budget must be a positive int or 'p%', got {budget!r}")


def percent_counts(counts: np.ndarray, fraction: float) -> np.ndarray:
  """Per-class label counts of a class-balanced ``fraction`` of the train labels.

  Args:
    counts: ``[C]`` train examples per class.
    fraction: in ``(0, 1]``.

  Returns:
    ``[C]`` ints summing to ``min(N, max(C', round(fraction * N)))`` (``C'`` the non-empty
    classes): as equal as the class sizes allow (water-filling), each at least 1 for a non-empty
    class and at most its count.

  Example:
    >>> percent_counts(np.array([100, 50, 7]), 0.5).tolist()  # 78 labels; class 2 gives all 7
    [36, 35, 7]
  """
  counts = np.asarray(counts, np.int64)
  total = min(int(counts.sum()), max(int(np.sum(counts > 0)), int(round(fraction * counts.sum()))))
  want = np.zeros_like(counts)
  left = total
  open_ = counts > 0
  while left > 0 and open_.any():
    level = left // int(open_.sum())
    if level == 0:  # fewer labels left than open classes: one each, largest classes first
      room = counts - want
      order = sorted(np.flatnonzero(open_), key=lambda c: (-room[c], c))[:left]
      want[order] += 1
      break
    add = np.where(open_, np.minimum(level, counts - want), 0)
    want += add
    left -= int(add.sum())
    open_ &= want < counts
  return want
