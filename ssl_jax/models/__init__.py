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

Example:
  >>> from flax import nnx
  >>> enc = nnx.eval_shape(lambda: build_encoder("resnet50", rngs=nnx.Rngs(0), num_classes=10))
  >>> enc.out_features, enc.fc.kernel.shape
  (2048, (2048, 10))
"""

from __future__ import annotations

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
           "build_encoder", "conv2d", "encoder_names"]

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
