"""A small convolutional encoder for tiny images (the 8x8x1 scikit-learn digits).

Written here rather than taken from a library because it is a few lines of standard layers and
must share the encoder interface (``train``, synced BatchNorm, compute dtype, the custom-VJP
:class:`~ssl_jax.models.conv.Conv`). Each stage is ``convs_per_stage`` times
``Conv3x3 - BatchNorm - ReLU`` (the first conv of a stage carries the stage's stride), optionally
followed by a 2x2 max-pool; then global average pooling or a flatten, and optionally a fully
connected ``Linear - BatchNorm - ReLU`` layer (LeNet-style), which is part of the representation.

The main job's encoder is ``cnn_digits`` in the registry: 32-64-128 channels at stride 1 with a
max-pool after the second stage (8x8 -> 4x4), flattened (2048) into a 128-wide fully connected
layer. Chosen on a validation split of the digits train set: for 1-label-per-class probing it beat
global average pooling (the spatial layout of an 8x8 digit is most of its identity) and a deeper
or wider net at the same CPU budget.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from ssl_jax.models.conv import Conv, Impl
from ssl_jax.models.norm import BatchNorm

_conv_init = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")


class SmallCNN(nnx.Module):
  """``[B, H, W, in_channels] -> [B, widths[-1]]`` (or ``[B, num_classes]`` logits).

  Defaults suit 8x8 digits: 8x8x32 -> 4x4x64 -> 2x2x128 -> average pool -> 128 features.

  Args:
    widths: channels of each stage.
    strides: stride of the first conv of each stage (same length as ``widths``).
    convs_per_stage: ``Conv3x3-BN-ReLU`` units per stage.
    pool_after: indices of the stages followed by a 2x2 max-pool (stride 2).
    head: ``"gap"`` (global average pool) or ``"flatten"`` (needs ``image_size``).
    fc_features: if set, a ``Linear(fc_features) - BatchNorm - ReLU`` layer after the head; its
      output is the representation.
    image_size: input height = width, for the flatten head's size.
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
               convs_per_stage: int = 1, pool_after: Sequence[int] = (), head: str = "gap",
               fc_features: int | None = None, image_size: int = 8, in_channels: int = 1,
               num_classes: int | None = None,
               bn_axis_name: str | None = None, bn_momentum: float = 0.9,
               dtype: jnp.dtype = jnp.float32, conv_impl: Impl | None = None, rngs: nnx.Rngs):
    widths, strides = tuple(widths), tuple(strides)
    if not widths or len(widths) != len(strides) or convs_per_stage < 1:
      raise ValueError(f"widths {widths} and strides {strides} must be non-empty and of equal "
                       f"length, convs_per_stage >= 1 (got {convs_per_stage}).")
    if head not in ("gap", "flatten"):
      raise ValueError(f"head must be 'gap' or 'flatten', got {head!r}.")
    if not set(pool_after) <= set(range(len(widths))):
      raise ValueError(f"pool_after {tuple(pool_after)} must index stages 0..{len(widths) - 1}.")
    bn = lambda n: BatchNorm(n, momentum=bn_momentum, epsilon=1e-5, dtype=jnp.float32,
                             axis_name=bn_axis_name, rngs=rngs)
    convs, norms, pool = [], [], []
    cin, size = in_channels, image_size
    for stage, (width, stride) in enumerate(zip(widths, strides)):
      for j in range(convs_per_stage):
        convs.append(Conv(cin, width, 3, stride if j == 0 else 1, padding=1, use_bias=False,
                          dtype=dtype, kernel_init=_conv_init, impl=conv_impl, rngs=rngs))
        norms.append(bn(width))
        pool.append(stage in pool_after and j == convs_per_stage - 1)
        cin = width
      size = -(-size // stride)  # SAME padding
      size = size // 2 if stage in pool_after else size
    if size < 1:
      raise ValueError(f"image_size={image_size} is too small for strides {strides} and "
                       f"pool_after {tuple(pool_after)}: its 2x2 max-pools leave no pixel.")
    self.convs = nnx.List(convs)
    self.norms = nnx.List(norms)
    self.pool = tuple(pool)
    self.head = head
    features = cin if head == "gap" else cin * size * size
    self.fc_hidden: nnx.Linear | None = nnx.data(None)
    self.fc_norm: nnx.BatchNorm | None = nnx.data(None)
    if fc_features:
      self.fc_hidden = nnx.Linear(features, fc_features, use_bias=False, dtype=dtype, rngs=rngs)
      self.fc_norm = bn(fc_features)
      features = fc_features
    self.out_features = features
    self.num_classes = num_classes
    self.dtype = dtype
    self.fc: nnx.Linear | None = nnx.data(None)
    if num_classes is not None:
      self.fc = nnx.Linear(features, num_classes, dtype=dtype, rngs=rngs)

  def features(self, x: jax.Array, *, train: bool) -> jax.Array:
    """``[B, H, W, C] -> [B, out_features]`` float32 average-pooled features."""
    x = jnp.asarray(x, self.dtype)
    for conv, norm, pool in zip(self.convs, self.norms, self.pool):
      x = jax.nn.relu(norm(conv(x), use_running_average=not train)).astype(self.dtype)
      if pool:
        x = nnx.max_pool(x, (2, 2), strides=(2, 2))
    if self.head == "gap":
      x = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
    else:
      x = x.reshape(x.shape[0], -1)
    if self.fc_hidden is not None:
      x = jax.nn.relu(self.fc_norm(self.fc_hidden(x), use_running_average=not train))
    return x.astype(jnp.float32)

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """``[B, out_features]`` features, or ``[B, num_classes]`` logits if ``num_classes`` is set."""
    h = self.features(x, train=train)
    if self.fc is None:
      return h
    return self.fc(h).astype(jnp.float32)
