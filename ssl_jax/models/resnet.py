"""ResNets (He et al., 2016, "Deep Residual Learning for Image Recognition", arXiv:1512.03385).

Layout of torchvision's ResNet v1.5 (the stride of a bottleneck block is on its 3x3 conv, not on
the first 1x1), which is what SimCLR, BYOL, MoCo, SimSiam, Barlow Twins and VICReg report. Explicit
torchvision padding (``kernel // 2`` on both sides), bias-free convolutions initialised with
``kaiming_normal(fan_out)``, BatchNorm with momentum 0.9 in Flax terms (0.1 in PyTorch terms) and
epsilon 1e-5. Parameter counts match torchvision: ResNet-18 11,689,512 and ResNet-50 25,557,032
with the 1000-class classifier.

``stem="cifar"`` replaces the 7x7 stride-2 convolution and the max-pool by one 3x3 stride-1
convolution, the usual variant for 32x32 inputs (SimCLR's CIFAR-10 experiments, solo-learn,
lightly).

Dtypes: parameters are float32; convolutions and the classifier compute in
``dtype``; BatchNorm statistics and normalization are computed in float32 and cast back to
``dtype``; the pooled features and logits are returned in float32.
"""

from __future__ import annotations

from typing import Literal, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from ssl_jax.models.conv import Conv, Impl
from ssl_jax.models.norm import BatchNorm

STEMS = ("imagenet", "cifar")
BLOCKS = ("basic", "bottleneck")

_conv_init = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")  # kaiming_normal_


class _Norm(nnx.Module):
  """BatchNorm in float32 (batch statistics in train mode, running averages otherwise)."""

  def __init__(self, features: int, *, zero_init: bool, momentum: float, epsilon: float,
               axis_name: str | None, rngs: nnx.Rngs):
    self.bn = BatchNorm(
        features, momentum=momentum, epsilon=epsilon, dtype=jnp.float32, axis_name=axis_name,
        scale_init=nnx.initializers.zeros_init() if zero_init else nnx.initializers.ones_init(),
        rngs=rngs)

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    return self.bn(x, use_running_average=not train).astype(x.dtype)


class BasicBlock(nnx.Module):
  """Two 3x3 convolutions (ResNet-18/34); ``expansion = 1``.

  ``[B, H, W, in_features] -> [B, ceil(H / stride), ceil(W / stride), features]``.
  """

  expansion = 1

  def __init__(self, in_features: int, features: int, *, stride: int, zero_init_residual: bool,
               norm_kwargs: dict, dtype: jnp.dtype, conv_impl: Impl | None, rngs: nnx.Rngs):
    def conv(cin, cout, k, s):
      return Conv(cin, cout, k, s, padding=k // 2, use_bias=False, dtype=dtype,
                  kernel_init=_conv_init, impl=conv_impl, rngs=rngs)

    self.conv1 = conv(in_features, features, 3, stride)
    self.bn1 = _Norm(features, zero_init=False, rngs=rngs, **norm_kwargs)
    self.conv2 = conv(features, features, 3, 1)
    self.bn2 = _Norm(features, zero_init=zero_init_residual, rngs=rngs, **norm_kwargs)
    self.shortcut: nnx.Module | None = nnx.data(None)
    self.shortcut_bn: nnx.Module | None = nnx.data(None)
    if stride != 1 or in_features != features:
      self.shortcut = conv(in_features, features, 1, stride)
      self.shortcut_bn = _Norm(features, zero_init=False, rngs=rngs, **norm_kwargs)

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    y = jax.nn.relu(self.bn1(self.conv1(x), train=train))
    y = self.bn2(self.conv2(y), train=train)
    if self.shortcut is not None:
      x = self.shortcut_bn(self.shortcut(x), train=train)
    return jax.nn.relu(x + y)


class Bottleneck(nnx.Module):
  """1x1 reduce, 3x3 (strided, v1.5), 1x1 expand (ResNet-50); ``expansion = 4``.

  ``[B, H, W, in_features] -> [B, ceil(H / stride), ceil(W / stride), 4 * features]``.
  """

  expansion = 4

  def __init__(self, in_features: int, features: int, *, stride: int, zero_init_residual: bool,
               norm_kwargs: dict, dtype: jnp.dtype, conv_impl: Impl | None, rngs: nnx.Rngs):
    def conv(cin, cout, k, s):
      return Conv(cin, cout, k, s, padding=k // 2, use_bias=False, dtype=dtype,
                  kernel_init=_conv_init, impl=conv_impl, rngs=rngs)

    out = features * self.expansion
    self.conv1 = conv(in_features, features, 1, 1)
    self.bn1 = _Norm(features, zero_init=False, rngs=rngs, **norm_kwargs)
    self.conv2 = conv(features, features, 3, stride)
    self.bn2 = _Norm(features, zero_init=False, rngs=rngs, **norm_kwargs)
    self.conv3 = conv(features, out, 1, 1)
    self.bn3 = _Norm(out, zero_init=zero_init_residual, rngs=rngs, **norm_kwargs)
    self.shortcut: nnx.Module | None = nnx.data(None)
    self.shortcut_bn: nnx.Module | None = nnx.data(None)
    if stride != 1 or in_features != out:
      self.shortcut = conv(in_features, out, 1, stride)
      self.shortcut_bn = _Norm(out, zero_init=False, rngs=rngs, **norm_kwargs)

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    y = jax.nn.relu(self.bn1(self.conv1(x), train=train))
    y = jax.nn.relu(self.bn2(self.conv2(y), train=train))
    y = self.bn3(self.conv3(y), train=train)
    if self.shortcut is not None:
      x = self.shortcut_bn(self.shortcut(x), train=train)
    return jax.nn.relu(x + y)


