"""On-device preprocessing inside the step: raw batches in, method batches out.

The data pipeline yields ``{"image": uint8 [B, H, W, C], "label": [B], "index": [B]}``; the step
turns it into ``{"views": {name: float32 [B, h, w, C]}, "label", "index"}`` with the view recipes of
``config.views`` (:mod:`ssl_jax.augment`), keyed per example by its global ``index``. Views may
have different output sizes (multi-crop: global views and smaller local crops); each stays its own
array, never concatenated with another. Before training (when the step is first traced, e.g. by
``Engine.init_state``) the views are checked against the method's ``VIEWS``
(:func:`ssl_jax.methods.common.check_views`), so a multi-crop method on a two-view recipe is
refused with an error naming ``--config.views.<name>``. Text batches
(token rows) pass through unchanged: a language method masks or drops out inside its loss, keyed
the same way.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax

from ssl_jax import augment

PyTree = Any


def make_view_preprocess(views: Mapping[str, str], *, method: str | None = None
                         ) -> Callable[[PyTree, jax.Array], PyTree]:
  """``preprocess(batch, key) -> batch`` making every view of ``views`` (name -> recipe); with
  ``method`` (a registered name) the views are checked against its ``VIEWS`` when traced."""
  views_fn = augment.make_views(dict(views))
  need = None
  if method is not None:
    from ssl_jax import methods  # pylint: disable=g-import-not-at-top
    need = getattr(methods.get_module(method), "VIEWS", None)

  def preprocess(batch, key):
    out = {k: v for k, v in batch.items() if k != "image"}
    out["views"] = views_fn(batch["image"], batch["index"], key)
    if method is not None:
      from ssl_jax.methods import common  # pylint: disable=g-import-not-at-top
      common.check_views({k: v.shape for k, v in out["views"].items()}, need, method=method)
    return out

  return preprocess


def make_preprocess(config) -> Callable[[PyTree, jax.Array], PyTree]:
  """The run's on-device preprocessing: views for image methods, identity for text methods."""
  from ssl_jax import methods  # pylint: disable=g-import-not-at-top
  if methods.modality(config.method) == "text":
    return lambda batch, key: batch
  return make_view_preprocess(config.views, method=config.method)
