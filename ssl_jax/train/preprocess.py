"""On-device preprocessing inside the step: raw batches in, method batches out.

What a batch becomes is its modality's choice (:mod:`ssl_jax.modalities`): images become the
views of ``config.views`` (:func:`ssl_jax.modalities.image.make_view_preprocess`, re-exported
here; they are checked against the method's ``VIEWS`` when the step is first traced, before
training), token rows pass through unchanged (a language method masks or drops out inside its loss).
Every random choice is keyed per example by its global ``index``.
"""

from __future__ import annotations

from typing import Any, Callable

import jax

from ssl_jax import modalities
from ssl_jax.modalities.image import make_view_preprocess

PyTree = Any

__all__ = ["make_preprocess", "make_view_preprocess"]


def make_preprocess(config) -> Callable[[PyTree, jax.Array], PyTree]:
  """The run's on-device preprocessing: its modality's (views for images, identity for text)."""
  return modalities.of(config).make_preprocess(config)
