"""Linear probe on frozen features: L2-penalized multinomial logistic regression.

The probe is trained **full batch** on L2-normalized features: the feature sets it is used on (one
train split of a small dataset, or a few labeled examples per class) fit in memory many times over,
and a full-batch convex problem has a unique, deterministic optimum that does not depend on batch
order, learning-rate schedules or seeds.

Objective (per fit, with optional per-example weights ``s_i >= 0``, all ones by default)::

    L(W, b) = sum_i s_i * CE(softmax(x_i W + b), y_i) / sum_i s_i  +  (l2 / 2) * ||W||_F^2

with ``x_i = f_i / ||f_i||``, ``W`` of shape ``[D, C]``, bias ``b`` of shape ``[C]`` (not
penalized), and ``C`` logits (the symmetric, over-parameterized multinomial form). This is exactly
scikit-learn's ``LogisticRegression(C=C_sk)`` (lbfgs solver, multinomial loss, ``fit_intercept``)
objective divided by ``C_sk * sum_i s_i``, i.e.::

    C_sk = 1 / (l2 * sum_i s_i)        (= 1 / (l2 * N) without weights)

(see ``sklearn.linear_model._logistic``: ``l2_reg_strength = 1 / (C * sw_sum)``), so both reach the
same minimizer; :func:`sklearn_C` converts. Because the data term is a *mean*, a fixed ``l2`` keeps
the same balance between average loss and penalty whatever the number of labels (the matching
``C_sk`` shrinks as ``1 / N``).

Solvers (both :mod:`optax`):

* ``"lbfgs"`` (default): :func:`optax.lbfgs` with its zoom line search, run in a
  :func:`jax.lax.while_loop` until the gradient norm drops below ``tol`` or ``steps`` iterations.
  On these small problems it reaches scikit-learn's optimum to ~1e-3 in coefficients within a few
  hundred iterations in float32 (tested), so it is the default.
* ``"adam"``: :func:`optax.adam` with a cosine-decayed learning rate for exactly ``steps``
  full-batch steps: a first-order alternative (agrees with scikit-learn to ~1e-3 at ``l2 >= 1e-4``
  after 2000 steps; slower to converge at weaker penalties).

Every function here is a pure JAX function of arrays (``l2`` and the weights are traced), so fits
can be :func:`jax.vmap`-ed over label draws, cross-validation folds or a grid of ``l2`` values
with a single compile per shape.

References:
  Liu & Nocedal, "On the limited memory BFGS method for large scale optimization", 1989.
  Radford et al., "Learning Transferable Visual Models From Natural Language Supervision", ICML
  2021 (linear probes: L-BFGS logistic regression on frozen features, L2 penalty chosen on a
  validation split).
"""

from __future__ import annotations

import functools
from typing import Literal, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ssl_jax.losses.utils import l2_normalize

Solver = Literal["lbfgs", "adam"]

#: Default ``l2`` grid for the "all labels" budget (chosen on a stratified validation split).
DEFAULT_L2_GRID: tuple[float, ...] = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2)


class LinearProbe(NamedTuple):
  """Parameters of a fitted probe.

  Attributes:
    w: ``[D, C]`` weights applied to L2-normalized features.
    b: ``[C]`` bias.
  """
  w: jax.Array
  b: jax.Array


def sklearn_C(l2: float, num_examples: float) -> float:
  """scikit-learn's ``LogisticRegression`` ``C`` matching ``l2`` on ``num_examples`` examples.

  Args:
    l2: penalty of this module's objective (``l2 / 2 * ||W||^2`` beside the mean loss).
    num_examples: ``N``, or the summed weights ``sum_i s_i`` with sample weights.

  Returns:
    ``1 / (l2 * num_examples)``.
  """
  return 1.0 / (l2 * num_examples)


