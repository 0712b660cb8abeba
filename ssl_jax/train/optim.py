"""Optax optimizers and schedules built from a config.

``build_optimizer(cfg, *, batch_size, total_steps, steps_per_epoch)`` returns the gradient
transformation and its learning-rate schedule. Conventions (SimCLR/BYOL/MoCo recipes):

* Peak learning rate ``lr = base_lr * scale(batch_size)`` with ``lr_scaling`` ``"linear"``
  (``B / 256``, Goyal et al. 2017, SimCLR appendix B.9), ``"sqrt"`` (``sqrt(B)``, SimCLR's LARS
  variant for small batches is ``0.075 * sqrt(B)``) or ``"none"``. ``base_batch`` is 256.
* Linear warmup from 0 to the peak, then cosine decay to ``final_lr_fraction * peak``.
* Weight decay and the LARS trust ratio skip biases and normalization parameters (every leaf with
  ``ndim <= 1``) and ViT position embeddings / class tokens, as SimCLR, BYOL and MoCo v3 do.
* Gradient clipping (``optimizer.clip_norm``) is applied by the train step, not here, so the step
  can log the gradient norm before and after it (:mod:`ssl_jax.train.step`).
* The learning rate is injected as a hyperparameter so the value actually used is logged.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import optax

OPTIMIZERS = ("sgd", "adamw", "lars", "lamb")
LR_SCALINGS = ("linear", "sqrt", "none")
_NO_DECAY_NAMES = ("pos_embed", "pos_embedding", "cls_token", "class_token")


def decay_mask(params: Any) -> Any:
  """True for leaves that get weight decay / LARS adaptation: weights, not biases or norms."""

  def keep(path, leaf) -> bool:
    names = [str(getattr(k, "key", getattr(k, "name", k))) for k in path]
    if any(n in _NO_DECAY_NAMES for n in names):
      return False
    return leaf.ndim > 1

  return jax.tree_util.tree_map_with_path(keep, params)


def peak_learning_rate(base_lr: float, batch_size: int, scaling: str, base_batch: int = 256):
  if scaling == "linear":
    return base_lr * batch_size / base_batch
  if scaling == "sqrt":
    return base_lr * math.sqrt(batch_size)
  if scaling == "none":
    return base_lr
  raise ValueError(f"optimizer.lr_scaling={scaling!r}; valid: {', '.join(LR_SCALINGS)}.")


def make_schedule(peak: float, *, total_steps: int, warmup_steps: int,
                  final_lr_fraction: float = 0.0) -> Callable[[Any], Any]:
  """Linear warmup to ``peak`` over ``warmup_steps``, then cosine decay until ``total_steps``."""
  warmup_steps = min(warmup_steps, max(total_steps - 1, 0))
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=peak, warmup_steps=warmup_steps,
      decay_steps=max(total_steps, warmup_steps + 1), end_value=peak * final_lr_fraction)


def build_optimizer(cfg, *, batch_size: int, total_steps: int, steps_per_epoch: int):
  """Returns ``(tx, schedule)`` for the ``optimizer`` config block."""
  name = cfg.name
  if name not in OPTIMIZERS:
    raise ValueError(f"optimizer.name={name!r}; valid: {', '.join(OPTIMIZERS)}.")
  peak = peak_learning_rate(cfg.lr, batch_size, cfg.lr_scaling, cfg.base_batch)
  warmup = cfg.warmup_steps if cfg.warmup_steps >= 0 else round(cfg.warmup_epochs * steps_per_epoch)
  schedule = make_schedule(peak, total_steps=total_steps, warmup_steps=warmup,
                           final_lr_fraction=cfg.final_lr_fraction)

  def factory(learning_rate):
    mask = decay_mask if cfg.exclude_bias_and_norm else None
    if name == "sgd":
      parts = []
      if cfg.weight_decay:
        parts.append(optax.add_decayed_weights(cfg.weight_decay, mask=mask))
      parts.append(optax.sgd(learning_rate, momentum=cfg.momentum or None, nesterov=cfg.nesterov))
      return optax.chain(*parts)
    if name == "adamw":
      return optax.adamw(learning_rate, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                         weight_decay=cfg.weight_decay, mask=mask)
    if name == "lars":
      return optax.lars(learning_rate, weight_decay=cfg.weight_decay,
                        weight_decay_mask=mask if mask else True,
                        trust_ratio_mask=mask if mask else True,
                        trust_coefficient=cfg.trust_coefficient, momentum=cfg.momentum,
                        nesterov=cfg.nesterov)
    return optax.lamb(learning_rate, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                      weight_decay=cfg.weight_decay, mask=mask)

  return optax.inject_hyperparams(factory)(learning_rate=schedule), schedule


def current_learning_rate(opt_state: Any) -> Any:
  """The learning rate the last update used (read from the injected hyperparameters)."""
  is_injected = lambda x: hasattr(x, "hyperparams") and "learning_rate" in x.hyperparams
  for s in jax.tree.leaves(opt_state, is_leaf=is_injected):
    if is_injected(s):
      return s.hyperparams["learning_rate"]
  raise ValueError("optimizer state has no injected learning rate "
                   "(build it with optax.inject_hyperparams)")
