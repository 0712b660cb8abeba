"""Images: uint8 pixels read by dataset name, views made on device, probed by few-label accuracy.

The data pipeline yields ``{"image": uint8 [B, H, W, C], "label": [B], "index": [B]}``; the step
turns it into ``{"views": {name: float32 [B, h, w, C]}, "label", "index"}`` with the view recipes of
``config.views`` (:mod:`ssl_jax.augment`), keyed per example by its global ``index``. Evaluation
(:func:`ssl_jax.evaluate.runner.evaluate_images`) probes frozen features against the random-init
and raw-pixel baselines. See :mod:`ssl_jax.modalities` for the contract.

The model follows the data: the train split's ``image_shape`` is inspected once (recorded when it
is loaded) and every image method's encoder is built to fit it, in the one place they all build it
(:func:`ssl_jax.methods.common.build_encoder`): ``in_channels`` and a ViT's ``image_size`` come
from the data unless ``--config.encoder_kwargs.<key>`` sets them; an explicit ``in_channels`` that
differs from the data, or a size the encoder cannot take, is refused before training with the size
it needs and the key to set (:func:`ssl_jax.models.fit_encoder_kwargs`). Grayscale or RGB is
decided once per dataset, the same for every split (``--config.data.color=auto|rgb|grayscale``,
:mod:`ssl_jax.data.sources`).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax import augment, methods
from ssl_jax.data import load_source as load_dataset
from ssl_jax.data.budgets import labels_per_class
from ssl_jax.methods import common

PyTree = Any

EVALUATE = "ssl_jax.evaluate.runner:evaluate_images"
STEP_FLOPS = "ssl_jax.bench.flops:image_step_flops"
BENCH_CONFIG = "ssl_jax.bench.harness:image_bench_config"
SYNTHETIC_BENCH_DATA = True  # throughput does not depend on pixel values
NO_EMBEDDING_FIGURE = None


def load_source(config, split: str | None = None):
  """The images of ``config.dataset``'s ``split`` (default ``config.train_split``) with the run's
  ``data`` settings (``image_size``, ``on_corrupt``, ``color``: every split gets the same
  channels). Loading the train split records its image shape, which the method's encoder is
  fitted to (:func:`ssl_jax.methods.common.fitted_encoder_kwargs`: channels and a ViT's size
  follow the data)."""
  return load_dataset(config.dataset, split or config.train_split,
                      **common.image_source_kwargs(config))


def check_evaluable(config) -> None:
  """Refuses, before training writes anything, a run that its evaluation would refuse after
  training (:func:`ssl_jax.evaluate.runner.evaluate_images`, fine-tuning, the report), with the
  run's data settings:

  * the evaluation split ``config.test_split`` loads, and its images have the train split's shape;
  * every budget (``config.eval.budgets``, ``config.eval.finetune.budget``) is well formed and
    finds its labels in every class: the few-label protocol draws them per class without
    replacement and refuses a class with fewer (:mod:`ssl_jax.data.budgets`, the rule
    :func:`ssl_jax.evaluate.fewshot.label_draws` applies); ``"p%"`` and ``"all"`` take what each
    class has, so they always fit. Classes are ``0..max label`` over both splits, as evaluation
    counts them. Counted where a source holds its labels in memory (``digits``, ``npz:``,
    ``folder:``); a ``tfds:`` split is not read through for it.

  Raises:
    ValueError / FileNotFoundError: naming the split or budget and the ``--config`` key.
  """
  train = load_source(config)
  try:
    test = load_source(config, config.test_split)
  except (ValueError, FileNotFoundError) as e:
    raise type(e)(f"evaluation reads the split --config.test_split={config.test_split!r}, which "
                  f"does not load: {e}") from e
  if test.image_shape != train.image_shape:
    raise ValueError(f"{config.dataset}: split {config.test_split!r} has images of shape "
                     f"{test.image_shape}, split {config.train_split!r} {train.image_shape}; "
                     "evaluation needs one shape: set --config.data.image_size=N.")
  labels = [getattr(s, "labels", None) for s in (train, test)]
  if any(y is None for y in labels):
    return
  num_classes = 1 + max((int(y.max()) for y in labels if y.size), default=-1)
  counts = np.bincount(labels[0], minlength=num_classes)
  budgets = [("eval.budgets", b) for b in config.eval.budgets]
  budgets.append(("eval.finetune.budget", config.eval.finetune.budget))
  for key, budget in budgets:
    if budget == "all":
      continue
    try:
      want = labels_per_class(counts, budget)
    except ValueError as e:
      raise ValueError(f"--config.{key}: {e}") from None
    short = np.flatnonzero(want > counts)
    if short.size:
      names = train.class_names or tuple(str(c) for c in range(num_classes))
      listed = ", ".join(f"{names[c]!r} has {counts[c]}" for c in short[:5])
      raise ValueError(f"--config.{key} asks for {budget} labels per class, but split "
                       f"{config.train_split!r} of {config.dataset} has fewer in "
                       f"{short.size} class(es) ({listed}): lower --config.{key}, or add "
                       "images.")


def raw_batch(batch_size: int, image_shape) -> dict:
  """Shapes of a raw image batch of ``batch_size`` images of ``image_shape`` (H, W, C)."""
  return {"image": jax.ShapeDtypeStruct((batch_size, *image_shape), jnp.uint8),
          "label": jax.ShapeDtypeStruct((batch_size,), jnp.int32),
          "index": jax.ShapeDtypeStruct((batch_size,), jnp.int32)}


def example_batch(config, source) -> dict:
  """Shapes of one global batch of ``source``'s images."""
  return raw_batch(config.batch_size, source.image_shape)


def make_view_preprocess(views: Mapping[str, str], *, method: str | None = None
                         ) -> Callable[[PyTree, jax.Array], PyTree]:
  """``preprocess(batch, key) -> batch`` making every view of ``views`` (name -> recipe), each its
  own array (views of different sizes are never concatenated); with ``method`` (a registered
  name) the views are checked against its ``VIEWS`` when the step is first traced
  (:func:`ssl_jax.methods.common.check_views`), i.e. before training."""
  views_fn = augment.make_views(dict(views))
  need = None if method is None else getattr(methods.get_module(method), "VIEWS", None)

  def preprocess(batch, key):
    out = {k: v for k, v in batch.items() if k != "image"}
    out["views"] = views_fn(batch["image"], batch["index"], key)
    if method is not None:
      common.check_views({k: v.shape for k, v in out["views"].items()}, need, method=method)
    return out

  return preprocess


def make_preprocess(config) -> Callable[[PyTree, jax.Array], PyTree]:
  """The views of ``config.views``, made inside the step and checked against the method's
  ``VIEWS``."""
  return make_view_preprocess(config.views, method=config.method)


def view_sizes(config, host_batch) -> list[tuple[int, int]]:
  """The ``(height, width)`` of every view ``config.views`` makes of ``host_batch``'s images, in
  sorted name order (shapes only: nothing is computed)."""
  images = host_batch["image"][:1]
  pre = make_view_preprocess(config.views)
  out = jax.eval_shape(lambda im, ix: pre({"image": im, "index": ix}, jax.random.key(0)),
                       jax.ShapeDtypeStruct(images.shape, images.dtype),
                       jax.ShapeDtypeStruct((1,), np.int32))
  return [(int(v.shape[1]), int(v.shape[2])) for _, v in sorted(out["views"].items())]


def throughput(config, examples_per_s: float) -> dict:
  """No rate beside examples (images) per second."""
  del config, examples_per_s
  return {}