def probe_loss(params: LinearProbe, x: jax.Array, labels: jax.Array, weights: jax.Array,
               l2: jax.Array) -> jax.Array:
  """Objective of the module docstring (``x`` already normalized).

  Args:
    params: probe parameters.
    x: ``[N, D]`` normalized features.
    labels: ``[N]`` int labels in ``[0, C)``.
    weights: ``[N]`` non-negative example weights (0 = excluded).
    l2: scalar penalty.

  Returns:
    Scalar float32 loss.
  """
  logits = x @ params.w + params.b
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  data = jnp.sum(weights * ce) / jnp.maximum(jnp.sum(weights), 1e-12)
  return data + 0.5 * l2 * jnp.sum(jnp.square(params.w))


def _run_lbfgs(fun, init: LinearProbe, steps: int, tol: float, memory_size: int) -> LinearProbe:
  """Minimizes ``fun`` with optax L-BFGS + zoom line search (the optax documentation's loop)."""
  opt = optax.lbfgs(memory_size=memory_size)
  value_and_grad = optax.value_and_grad_from_state(fun)

  def body(carry):
    params, state = carry
    value, grad = value_and_grad(params, state=state)
    updates, state = opt.update(grad, state, params, value=value, grad=grad, value_fn=fun)
    return optax.apply_updates(params, updates), state

  def cond(carry):
    _, state = carry
    count = optax.tree.get(state, "count")
    grad_norm = optax.tree.norm(optax.tree.get(state, "grad"))
    return (count == 0) | ((count < steps) & (grad_norm >= tol))

  params, _ = jax.lax.while_loop(cond, body, (init, opt.init(init)))
  return params


def _run_adam(fun, init: LinearProbe, steps: int, learning_rate: float) -> LinearProbe:
  """Minimizes ``fun`` with ``steps`` full-batch Adam steps on a cosine-decayed learning rate."""
  opt = optax.adam(optax.cosine_decay_schedule(learning_rate, steps))
  grad_fn = jax.grad(fun)

  def body(_, carry):
    params, state = carry
    updates, state = opt.update(grad_fn(params), state, params)
    return optax.apply_updates(params, updates), state

  params, _ = jax.lax.fori_loop(0, steps, body, (init, opt.init(init)))
  return params


@functools.partial(
    jax.jit, static_argnames=("num_classes", "steps", "solver", "tol", "memory_size",
                              "learning_rate"))
def linear_probe_fit(feats: jax.Array, labels: jax.Array, *, num_classes: int,
                     l2: float | jax.Array, sample_weight: jax.Array | None = None,
                     steps: int = 1000, solver: Solver = "lbfgs", tol: float = 1e-5,
                     memory_size: int = 10, learning_rate: float = 0.1) -> LinearProbe:
  """Fits the L2-penalized multinomial logistic regression of the module docstring.

  Deterministic: parameters start at zero and the problem is convex and full batch. The bias is
  only defined up to a common shift (softmax invariance); the returned one sums to zero. Jitted;
  ``l2`` and ``sample_weight`` are traced, so the function can be vmapped over them and over
  same-shaped feature sets.

  Args:
    feats: ``[N, D]`` features (normalized inside).
    labels: ``[N]`` int labels in ``[0, num_classes)``.
    num_classes: ``C``.
    l2: penalty strength (``C_sk = 1 / (l2 * N)``, see :func:`sklearn_C`).
    sample_weight: optional ``[N]`` non-negative weights; a 0/1 mask selects a subset.
    steps: maximum L-BFGS iterations, or the exact number of Adam steps.
    solver: ``"lbfgs"`` (default) or ``"adam"``.
    tol: L-BFGS stops once the gradient's global norm is below this.
    memory_size: L-BFGS history length.
    learning_rate: Adam's peak learning rate.

  Returns:
    The fitted :class:`LinearProbe` (``w`` ``[D, C]``, ``b`` ``[C]``).
  """
  x = l2_normalize(feats)
  labels = jnp.asarray(labels, jnp.int32)
  weights = (jnp.ones(x.shape[0], jnp.float32) if sample_weight is None
             else jnp.asarray(sample_weight, jnp.float32))
  l2 = jnp.asarray(l2, jnp.float32)
  init = LinearProbe(jnp.zeros((x.shape[1], num_classes), jnp.float32),
                     jnp.zeros((num_classes,), jnp.float32))
  fun = functools.partial(probe_loss, x=x, labels=labels, weights=weights, l2=l2)
  if solver == "lbfgs":
    params = _run_lbfgs(fun, init, steps, tol, memory_size)
  elif solver == "adam":
    params = _run_adam(fun, init, steps, learning_rate)
  else:
    raise ValueError(f"unknown solver {solver!r}; expected 'lbfgs' or 'adam'")
  # Softmax is invariant to a common shift of the (unpenalized) bias: report the sum-zero one.
  return params._replace(b=params.b - jnp.mean(params.b))


