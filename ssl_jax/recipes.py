"""The pieces that the configs of ``experiments/`` share.

Experiment files are loaded by path (``--config experiments/byol_imagenet.py``), so they cannot
import one another; what several of them repeat lives here instead:

* normalization constants and the ``normalize(...)`` recipe strings of each dataset;
* view-recipe builders (strings for :mod:`ssl_jax.augment`) of the papers' augmentations:
  :func:`byol_view` / :func:`byol_views` (BYOL's table 6, also used by Barlow Twins, VICReg,
  NNCLR and solo-learn's CIFAR recipes), :func:`aug_plus` (MoCo v2's "aug+", also SimSiam's),
  :func:`simclr_view` (SimCLR's CIFAR-10 view) and :func:`moco_v3_views`;
* :func:`cifar10_config` and :func:`imagenet_config`: :func:`ssl_jax.config.base_config` with the
  settings every recipe on that dataset uses (data, encoder, eval preprocessing, compute dtype,
  log / checkpoint intervals, evaluation budgets);
* :func:`runlocal`: the ``:runlocal`` shrink of a recipe into a seconds-long smoke check;
* :func:`digits_config` and :func:`runlocal_digits`: the same for the CPU-sized digits runs, which
  start from the package's tuned digits recipe (:func:`ssl_jax.config.default_config`).

An experiment file keeps its paper citations, the method's hyperparameters, the optimizer and
whatever else is its own, and overrides the few base settings it does differently.
"""

from __future__ import annotations

import ml_collections

from ssl_jax.config import base_config, default_config

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_JITTER_02 = "color_jitter(brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1, p=0.8)"
_JITTER_04 = "color_jitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, p=0.8)"


def normalize(mean, std) -> str:
  """The ``normalize`` op of a recipe with per-channel ``mean`` and ``std``."""
  return f"normalize(mean={mean}, std={std})"


CIFAR_NORMALIZE = normalize(CIFAR_MEAN, CIFAR_STD)
IMAGENET_NORMALIZE = normalize(IMAGENET_MEAN, IMAGENET_STD)


def imagenet_eval_preprocess(size: int) -> str:
  """Evaluation preprocessing of ImageNet images: center crop to ``size``, then normalize."""
  return f"center_crop(size={size})|{IMAGENET_NORMALIZE}"


def byol_view(size: int, *, blur_p: float, solarize_p: float, normalize: str,
              min_scale: float = 0.08) -> str:
  """One of BYOL's views (Grill et al. 2020, table 6) at ``size`` pixels.

  Random resized crop (area ``min_scale``-1), flip, colour jitter (0.4, 0.4, 0.2, 0.1) with p=0.8,
  grayscale p=0.2, Gaussian blur with p=``blur_p`` (left out when ``blur_p`` is 0, as the CIFAR
  recipes do), solarization with p=``solarize_p``, then ``normalize``.

  >>> byol_view(32, blur_p=0.0, solarize_p=0.2, normalize="normalize(mean=0.5, std=0.5)").split("|")
  ['random_resized_crop(size=32, scale=(0.08, 1.0))', 'flip_lr(p=0.5)', 'color_jitter(...)',
   'grayscale(p=0.2)', 'solarize(p=0.2)', 'normalize(mean=0.5, std=0.5)']
  """
  ops = [f"random_resized_crop(size={size}, scale=({min_scale}, 1.0))", "flip_lr(p=0.5)",
         _JITTER_02, "grayscale(p=0.2)"]
  if blur_p:
    ops.append(f"gaussian_blur(p={blur_p}, sigma=(0.1, 2.0))")
  ops += [f"solarize(p={solarize_p})", normalize]
  return "|".join(ops)


def byol_views(size: int, *, blur: bool, normalize: str) -> tuple[str, str]:
  """BYOL's asymmetric pair (table 6): blur p=1.0 / 0.1 (none when ``blur`` is false) and
  solarization p=0.0 / 0.2 on views ``a`` / ``b``."""
  return (byol_view(size, blur_p=1.0 if blur else 0.0, solarize_p=0.0, normalize=normalize),
          byol_view(size, blur_p=0.1 if blur else 0.0, solarize_p=0.2, normalize=normalize))


