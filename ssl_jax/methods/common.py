"""Pieces shared by method modules: views, momentum (EMA) teachers and their schedules."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

PyTree = Any


def two_views(batch) -> tuple[jax.Array, jax.Array]:
  """The two views of a batch, in sorted name order (``config.views`` has exactly two)."""
  views = batch["views"]
  if len(views) != 2:
    raise ValueError(f"This method takes exactly 2 views, got {sorted(views)}: "
                     "set config.views to two recipes.")
  a, b = sorted(views)
  return views[a], views[b]


def ema(target: PyTree, online: PyTree, momentum) -> PyTree:
  """``momentum * target + (1 - momentum) * online``, leaf by leaf (float32)."""
  return jax.tree.map(lambda t, o: momentum * t + (1.0 - momentum) * o, target, online)


def cosine_momentum(step, total_steps: int, base: float, final: float = 1.0):
  """BYOL's schedule: ``final - (final - base) * (cos(pi * step / total_steps) + 1) / 2``.

  Grill et al. 2020, section 3.2 (``tau = 1 - (1 - tau_base)(cos(pi k / K) + 1) / 2``); MoCo v3
  uses the same from 0.99 to 1 (Chen et al. 2021, section 4).

  >>> round(float(cosine_momentum(0, 100, 0.996)), 6), float(cosine_momentum(100, 100, 0.996))
  (0.996, 1.0)
  """
  if total_steps is None or total_steps <= 0:
    raise ValueError(f"cosine_momentum needs total_steps > 0, got {total_steps}; build the method "
                     "with make(config, total_steps=...).")
  progress = jnp.clip(jnp.asarray(step, jnp.float32) / total_steps, 0.0, 1.0)
  return final - (final - base) * (jnp.cos(math.pi * progress) + 1.0) / 2.0