@jax.jit
def linear_probe_logits(params: LinearProbe, feats: jax.Array) -> jax.Array:
  """Logits ``[M, C]`` of the probe on ``feats`` ``[M, D]`` (normalized inside)."""
  return l2_normalize(feats) @ params.w + params.b


@jax.jit
def linear_probe_predict(params: LinearProbe, feats: jax.Array) -> jax.Array:
  """Predicted classes ``[M]`` (int32) of the probe on ``feats`` ``[M, D]``."""
  return jnp.argmax(linear_probe_logits(params, feats), axis=-1).astype(jnp.int32)


def stratified_split(labels: np.ndarray, *, val_fraction: float = 0.2,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """Stratified train/validation split of ``range(N)`` (scikit-learn ``train_test_split``).

  Args:
    labels: ``[N]`` labels.
    val_fraction: fraction of examples held out for validation.
    seed: ``random_state``.

  Returns:
    ``(fit_idx, val_idx)``, sorted int index arrays.
  """
  from sklearn.model_selection import train_test_split
  labels = np.asarray(labels)
  fit_idx, val_idx = train_test_split(np.arange(len(labels)), test_size=val_fraction,
                                      stratify=labels, random_state=seed)
  return np.sort(fit_idx), np.sort(val_idx)


def select_l2(feats: jax.Array, labels: np.ndarray, *, num_classes: int,
              grid: Sequence[float] = DEFAULT_L2_GRID, val_fraction: float = 0.2, seed: int = 0,
              **fit_kwargs) -> tuple[float, np.ndarray]:
  """Chooses ``l2`` on a stratified validation split of the given (train) examples only.

  One fit per grid value on the fit part (vmapped over the grid: one compile), scored by accuracy on
  the held-out part. Ties go to the **largest** ``l2`` (the simplest model). Only ``feats`` and
  ``labels`` are seen: test data never enters.

  Args:
    feats: ``[N, D]`` train features.
    labels: ``[N]`` train labels.
    num_classes: ``C``.
    grid: candidate ``l2`` values.
    val_fraction: held-out fraction (stratified).
    seed: split seed.
    **fit_kwargs: forwarded to :func:`linear_probe_fit` (``steps``, ``solver``, ...).

  Returns:
    ``(best_l2, val_accuracies [len(grid)])``.
  """
  labels = np.asarray(labels)
  fit_idx, val_idx = stratified_split(labels, val_fraction=val_fraction, seed=seed)
  feats = jnp.asarray(feats)
  grid_arr = jnp.asarray(grid, jnp.float32)
  x_fit, y_fit = feats[fit_idx], jnp.asarray(labels[fit_idx])
  x_val, y_val = feats[val_idx], jnp.asarray(labels[val_idx])

  def score(l2):
    params = linear_probe_fit(x_fit, y_fit, num_classes=num_classes, l2=l2, **fit_kwargs)
    return jnp.mean(linear_probe_predict(params, x_val) == y_val)

  accs = np.asarray(jax.vmap(score)(grid_arr))
  best = max(range(len(grid)), key=lambda i: (accs[i], grid[i]))
  return float(grid[best]), accs