def aug_plus(size: int, *, blur_p: float, normalize: str) -> str:
  """MoCo v2's "aug+" (official ``main_moco.py --aug-plus``; SimSiam's views too) at ``size``.

  Random resized crop (area 0.2-1), colour jitter (0.4, 0.4, 0.4, 0.1) with p=0.8, grayscale
  p=0.2, Gaussian blur with p=``blur_p`` (0.5 in the paper; left out when 0), flip, ``normalize``.
  """
  ops = [f"random_resized_crop(size={size}, scale=(0.2, 1.0))", _JITTER_04, "grayscale(p=0.2)"]
  if blur_p:
    ops.append(f"gaussian_blur(p={blur_p}, sigma=(0.1, 2.0))")
  ops += ["flip_lr(p=0.5)", normalize]
  return "|".join(ops)


def simclr_view(size: int, *, normalize: str) -> str:
  """SimCLR's CIFAR-10 view (Chen et al. 2020, appendix B.9): random resized crop (area 0.08-1),
  flip, colour jitter of strength 0.5 with p=0.8, grayscale p=0.2, no blur; then ``normalize``."""
  return "|".join([f"random_resized_crop(size={size}, scale=(0.08, 1.0))", "flip_lr(p=0.5)",
                   _JITTER_04, "grayscale(p=0.2)", normalize])


def moco_v3_views(size: int, *, min_scale: float, blur: bool, normalize: str) -> tuple[str, str]:
  """BYOL's asymmetric pair as MoCo v3's ``main_moco.py`` orders it (flip last; colour jitter not
  strengthened), crop area ``min_scale``-1: blur p=1.0 / 0.1 (none when ``blur`` is false) and
  solarization p=0.0 / 0.2 on views ``a`` / ``b``."""
  common = (f"random_resized_crop(size={size}, scale=({min_scale}, 1.0))|{_JITTER_02}"
            "|grayscale(p=0.2)")
  blur_a = "|gaussian_blur(p=1.0, sigma=(0.1, 2.0))" if blur else ""
  blur_b = "|gaussian_blur(p=0.1, sigma=(0.1, 2.0))" if blur else ""
  return (f"{common}{blur_a}|flip_lr(p=0.5)|{normalize}",
          f"{common}{blur_b}|solarize(p=0.2)|flip_lr(p=0.5)|{normalize}")


def cifar10_config(method: str, *, normalize: str = CIFAR_NORMALIZE) -> ml_collections.ConfigDict:
  """:func:`~ssl_jax.config.base_config` for ``method`` on ``tfds:cifar10``.

  Sets what every CIFAR-10 recipe shares: train / test splits, ResNet-18 with the CIFAR stem (3x3
  conv, no max-pool), ``normalize`` as evaluation preprocessing, bfloat16 compute, a checkpoint
  every 5000 steps, a log line every 50, evaluation budgets 1, 5, 10, 1%, 10% and all labels with
  batch 1024. The caller sets the method's hyperparameters, views, batch size, epochs and
  optimizer.
  """
  c = base_config()
  c.method = method
  c.dataset = "tfds:cifar10"
  c.train_split, c.test_split = "train", "test"
  c.encoder = "resnet18"
  c.encoder_kwargs.stem = "cifar"
  c.eval_preprocess = normalize
  c.compute_dtype = "bfloat16"
  c.checkpoint.every_steps = 5000
  c.log.every_steps = 50
  c.eval.budgets = (1, 5, 10, "1%", "10%", "all")
  c.eval.batch_size = 1024
  return c


def imagenet_config(method: str, *, stem: str | None = "imagenet") -> ml_collections.ConfigDict:
  """:func:`~ssl_jax.config.base_config` for ``method`` on ``tfds:imagenet2012``.

  Sets what the ImageNet recipes share: train / validation splits, images stored at 256x256
  (``data.image_size``: shorter side resized to 256, then a center crop, so that batches have one
  shape), ResNet-50 with ``encoder_kwargs.stem=stem`` (not set when ``None``: the encoder's
  default), evaluation on the center 224x224 crop, bfloat16 compute, a checkpoint every 5000
  steps, a log line every 100, evaluation budgets 1, 5, 1%, 10% and all labels with batch 1024.
  The caller sets the method's hyperparameters, views, batch size, epochs and optimizer.
  """
  c = base_config()
  c.method = method
  c.dataset = "tfds:imagenet2012"
  c.train_split, c.test_split = "train", "validation"
  c.data.image_size = 256
  c.encoder = "resnet50"
  if stem is not None:
    c.encoder_kwargs.stem = stem
  c.eval_preprocess = imagenet_eval_preprocess(224)
  c.compute_dtype = "bfloat16"
  c.checkpoint.every_steps = 5000
  c.log.every_steps = 100
  c.eval.budgets = (1, 5, "1%", "10%", "all")
  c.eval.batch_size = 1024
  return c


