"""Flax NNX encoders and heads, and the encoder registry.

Every encoder built by :func:`build_encoder` follows one interface:

* ``encoder(x, *, train: bool) -> [B, D]`` with ``x`` a ``[B, H, W, C]`` float (NHWC) batch;
* ``encoder.out_features == D``: the width of the representation (before any classifier);
* with ``num_classes=K`` the encoder also owns a linear classifier: ``encoder(x, train=...)``
  returns ``[B, K]`` logits and ``encoder.features(x, train=...)`` the ``[B, D]`` representation
  (``features`` exists on every encoder, so probing code can always call it);
* parameters are float32, compute is in ``dtype``, normalization and softmax math in float32,
  outputs float32;
* ``train=True`` normalizes with batch statistics (synced over ``bn_axis_name`` when given) and
  updates BatchNorm running averages; ``train=False`` uses the running averages and updates nothing.

The registry is a plain dict (name -> constructor and its fixed arguments); nothing registers
itself on import.

The model follows the data: :func:`fit_encoder_kwargs` fills in an encoder's ``in_channels`` and
(ViT, flattening CNN) ``image_size`` from the data's image shape where the run's
``encoder_kwargs`` do not set them, refuses an explicit ``in_channels`` that differs from the data,
and refuses before training, naming the size it needs and the key to set, an image size the
encoder cannot take (a ViT's side must be a multiple of its patch; a CNN's pools must leave a
pixel; a ResNet takes any size). An explicit ``image_size`` is kept as given: a ViT's may
rightly differ from the stored images' (224 crops of 256-pixel images; its position embeddings are
interpolated to the grid it sees).

Example:
  >>> from flax import nnx
  >>> enc = nnx.eval_shape(lambda: build_encoder("resnet50", rngs=nnx.Rngs(0), num_classes=10))
  >>> enc.out_features, enc.fc.kernel.shape
  (2048, (2048, 10))
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

import jax.numpy as jnp
from flax import nnx

from ssl_jax.models.cnn import SmallCNN
from ssl_jax.models.conv import Conv, conv2d
from ssl_jax.models.dense import Linear
from ssl_jax.models.heads import MLPHead
from ssl_jax.models.resnet import ResNet
from ssl_jax.models.vit import VisionTransformer

__all__ = ["Conv", "Linear", "MLPHead", "ResNet", "SmallCNN", "VisionTransformer",
           "build_encoder", "conv2d", "encoder_names", "fit_encoder_kwargs"]

# name -> (constructor, fixed architecture arguments, overridable defaults).
_ENCODERS: dict[str, tuple[Callable[..., nnx.Module], dict[str, Any], dict[str, Any]]] = {
    "resnet18": (ResNet, dict(stage_sizes=(2, 2, 2, 2), block="basic"), {}),
    "resnet34": (ResNet, dict(stage_sizes=(3, 4, 6, 3), block="basic"), {}),
    "resnet50": (ResNet, dict(stage_sizes=(3, 4, 6, 3), block="bottleneck"), {}),
    # CPU-test size: widths 16/32/64/128, one basic block per stage, CIFAR stem by default.
    "resnet_tiny": (ResNet, dict(stage_sizes=(1, 1, 1, 1), block="basic"),
                    dict(width=16, stem="cifar")),
    "vit_tiny": (VisionTransformer, dict(dim=192, depth=12, num_heads=3), {}),
    "vit_small": (VisionTransformer, dict(dim=384, depth=12, num_heads=6), {}),
    "vit_base": (VisionTransformer, dict(dim=768, depth=12, num_heads=12), {}),
    # CPU-test size: 2 blocks of width 32, 4x4 patches of a 16x16 image.
    "vit_micro": (VisionTransformer, dict(dim=32, depth=2, num_heads=2),
                  dict(patch_size=4, image_size=16)),
    "cnn_small": (SmallCNN, {}, {}),
    # The main job's digits encoder (see ssl_jax/models/cnn.py for how it was chosen).
    "cnn_digits": (SmallCNN, {}, dict(widths=(32, 64, 128), strides=(1, 1, 1), pool_after=(1,),
                                      head="flatten", fc_features=128, image_size=8)),
}

_COMMON = ("rngs", "bn_axis_name", "dtype")


def encoder_names() -> list[str]:
  """Sorted names accepted by :func:`build_encoder`."""
  return sorted(_ENCODERS)


def _accepted(ctor: Callable[..., nnx.Module]) -> set[str]:
  params = inspect.signature(ctor.__init__).parameters
  return {n for n, p in params.items()
          if n != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}


def encoder_kwargs(name: str) -> list[str]:
  """The keyword arguments :func:`build_encoder` accepts for ``name`` beyond the common ones."""
  ctor, fixed, _ = _lookup(name)
  return sorted(_accepted(ctor) - set(fixed) - set(_COMMON))


def _lookup(name: str):
  if name not in _ENCODERS:
    raise ValueError(f"Unknown encoder {name!r}. Valid encoders: {', '.join(encoder_names())}.")
  return _ENCODERS[name]


def build_encoder(name: str, *, rngs: nnx.Rngs, bn_axis_name: str | None = None,
                  dtype: Any = jnp.float32, **kwargs: Any) -> nnx.Module:
  """Builds the encoder ``name`` (see :func:`encoder_names`).

  Args:
    name: registry name, e.g. ``"resnet50"``, ``"vit_small"``, ``"cnn_small"``.
    rngs: random number generators for the initial parameters.
    bn_axis_name: mapped axis over which BatchNorm statistics are synced (ignored by ViTs, which
      have no BatchNorm).
    dtype: compute dtype (parameters stay float32).
    **kwargs: architecture options of the encoder's constructor (:class:`ResNet`,
      :class:`VisionTransformer`, :class:`SmallCNN`), e.g. ``stem="cifar"``, ``num_classes=10``,
      ``patch_size=8``, ``remat=True``; see :func:`encoder_kwargs`.

  Raises:
    ValueError: for an unknown name, an unknown keyword argument (the message lists the valid
      ones), or an invalid option value.
  """
  ctor, fixed, defaults = _lookup(name)
  valid = encoder_kwargs(name)
  unknown = sorted(set(kwargs) - set(valid))
  if unknown:
    raise ValueError(f"Unknown argument(s) {', '.join(unknown)} for encoder {name!r}. "
                     f"Valid: {', '.join(valid)}.")
  args = {**defaults, **kwargs, **fixed, "dtype": dtype, "rngs": rngs}
  if "bn_axis_name" in _accepted(ctor):
    args["bn_axis_name"] = bn_axis_name
  return ctor(**args)


def fit_encoder_kwargs(name: str, kwargs: dict[str, Any], image_shape,
                       *, data: str = "the data") -> dict[str, Any]:
  """``kwargs`` for :func:`build_encoder` fitted to images of ``image_shape`` ``(H, W, C)``.

  ``in_channels`` and ``image_size`` (the side, for encoders that take them) come from the data
  unless ``kwargs`` sets them; then the encoder is checked to take such images (see the module
  docstring).

  Args:
    name: registry name.
    kwargs: the run's ``encoder_kwargs``.
    image_shape: ``(H, W, C)`` of the images.
    data: how error messages name the data (e.g. ``"folder:imgs (train split)"``).

  Raises:
    ValueError: an explicit ``in_channels`` that is not ``C``, or a size the encoder cannot take;
      each names the size it needs and the ``--config.`` key that fixes it.

  >>> fit_encoder_kwargs("vit_micro", {}, (8, 8, 1))
  {'in_channels': 1, 'image_size': 8}
  """
  h, w, c = (int(d) for d in image_shape)
  accepted = set(encoder_kwargs(name))
  out = dict(kwargs)
  if "in_channels" in accepted:
    if "in_channels" in kwargs and kwargs["in_channels"] != c:
      raise ValueError(
          f"--config.encoder_kwargs.in_channels={kwargs['in_channels']} but {data} has {c} "
          f"channel(s) (images {h}x{w}x{c}): drop the key (the encoder follows the data) or set "
          f"--config.data.color={'rgb' if kwargs['in_channels'] == 3 else 'grayscale'} to convert "
          f"the images")
    out.setdefault("in_channels", c)
  if "image_size" in accepted:
    out.setdefault("image_size", min(h, w))
  _check_fits(name, _frozen(out), (h, w, c), data)
  return out


def _frozen(kwargs: dict[str, Any]) -> tuple:
  """``kwargs`` as a hashable key (lists become tuples)."""
  freeze = lambda v: tuple(map(freeze, v)) if isinstance(v, (list, tuple)) else v
  return tuple(sorted((k, freeze(v)) for k, v in kwargs.items()))


@functools.lru_cache(maxsize=64)
def _check_fits(name: str, kwargs: tuple, shape: tuple[int, int, int], data: str) -> None:
  """Refuses images of ``shape`` that encoder ``name`` with ``kwargs`` cannot take: a ViT's
  patch grid, then the constructor's own checks, built abstractly (no parameter is computed)."""
  h, w, c = shape
  args = dict(kwargs)
  ctor, _, defaults = _lookup(name)
  if ctor is VisionTransformer:
    p = args.get("patch_size", defaults.get("patch_size", 16))
    side = args.get("image_size", min(h, w))
    if h % p or w % p or side % p:
      fit = max(p, round(min(h, w) / p) * p)
      raise ValueError(
          f"encoder {name!r} cuts images into {p}x{p} patches: it needs an image side that is a "
          f"multiple of {p}, but {data} has {h}x{w} images (encoder image_size={side}); set "
          f"--config.data.image_size={fit} or --config.encoder_kwargs.patch_size=<a divisor of "
          f"{min(h, w)}>")
  if ctor is ResNet or ctor is VisionTransformer:
    return  # a ResNet takes any size (SAME padding); the ViT's grid is checked above
  try:  # the constructor checks what it needs of the size (SmallCNN's pools)
    nnx.eval_shape(lambda: build_encoder(name, rngs=nnx.Rngs(0), **args))
  except (ValueError, TypeError) as e:
    raise ValueError(
        f"encoder {name!r} (encoder_kwargs {args}) cannot take {data}'s {h}x{w}x{c} images: {e} "
        f"(resize them with --config.data.image_size=N, or choose another "
        f"--config.encoder=...)") from e
