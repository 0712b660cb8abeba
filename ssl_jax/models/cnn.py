"""A small convolutional encoder for tiny images (the 8x8x1 scikit-learn digits).

Written here rather than taken from a library because it is a few lines of standard layers and
must share the encoder interface (``train``, synced BatchNorm, compute dtype, the custom-VJP
:class:`~ssl_jax.models.conv.Conv`). Each stage is ``convs_per_stage`` times
``Conv3x3 - BatchNorm - ReLU`` (the first conv of a stage carries the stage's stride), followed by
global average pooling.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from ssl_jax.models.conv import Conv, Impl

_conv_init = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")


class SmallCNN(nnx.Module):
  """``[B, H, W, in_channels] -> [B, widths[-1]]`` (or ``[B, num_classes]`` logits).

  Defaults suit 8x8 digits: 8x8x32 -> 4x4x64 -> 2x2x128 -> average pool -> 128 features.

  Args:
    widths: channels of each stage.
    strides: stride of the first conv of each stage (same length as ``widths``).
    convs_per_stage: ``Conv3x3-BN-ReLU`` units per stage.
    in_channels: input channels.
    num_classes: if set, a linear classifier on the pooled features; ``__call__`` then returns
      logits and :meth:`features` the pooled features.
    bn_axis_name: mapped axis over which BatchNorm statistics are synced.
    bn_momentum: BatchNorm running-average decay (Flax convention).
    dtype: compute dtype (parameters float32; BatchNorm in float32).
    conv_impl: backward implementation of the convolutions (see :mod:`ssl_jax.models.conv`).
    rngs: random number generators.

  Example:
    >>> from flax import nnx
    >>> net = nnx.eval_shape(lambda: SmallCNN(widths=(8, 16), strides=(1, 2), rngs=nnx.Rngs(0)))
    >>> net.out_features, [c.kernel.shape for c in net.convs]
    (16, [(3, 3, 1, 8), (3, 3, 8, 16)])
  """

  def __init__(self, *, widths: Sequence[int] = (32, 64, 128), strides: Sequence[int] = (1, 2, 2),
               convs_per_stage: int = 1, in_channels: int = 1, num_classes: int | None = None,
               bn_axis_name: str | None = None, bn_momentum: float = 0.9,
               dtype: jnp.dtype = jnp.float32, conv_impl: Impl | None = None, rngs: nnx.Rngs):
    widths, strides = tuple(widths), tuple(strides)
    if not widths or len(widths) != len(strides) or convs_per_stage < 1:
      raise ValueError(f"widths {widths} and strides {strides} must be non-empty and of equal "
                       f"length, convs_per_stage >= 1 (got {convs_per_stage}).")
    convs, norms = [], []
    cin = in_channels
    for width, stride in zip(widths, strides):
      for j in range(convs_per_stage):
        convs.append(Conv(cin, width, 3, stride if j == 0 else 1, padding=1, use_bias=False,
                          dtype=dtype, kernel_init=_conv_init, impl=conv_impl, rngs=rngs))
        norms.append(nnx.BatchNorm(width, momentum=bn_momentum, epsilon=1e-5, dtype=jnp.float32,
                                   axis_name=bn_axis_name, rngs=rngs))
        cin = width
    self.convs = nnx.List(convs)
    self.norms = nnx.List(norms)
    self.out_features = cin
    self.num_classes = num_classes
    self.dtype = dtype
    self.fc: nnx.Linear | None = nnx.data(None)
    if num_classes is not None:
      self.fc = nnx.Linear(cin, num_classes, dtype=dtype, rngs=rngs)

  def features(self, x: jax.Array, *, train: bool) -> jax.Array:
    """``[B, H, W, C] -> [B, out_features]`` float32 average-pooled features."""
    x = jnp.asarray(x, self.dtype)
    for conv, norm in zip(self.convs, self.norms):
      x = jax.nn.relu(norm(conv(x), use_running_average=not train)).astype(self.dtype)
    return jnp.mean(x.astype(jnp.float32), axis=(1, 2))

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """``[B, out_features]`` features, or ``[B, num_classes]`` logits if ``num_classes`` is set."""
    h = self.features(x, train=train)
    if self.fc is None:
      return h
    return self.fc(h).astype(jnp.float32)