def runlocal(config: ml_collections.ConfigDict, *, encoder: str = "resnet_tiny",
             **method_kwargs) -> ml_collections.ConfigDict:
  """Shrinks ``config`` in place (and returns it) to a smoke check of a few seconds on a CPU.

  ``encoder`` (default ``resnet_tiny``), float32 compute, batch 16, 2 steps, evaluation budgets 1
  and all labels with 2 draws and batch 64; ``method_kwargs`` update the method's hyperparameters
  (small head widths, a short queue). Image sizes and views are the caller's.
  """
  config.encoder = encoder
  config.compute_dtype = "float32"
  config.batch_size = 16
  config.total_steps = 2
  config.method_kwargs.update(method_kwargs)
  config.eval.budgets = (1, "all")
  config.eval.num_draws = 2
  config.eval.batch_size = 64
  return config


def digits_config(method: str, *, total_steps: int, **method_kwargs) -> ml_collections.ConfigDict:
  """The package's digits recipe (:func:`ssl_jax.config.default_config`: ``cnn_digits``, the
  affine/noise/erasing views, AdamW at 2e-3 with warmup and cosine decay, batch 256) for
  ``method``, run for ``total_steps``, with ``method_kwargs`` over the method's defaults (the rest
  are filled in by :func:`ssl_jax.config.load_config`).

  The ``experiments/<method>_digits.py`` recipes set each method's knobs with it, tuned on a
  validation split inside the digits train set (``--config.train_split=fit
  --config.test_split=val``), never on the test split; each file's docstring records the
  variants tried and their 1-label linear-probe accuracy on that split (mean of 5 draws).
  """
  c = default_config()
  c.method = method
  c.method_kwargs = ml_collections.ConfigDict(method_kwargs)
  c.total_steps = total_steps
  return c


def runlocal_digits(config: ml_collections.ConfigDict,
                    **method_kwargs) -> ml_collections.ConfigDict:
  """Shrinks a digits ``config`` in place (and returns it) to a smoke check of seconds: 4 steps
  of 64 examples, evaluation at 1 and all labels with 2 draws; ``method_kwargs`` update the
  method's hyperparameters (small heads)."""
  config.total_steps = 4
  config.batch_size = 64
  config.method_kwargs.update(method_kwargs)
  config.eval.num_draws = 2
  config.eval.budgets = (1, "all")
  return config


def text_config(method: str, *, dataset: str, encoder: str, total_steps: int, batch_size: int,
                lr: float, seq_len: int = 128, tokenizer: str = "bytes", warmup_steps: int = 100,
                weight_decay: float = 0.01, **method_kwargs) -> ml_collections.ConfigDict:
  """A language-model recipe: ``method`` on the corpus ``dataset`` with ``encoder`` (a text
  Transformer), AdamW (beta2 0.98 as RoBERTa; no decay on biases and LayerNorm), linear warmup and
  cosine decay, gradient clipping at 1.0, no learning-rate scaling with the batch (the papers give
  the rate for their batch). Evaluation (:mod:`ssl_jax.evaluate.text`) probes encoders on the
  docstring task with 1/5/10/all labels per class."""
  c = base_config()
  c.method = method
  c.method_kwargs = ml_collections.ConfigDict(method_kwargs)
  c.dataset = dataset
  c.train_split, c.test_split = "train", "validation"
  c.encoder = encoder
  c.text.tokenizer = tokenizer
  c.text.seq_len = seq_len
  c.batch_size = batch_size
  c.total_steps = total_steps
  c.optimizer.update(name="adamw", lr=lr, lr_scaling="none", weight_decay=weight_decay,
                     b1=0.9, b2=0.98, eps=1e-6, warmup_steps=warmup_steps, clip_norm=1.0)
  c.checkpoint.every_steps = max(total_steps // 4, 1)
  c.log.every_steps = 10
  return c


def runlocal_text(config: ml_collections.ConfigDict, *, encoder: str) -> ml_collections.ConfigDict:
  """Shrinks a text ``config`` to a smoke check of seconds on a CPU: a tiny encoder, rows of 32
  tokens, batch 16, 2 steps, evaluation with 1 and all labels and 2 draws."""
  config.encoder = encoder
  config.encoder_kwargs = ml_collections.ConfigDict(dict(max_len=64))
  config.compute_dtype = "float32"
  config.text.seq_len = 32
  config.batch_size = 16
  config.total_steps = 2
  config.optimizer.warmup_steps = 1
  config.eval.budgets = (1, "all")
  config.eval.num_draws = 2
  config.eval.batch_size = 64
  return config
