"""MLP projection / prediction heads of the joint-embedding methods.

One configurable :class:`MLPHead` expresses the projectors and predictors of the papers (``D`` is
the encoder's ``out_features``, 2048 for a ResNet-50):

* SimCLR (Chen et al., 2020, arXiv:2002.05709) projector, Linear-BN-ReLU-Linear:
  ``MLPHead(D, 2048, 128)``.
* SimCLR v2 (Chen et al., 2020, arXiv:2006.10029) 3-layer projector with BN on every layer:
  ``MLPHead(D, 2048, 128, num_layers=3, output_norm="bn")``.
* BYOL (Grill et al., 2020, arXiv:2006.07733) projector and predictor, Linear(4096)-BN-ReLU-
  Linear(256): ``MLPHead(D, 4096, 256)`` and ``MLPHead(256, 4096, 256)``.
* SimSiam (Chen & He, 2021, arXiv:2011.10566) projector, three layers with BN (no affine) on the
  output: ``MLPHead(D, 2048, 2048, num_layers=3, output_norm="bn_noaffine")``; predictor
  ``MLPHead(2048, 512, 2048)``.
* Barlow Twins (Zbontar et al., 2021, arXiv:2103.03230) projector, 8192-8192-8192 with a bias-free
  last layer (the loss itself batch-normalizes the embeddings):
  ``MLPHead(D, 8192, 8192, num_layers=3, output_bias=False)``.
* VICReg (Bardes et al., 2022, arXiv:2105.04906) expander: ``MLPHead(D, 8192, 8192,
  num_layers=3)``.
* MoCo v3 (Chen et al., 2021, arXiv:2104.02057) projector, 3 layers, BN without affine on the
  output: ``MLPHead(D, 4096, 256, num_layers=3, output_norm="bn_noaffine")``; predictor
  ``MLPHead(256, 4096, 256, output_bias=False)``.

A linear layer that feeds a BatchNorm has no bias (the BN mean subtraction cancels it).
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
from flax import nnx

from ssl_jax.models.norm import BatchNorm

HIDDEN_NORMS = ("bn", "ln", None)
OUTPUT_NORMS = (None, "bn", "bn_noaffine", "ln")
ACTIVATIONS = {"relu": jax.nn.relu, "gelu": lambda x: jax.nn.gelu(x, approximate=False)}


class _Norm(nnx.Module):
  """BatchNorm (optionally without affine) or LayerNorm, computed in float32."""

  def __init__(self, kind: str, features: int, *, bn_axis_name: str | None, bn_momentum: float,
               rngs: nnx.Rngs):
    self.kind = kind
    if kind == "ln":
      self.norm = nnx.LayerNorm(features, epsilon=1e-5, dtype=jnp.float32, rngs=rngs)
    else:
      affine = kind == "bn"
      self.norm = BatchNorm(features, momentum=bn_momentum, epsilon=1e-5, dtype=jnp.float32,
                            use_scale=affine, use_bias=affine, axis_name=bn_axis_name, rngs=rngs)

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    if self.kind == "ln":
      return self.norm(x)
    return self.norm(x, use_running_average=not train)


class MLPHead(nnx.Module):
  """``num_layers`` linear layers: ``[Linear - norm - act] * (num_layers - 1), Linear - norm``.

  ``[B, in_features] -> [B, out_features]``, float32.

  Args:
    in_features: input width.
    hidden_features: width of the hidden layers (unused when ``num_layers == 1``).
    out_features: output width.
    num_layers: number of linear layers (>= 1).
    hidden_norm: ``"bn"``, ``"ln"`` or ``None`` after each hidden linear layer.
    output_norm: ``None``, ``"bn"``, ``"bn_noaffine"`` or ``"ln"`` after the last linear layer.
    output_bias: bias of the last linear layer; ``None`` means "unless a BatchNorm follows".
    activation: ``"relu"`` or ``"gelu"``.
    bn_axis_name: mapped axis over which BatchNorm statistics are synced.
    bn_momentum: BatchNorm running-average decay (Flax convention; PyTorch 0.1 is 0.9 here).
    dtype: compute dtype of the linear layers (parameters are float32; norms compute in float32).
    rngs: random number generators.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> head = MLPHead(16, 32, 8, rngs=nnx.Rngs(0))  # SimCLR: Linear-BN-ReLU-Linear
    >>> head(jnp.ones((4, 16)), train=True).shape, head.layers[0].bias is None
    ((4, 8), True)
  """

  def __init__(self, in_features: int, hidden_features: int, out_features: int, *,
               num_layers: int = 2, hidden_norm: Literal["bn", "ln"] | None = "bn",
               output_norm: Literal["bn", "bn_noaffine", "ln"] | None = None,
               output_bias: bool | None = None, activation: Literal["relu", "gelu"] = "relu",
               bn_axis_name: str | None = None, bn_momentum: float = 0.9,
               dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs):
    if num_layers < 1:
      raise ValueError(f"num_layers must be >= 1, got {num_layers}.")
    if hidden_norm not in HIDDEN_NORMS:
      raise ValueError(f"Unknown hidden_norm {hidden_norm!r}; valid: {HIDDEN_NORMS}.")
    if output_norm not in OUTPUT_NORMS:
      raise ValueError(f"Unknown output_norm {output_norm!r}; valid: {OUTPUT_NORMS}.")
    if activation not in ACTIVATIONS:
      raise ValueError(f"Unknown activation {activation!r}; valid: {', '.join(ACTIVATIONS)}.")
    norm_kwargs = dict(bn_axis_name=bn_axis_name, bn_momentum=bn_momentum, rngs=rngs)
    widths = [in_features] + [hidden_features] * (num_layers - 1) + [out_features]
    layers, norms = [], []
    for i in range(num_layers):
      last = i == num_layers - 1
      norm = output_norm if last else hidden_norm
      bias = norm not in ("bn", "bn_noaffine")
      if last and output_bias is not None:
        bias = output_bias
      layers.append(nnx.Linear(widths[i], widths[i + 1], use_bias=bias, dtype=dtype, rngs=rngs))
      norms.append(_Norm(norm, widths[i + 1], **norm_kwargs) if norm is not None else None)
    self.layers = nnx.List(layers)
    self.norms = nnx.List(norms)
    self.activation = activation
    self.in_features = in_features
    self.out_features = out_features
    self.dtype = dtype

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """``[B, in_features] -> [B, out_features]`` float32; ``train`` picks BatchNorm's statistics."""
    act = ACTIVATIONS[self.activation]
    x = jnp.asarray(x, self.dtype)
    for i, (layer, norm) in enumerate(zip(self.layers, self.norms)):
      x = layer(x)
      if norm is not None:
        x = norm(x, train=train)
      if i < len(self.layers) - 1:
        x = act(x).astype(self.dtype)
    return x.astype(jnp.float32)
