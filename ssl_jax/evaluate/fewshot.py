"""Few-label evaluation of frozen features: label draws, linear probe and kNN, eval.json output.

Protocol (DESIGN.md, "Few-label protocol"):

* Budget ``k`` (labels per class): ``num_draws = 5`` draws; draw ``s`` uses
  ``numpy.random.default_rng(s)`` for ``s = 0..4`` and, for classes ``c = 0..C-1`` in order, picks
  ``rng.choice(np.flatnonzero(labels == c), size=k, replace=False)``. Draws depend only on the train
  labels, so every feature source (``ssl``, ``random_init``, ``raw``) gets the same draws (paired
  comparison).
* Percentage budgets ``"p%"`` (the 1% / 10% label subsets of SimCLR and BYOL's semi-supervised
  ImageNet evaluation) use the same procedure with ``n = max(C, round(p / 100 * N))`` labels in
  all, **class-balanced where possible**: every class gets ``min(n_c, L)`` examples (``n_c`` its
  train count) at the level ``L`` that spends the budget, classes too small for ``L`` give all
  they have, and the few labels left after rounding go to the largest remaining classes, lowest
  class id first (:func:`ssl_jax.data.budgets.percent_counts`). On a balanced dataset this is ``p%`` of each class
  (ImageNet 1%: 12 or 13 images per class, as SimCLR's 12,811-image subset); SimCLR's fixed
  image lists themselves are ImageNet-specific and not used.
* Budget ``"all"``: every train label, one deterministic fit (no ``_std`` entry).
* No label outside the drawn ones is used. For the linear probe on a few-label budget the
  regularization is the **fixed** ``l2 = DEFAULT_FEW_LABEL_L2 = 1e-3`` (objective
  ``mean CE + l2 / 2 ||W||^2`` on L2-normalized features, i.e. scikit-learn's
  ``C_sk = 1 / (l2 * n)`` for ``n = k * num_classes`` labels; see :mod:`ssl_jax.evaluate.linear`),
  or, with ``few_label_cv=True``
  and ``k >= 2``, it is chosen per draw by cross-validation inside the drawn set
  (:func:`cv_select_l2`). For ``"all"`` it is chosen from ``l2_grid`` on a stratified 80/20
  validation split of the train set (``random_state=0``), then the probe is refit on the whole
  train set (:func:`ssl_jax.evaluate.linear.select_l2`). Test labels are only used to score.
* kNN: weighted cosine kNN (DINO), ``k = 20`` or all labeled examples when fewer, temperature
  ``0.07`` (DINO's default), see :mod:`ssl_jax.evaluate.knn`.
* Reported: the mean accuracy over draws under ``"<budget>"`` and the sample standard deviation
  (``ddof=1``; 0.0 for a single draw) under ``"<budget>_std"``, as Python floats in ``[0, 1]``.

The fixed ``1e-3`` is a moderate penalty for unit-norm features, set once for every dataset. It was
checked, not tuned, on a validation split of the digits *train* set (draws from its 80% part scored
on its 20% part, never on the test split): raw-pixel accuracies at 1/5/10 labels per class move by
less than two points over ``l2`` in ``[1e-4, 1e-2]``, with ``1e-3`` best or within 1 point.

Efficiency: the draws of all few-label budgets are stacked (padded with masked rows) and
:func:`jax.vmap`-ed, and every source's features are padded to one width, so the few-label linear
probe and kNN compile once each for all sources and budgets (see ``evaluate_features``).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax.data.budgets import Budget, labels_per_class, normalize_budget
from ssl_jax.evaluate import knn as knn_lib
from ssl_jax.evaluate import linear as linear_lib

#: Fixed few-label ``l2`` (see the module docstring for why and how it relates to sklearn's ``C``).
DEFAULT_FEW_LABEL_L2 = 1e-3
#: Candidates for cross-validation inside a drawn set (``few_label_cv=True``).
DEFAULT_CV_GRID: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1)
DEFAULT_BUDGETS: tuple[Budget, ...] = (1, 5, 10, "all")
PROTOCOLS = ("linear", "knn")


def _per_class_counts(labels: np.ndarray, budget: Budget, num_classes: int) -> np.ndarray:
  """Examples to draw from each class for ``budget`` (an int ``k`` or ``"p%"``)."""
  counts = np.bincount(labels, minlength=num_classes)[:num_classes]
  want = labels_per_class(counts, budget)
  short = np.flatnonzero(want > counts)
  if short.size:
    raise ValueError(f"budget {normalize_budget(budget)!r}: classes {short.tolist()} have only "
                     f"{counts[short].tolist()} examples")
  return want


def label_draws(labels: np.ndarray, k: Budget, *, num_draws: int = 5,
                num_classes: int | None = None) -> np.ndarray:
  """Indices of the labeled examples of each draw (the design notes' few-label protocol).

  Draw ``s`` (``s = 0..num_draws-1``) uses ``numpy.random.default_rng(s)``; for each class
  ``c = 0..C-1`` in order it takes ``rng.choice(np.flatnonzero(labels == c), size=k_c,
  replace=False)`` and concatenates them (class ``c``'s indices before class ``c + 1``'s).

  Args:
    labels: ``[N]`` int train labels in ``[0, C)``.
    k: labels per class (int), or ``"p%"`` for a class-balanced ``p%`` of all labels
      (:func:`ssl_jax.data.budgets.percent_counts`).
    num_draws: number of draws (seeds ``0..num_draws-1``).
    num_classes: ``C``; defaults to ``max(labels) + 1``.

  Returns:
    ``[num_draws, sum_c k_c]`` int64 indices into ``labels`` (``[num_draws, k * C]`` for int ``k``).

  Raises:
    ValueError: if a class has fewer than ``k_c`` examples or the budget is malformed.
  """
  labels = np.asarray(labels)
  if labels.ndim != 1:
    raise ValueError(f"labels must be 1-D, got shape {labels.shape}")
  num_classes = int(labels.max()) + 1 if num_classes is None else num_classes
  want = _per_class_counts(labels, k, num_classes)
  pools = [np.flatnonzero(labels == c) for c in range(num_classes)]
  draws = []
  for seed in range(num_draws):
    rng = np.random.default_rng(seed)
    draws.append(np.concatenate(
        [rng.choice(pool, size=int(n), replace=False) for pool, n in zip(pools, want)]))
  return np.stack(draws).astype(np.int64)


def cv_select_l2(feats: jax.Array, labels: jax.Array, *, num_classes: int, k: int,
                 grid: Sequence[float] = DEFAULT_CV_GRID, num_folds: int = 5,
                 **fit_kwargs) -> tuple[jax.Array, jax.Array]:
  """Chooses ``l2`` per draw by cross-validation inside each drawn set only (needs ``k >= 2``).

  The drawn set of a draw is ``k`` examples per class in class order (as :func:`label_draws`
  returns them). Example ``j`` of its class goes to fold ``j mod F`` with ``F = min(k, num_folds)``,
  so each fold holds out at least one example of every class. Every (draw, ``l2``, fold) fit is one
  vmapped :func:`~ssl_jax.evaluate.linear.linear_probe_fit` with a 0/1 sample weight; the
  score is the pooled held-out accuracy; ties go to the largest ``l2``.

  Args:
    feats: ``[R, k * C, D]`` drawn features of ``R`` draws.
    labels: ``[R, k * C]`` their labels.
    num_classes: ``C``.
    k: labels per class (>= 2).
    grid: candidate ``l2`` values.
    num_folds: maximum number of folds.
    **fit_kwargs: forwarded to ``linear_probe_fit``.

  Returns:
    ``(chosen [R], correct [R, len(grid)])``: the chosen ``l2`` per draw (float32) and the number
    of held-out examples classified correctly, summed over folds, per draw and grid value.
  """
  if k < 2:
    raise ValueError("cross-validation inside the drawn set needs k >= 2")
  n = feats.shape[1]
  folds = min(k, num_folds)
  fold_of = (np.arange(n) % k) % folds
  held_out = jnp.asarray(fold_of[None, :] == np.arange(folds)[:, None], jnp.float32)  # [F, n]
  grid_arr = jnp.asarray(grid, jnp.float32)

  def fold_correct(x, y, l2, hold):
    params = linear_lib.linear_probe_fit(x, y, num_classes=num_classes, l2=l2,
                                         sample_weight=1.0 - hold, **fit_kwargs)
    return jnp.sum(hold * (linear_lib.linear_probe_predict(params, x) == y))

  per_fold = jax.vmap(fold_correct, in_axes=(None, None, None, 0))
  per_grid = jax.vmap(per_fold, in_axes=(None, None, 0, None))
  per_draw = jax.vmap(per_grid, in_axes=(0, 0, None, None))
  correct = per_draw(feats, labels, grid_arr, held_out).sum(-1)         # [R, G]
  # Largest l2 among the best: scan the grid from largest to smallest value.
  order = np.argsort(-np.asarray(grid, np.float64), kind="stable")
  best = jnp.argmax(correct[:, order], axis=-1)
  return grid_arr[order][best], correct


def _mean_std(accs: np.ndarray) -> tuple[float, float]:
  accs = np.asarray(accs, np.float64)
  std = float(np.std(accs, ddof=1)) if accs.size > 1 else 0.0
  return float(np.mean(accs)), std


def _budget_key(budget: Budget) -> str:
  return str(budget)


def evaluate_features(
    sources: Mapping[str, tuple[Any, Any]], train_labels: np.ndarray, test_labels: np.ndarray, *,
    num_classes: int, budgets: Sequence[Budget] = DEFAULT_BUDGETS,
    protocols: Sequence[str] = PROTOCOLS, num_draws: int = 5, knn_k: int = knn_lib.DEFAULT_K,
    knn_temperature: float = knn_lib.DEFAULT_TEMPERATURE, knn_batch_size: int = 256,
    l2: float = DEFAULT_FEW_LABEL_L2,
    l2_grid: Sequence[float] | None = linear_lib.DEFAULT_L2_GRID,
    few_label_cv: bool = False, cv_grid: Sequence[float] = DEFAULT_CV_GRID,
    linear_steps: int = 1000, solver: linear_lib.Solver = "lbfgs",
    return_info: bool = False) -> dict | tuple[dict, dict]:
  """Accuracies of every (protocol, source, budget) in the eval.json schema.

  Args:
    sources: ``{name: (train_feats [N, D], test_feats [M, D])}``, e.g. ``ssl``, ``random_init``,
      ``raw``; ``D`` may differ between sources.
    train_labels: ``[N]`` int labels.
    test_labels: ``[M]`` int labels (used only to score).
    num_classes: ``C``.
    budgets: ints (labels per class; digit strings accepted), ``"p%"`` strings, and/or ``"all"``.
    protocols: subset of ``("linear", "knn")``.
    num_draws: draws per few-label budget (seeds ``0..num_draws-1``).
    knn_k: kNN neighbours (clipped to the number of labeled examples).
    knn_temperature: kNN vote temperature.
    knn_batch_size: test examples per kNN batch.
    l2: fixed linear-probe penalty for few-label budgets.
    l2_grid: candidates for ``"all"``, chosen on a stratified validation split of the train set;
      ``None`` uses ``l2`` for ``"all"`` too.
    few_label_cv: choose few-label ``l2`` by cross-validation inside each draw when ``k >= 2``
      (``l2`` still applies to ``k = 1`` and percentage budgets).
    cv_grid: candidates for that cross-validation.
    linear_steps: maximum L-BFGS iterations (or Adam steps).
    solver: ``"lbfgs"`` or ``"adam"``.
    return_info: also return ``{"linear": {source: {"<budget>_l2": ...}}}`` (the penalties used;
      lists of per-draw values under cross-validation), the draws ``{"draws": {budget: list}}``
      and each draw's accuracy ``{"per_draw": {protocol: {source: {budget: list}}}}`` (for
      paired comparisons of sources).

  Returns:
    ``{protocol: {source: {"1": mean, "1_std": std, ..., "all": acc}}}`` of Python floats (and the
    info dict when ``return_info``).
  """
  unknown = set(protocols) - set(PROTOCOLS)
  if unknown:
    raise ValueError(f"unknown protocols {sorted(unknown)}; expected a subset of {PROTOCOLS}")
  budgets = [normalize_budget(b) for b in budgets]
  train_labels = np.asarray(train_labels).astype(np.int32)
  test_labels_dev = jnp.asarray(np.asarray(test_labels).astype(np.int32))
  draws = {b: label_draws(train_labels, b, num_draws=num_draws, num_classes=num_classes)
           for b in budgets if b != "all"}
  fit_kwargs = dict(num_classes=num_classes, steps=linear_steps, solver=solver)
  knn_kwargs = dict(num_classes=num_classes, k=knn_k, batch_size=knn_batch_size)

  def accuracy(pred: jax.Array) -> jax.Array:
    return jnp.mean(pred == test_labels_dev, axis=-1)

  def linear_draws(x, y, w, x_test, l2s):
    params = linear_lib.linear_probe_fit(x, y, l2=l2s, sample_weight=w, **fit_kwargs)
    return accuracy(linear_lib.linear_probe_predict(params, x_test))

  def knn_draws(x, y, mask, x_test):
    return accuracy(knn_lib.knn_predict(x, y, x_test, temperature=knn_temperature,
                                        train_mask=mask, **knn_kwargs))

  linear_vmapped = jax.jit(jax.vmap(linear_draws, in_axes=(0, 0, 0, None, 0)))
  knn_vmapped = jax.jit(jax.vmap(knn_draws, in_axes=(0, 0, 0, None)))

  # Shapes shared by every source and few-label budget, so each protocol compiles once: the draws
  # of all few-label budgets are stacked and padded to the largest with zero-weight (masked) rows,
  # and features are padded with zero columns to the widest source. Neither changes a result: a
  # zero-weight row does not enter the probe's weighted mean or the kNN vote, and a zero column
  # leaves L2 norms and cosine similarities unchanged and gets a zero probe weight.
  few = [b for b in budgets if b != "all"]
  width = max(int(np.shape(tr)[1]) for tr, _ in sources.values())
  if few:
    n_max = max(draws[b].shape[1] for b in few)
    stacked = np.zeros((len(few) * num_draws, n_max), np.int64)
    mask = np.zeros((len(few) * num_draws, n_max), bool)
    for i, b in enumerate(few):
      rows = slice(i * num_draws, (i + 1) * num_draws)
      stacked[rows, :draws[b].shape[1]] = draws[b]
      mask[rows, :draws[b].shape[1]] = True
    stacked, mask = jnp.asarray(stacked), jnp.asarray(mask)

  results: dict = {p: {} for p in protocols}
  info: dict = {"linear": {}, "draws": {_budget_key(b): d.tolist() for b, d in draws.items()},
                "per_draw": {p: {} for p in protocols}}
  train_labels_dev = jnp.asarray(train_labels)
  for name, (train_feats, test_feats) in sources.items():
    x_train = jnp.asarray(train_feats, jnp.float32)
    x_test = jnp.asarray(test_feats, jnp.float32)
    if x_train.shape[0] != train_labels.shape[0] or x_test.shape[0] != test_labels_dev.shape[0]:
      raise ValueError(f"source {name!r}: features {x_train.shape}, {x_test.shape} do not match "
                       f"labels {train_labels.shape}, {test_labels_dev.shape}")
    x_train, x_test = (jnp.pad(x, ((0, 0), (0, width - x.shape[1]))) for x in (x_train, x_test))
    for p in protocols:
      results[p][name] = {}
      info["per_draw"][p][name] = {}
    info["linear"][name] = {}
    per_draw: dict = {}
    if few:
      xs, ys = x_train[stacked], train_labels_dev[stacked]               # [B*R, n, D], [B*R, n]
      if "linear" in protocols:
        l2s = np.full((len(few), num_draws), l2, np.float32)
        for i, b in enumerate(few):
          if few_label_cv and isinstance(b, int) and b >= 2:
            idx = jnp.asarray(draws[b])
            chosen, _ = cv_select_l2(x_train[idx], train_labels_dev[idx], k=b,
                                     grid=tuple(cv_grid), **fit_kwargs)
            l2s[i] = np.asarray(chosen)
            info["linear"][name][f"{_budget_key(b)}_l2"] = [float(v) for v in l2s[i]]
          else:
            info["linear"][name][f"{_budget_key(b)}_l2"] = float(l2)
        per_draw["linear"] = np.asarray(linear_vmapped(
            xs, ys, mask.astype(jnp.float32), x_test, jnp.asarray(l2s.reshape(-1))))
      if "knn" in protocols:
        per_draw["knn"] = np.asarray(knn_vmapped(xs, ys, mask, x_test))
    for p, accs in per_draw.items():
      for i, b in enumerate(few):
        draw_accs = accs[i * num_draws:(i + 1) * num_draws]
        key = _budget_key(b)
        info["per_draw"][p][name][key] = draw_accs.tolist()
        results[p][name][key], results[p][name][f"{key}_std"] = _mean_std(draw_accs)
    if "all" in budgets:
      if "linear" in protocols:
        chosen = l2
        if l2_grid is not None:
          chosen, _ = linear_lib.select_l2(x_train, train_labels, grid=tuple(l2_grid),
                                           **fit_kwargs)
        params = linear_lib.linear_probe_fit(x_train, train_labels_dev, l2=chosen, **fit_kwargs)
        results["linear"][name]["all"] = float(
            accuracy(linear_lib.linear_probe_predict(params, x_test)))
        info["linear"][name]["all_l2"] = float(chosen)
      if "knn" in protocols:
        results["knn"][name]["all"] = float(accuracy(knn_lib.knn_predict(
            x_train, train_labels_dev, x_test, temperature=knn_temperature, **knn_kwargs)))
  if return_info:
    return results, info
  return results


def budget_sort_key(key: str) -> tuple[int, float]:
  """Orders budget keys: label counts ascending, then percentages ascending, then ``"all"``."""
  if key == "all":
    return (2, math.inf)
  if key.endswith("%"):
    return (1, float(key[:-1]))
  return (0, float(key))