class ResNet(nnx.Module):
  """ResNet encoder: ``[B, H, W, C] -> [B, out_features]`` (or ``[B, num_classes]`` logits).

  Args:
    stage_sizes: blocks per stage, e.g. ``(2, 2, 2, 2)`` for ResNet-18, ``(3, 4, 6, 3)`` for 34/50.
    block: ``"basic"`` or ``"bottleneck"``.
    width: channels of the first stage; stage ``i`` has ``width * 2**i`` (times 4 at the output of
      a bottleneck block). ``out_features = width * 2**(len(stage_sizes) - 1) * expansion``.
    stem: ``"imagenet"`` (7x7/2 conv + 3x3/2 max-pool) or ``"cifar"`` (3x3/1 conv, no pool).
    in_channels: input channels ``C``.
    num_classes: if set, a linear classifier on the pooled features; ``__call__`` then returns
      logits and :meth:`features` the pooled features.
    zero_init_residual: zero-initialise the last BatchNorm scale of each block (Goyal et al.,
      2017, arXiv:1706.02677), so every block starts as the identity.
    bn_axis_name: mapped axis over which BatchNorm statistics are synced (``None``: local batch).
    bn_momentum: running-average decay (Flax convention; PyTorch's 0.1 is 0.9 here).
    bn_epsilon: BatchNorm epsilon.
    dtype: compute dtype (parameters are always float32).
    conv_impl: backward implementation of the convolutions (see :mod:`ssl_jax.models.conv`).
    remat: rematerialize each residual block in the backward pass (saves activation memory).
    rngs: random number generators.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from flax import nnx
    >>> net = nnx.eval_shape(lambda: ResNet((3, 4, 6, 3), "bottleneck", rngs=nnx.Rngs(0)))
    >>> net.out_features
    2048
  """

  def __init__(self, stage_sizes: Sequence[int], block: Literal["basic", "bottleneck"] = "basic",
               *, width: int = 64, stem: Literal["imagenet", "cifar"] = "imagenet",
               in_channels: int = 3, num_classes: int | None = None,
               zero_init_residual: bool = False, bn_axis_name: str | None = None,
               bn_momentum: float = 0.9, bn_epsilon: float = 1e-5,
               dtype: jnp.dtype = jnp.float32, conv_impl: Impl | None = None,
               remat: bool = False, rngs: nnx.Rngs):
    if block not in BLOCKS:
      raise ValueError(f"Unknown block {block!r}; valid: {', '.join(BLOCKS)}.")
    if stem not in STEMS:
      raise ValueError(f"Unknown stem {stem!r}; valid: {', '.join(STEMS)}.")
    if not stage_sizes or min(stage_sizes) < 1 or width < 1:
      raise ValueError(f"Need at least one stage of >= 1 block and width >= 1, got "
                       f"stage_sizes={tuple(stage_sizes)}, width={width}.")
    block_cls = BasicBlock if block == "basic" else Bottleneck
    norm_kwargs = dict(momentum=bn_momentum, epsilon=bn_epsilon, axis_name=bn_axis_name)
    self.stem_kind = stem
    k, s = (7, 2) if stem == "imagenet" else (3, 1)
    self.stem_conv = Conv(in_channels, width, k, s, padding=k // 2, use_bias=False, dtype=dtype,
                          kernel_init=_conv_init, impl=conv_impl, rngs=rngs)
    self.stem_bn = _Norm(width, zero_init=False, rngs=rngs, **norm_kwargs)
    blocks = []
    features = width
    for i, n in enumerate(stage_sizes):
      for j in range(n):
        blocks.append(block_cls(
            features, width * 2**i, stride=2 if (i > 0 and j == 0) else 1,
            zero_init_residual=zero_init_residual, norm_kwargs=norm_kwargs, dtype=dtype,
            conv_impl=conv_impl, rngs=rngs))
        features = width * 2**i * block_cls.expansion
    self.blocks = nnx.List(blocks)
    self.out_features = features
    self.num_classes = num_classes
    self.remat = remat
    self.dtype = dtype
    self.fc: nnx.Linear | None = nnx.data(None)
    if num_classes is not None:
      self.fc = nnx.Linear(features, num_classes, dtype=dtype, rngs=rngs)

  def features(self, x: jax.Array, *, train: bool) -> jax.Array:
    """``[B, H, W, C] -> [B, out_features]`` float32 globally average-pooled features."""
    x = jnp.asarray(x, self.dtype)
    x = jax.nn.relu(self.stem_bn(self.stem_conv(x), train=train))
    if self.stem_kind == "imagenet":
      x = nnx.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for blk in self.blocks:
      if self.remat:
        x = nnx.remat(lambda b, y: b(y, train=train))(blk, x)
      else:
        x = blk(x, train=train)
    return jnp.mean(x.astype(jnp.float32), axis=(1, 2))

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """``[B, out_features]`` features, or ``[B, num_classes]`` logits if ``num_classes`` is set."""
    h = self.features(x, train=train)
    if self.fc is None:
      return h
    return self.fc(h).astype(jnp.float32)
