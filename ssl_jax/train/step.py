"""The per-device train step: ``(state, batch, rng) -> (state, metrics)``, pure.

One function serves every parallel mode (see :mod:`ssl_jax.train.parallel`): it sees the local
shard of the global batch under ``shard_map``/``pmap`` (``axis_name="data"``) and the whole global
batch under GSPMD (``axis_name=None``). Losses called with ``axis_name`` return the global-batch
loss, so:

* ``shard_map`` with ``check_vma=True``: gradients w.r.t. the replicated parameters come out of
  autodiff already summed over devices (the transpose of the implicit replicated-to-varying cast
  is a ``psum``): nothing to reduce.
* ``pmap`` (no varying-value typing): each device's autodiff gradient is the gradient of the
  global loss under the assumption that the other devices' cotangents flow back to it, which
  over-counts; the average over devices is exact, so ``grad_reduce="pmean"``.
* GSPMD: a plain global computation; XLA inserts the collectives.

The engine's 1-vs-8-device test proves each of these, with a negative control.

The loss sees the step number as ``batch["step"]`` (an int32 scalar, the same on every device),
e.g. for monitors computed every N steps (:func:`ssl_jax.train.monitors.method_health`).

After the optimizer update, ``method.project`` (when the method has one) maps the new parameters
(normalized prototypes, a clamped temperature), then ``method.update`` moves teachers and queues.

A step whose loss or gradient norm is not finite is skipped: parameters (projected or not),
optimizer state, batch statistics and method state are all held back, and
``skips``/``total_skips`` count it.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from ssl_jax.train.optim import current_learning_rate
from ssl_jax.train.state import TrainState

PyTree = Any


def make_step(method, tx: optax.GradientTransformation, preprocess: Callable, *,
              axis_name: str | None, grad_reduce: str | None = None,
              sync_batch_stats: bool = False, clip_norm: float = 0.0,
              nan_at_step: int | None = None, nan_num_steps: int = 1):
  """Builds the pure per-device step.

  Args:
    method: a :class:`ssl_jax.methods.Method`.
    tx: the optimizer.
    preprocess: ``preprocess(batch, key) -> batch``: makes the views on device.
    axis_name: the data axis (``shard_map``/``pmap``) or None (GSPMD, one device).
    grad_reduce: ``"pmean"`` to average gradients over ``axis_name`` (pmap), or None.
    sync_batch_stats: average BatchNorm running statistics over ``axis_name`` after the step
      (for unsynced BatchNorm, so the replicated state stays identical on every device).
    clip_norm: if > 0, gradients are clipped to this global norm before the optimizer; the
      metrics report ``grad_norm`` (before) and ``grad_norm_clipped`` (measured after).
    nan_at_step, nan_num_steps: debug switch: make the loss NaN for ``nan_num_steps`` steps from
      step ``nan_at_step`` (tests the skip logic).
  """

  def step_fn(state: TrainState, batch: PyTree, rng: jax.Array):
    aug_key, loss_key = jax.random.split(rng)
    batch = preprocess(batch, aug_key)
    # The step number, replicated: lets a method do some work every N steps (health monitors).
    batch = {**batch, "step": state.step}

    def loss_of(params):
      loss, aux = method.loss_fn(params, state.batch_stats, state.method_state, batch, loss_key,
                                 axis_name=axis_name)
      if nan_at_step is not None:
        poisoned = (state.step >= nan_at_step) & (state.step < nan_at_step + nan_num_steps)
        loss = loss * jnp.where(poisoned, jnp.nan, 1.0)
      return loss, aux

    (loss, (metrics, batch_stats, method_state)), grads = jax.value_and_grad(
        loss_of, has_aux=True)(state.params)
    if grad_reduce == "pmean":
      grads = jax.lax.pmean(grads, axis_name)
    if sync_batch_stats and axis_name is not None:
      batch_stats = jax.lax.pmean(batch_stats, axis_name)
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    extra = {}
    if clip_norm > 0:
      scale = jnp.minimum(1.0, clip_norm / jnp.maximum(grad_norm, 1e-30))
      grads = jax.tree.map(lambda g: g * scale.astype(g.dtype), grads)
      extra["grad_norm_clipped"] = optax.tree.norm(grads)

    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    if method.project is not None:  # e.g. unit-norm prototypes, a clamped logit scale
      params = method.project(params, method_state, state.step)
    method_state = method.update(params, batch_stats, method_state, state.step)
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
    new_state = state.replace(
        step=state.step + 1,
        params=keep(params, state.params),
        batch_stats=keep(batch_stats, state.batch_stats),
        opt_state=keep(opt_state, state.opt_state),
        method_state=keep(method_state, state.method_state),
        skips=jnp.where(finite, 0, state.skips + 1).astype(state.skips.dtype),
        total_skips=state.total_skips + (~finite).astype(state.total_skips.dtype))

    metrics = dict(metrics)
    if axis_name is not None:  # methods may report per-device values; report their mean
      metrics = jax.lax.pmean(metrics, axis_name)
    metrics.update(extra)
    metrics.update(loss=loss, grad_norm=grad_norm, lr=current_learning_rate(opt_state),
                   skipped=(~finite).astype(jnp.int32), skips=new_state.skips,
                   total_skips=new_state.total_skips)
    return new_state, metrics

  return step_fn
