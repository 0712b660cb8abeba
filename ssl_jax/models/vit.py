"""Vision Transformer (Dosovitskiy et al., 2021, "An Image is Worth 16x16 Words",
arXiv:2010.11929), in the pre-LN layout of timm / DeiT / MoCo v3 / DINO.

Patch embedding is a :class:`~ssl_jax.models.conv.Conv` with ``kernel_size = strides =
patch_size`` (the CPU-fast backward applies); a class token (``pool="cls"``); position embeddings
either learned (trunc-normal 0.02, timm) or the fixed 2-D sin-cos embedding of MoCo v3 (Chen et
al., 2021, arXiv:2104.02057), which is computed on the fly and is not a parameter. Blocks are
``x + Attn(LN(x))`` then ``x + MLP(LN(x))`` with LayerNorm epsilon 1e-6, MLP ratio 4 and exact
(erf) GELU, then a final LayerNorm. With a 1000-class head ViT-B/16 at 224 has 86,567,656
parameters (timm's ``vit_base_patch16_224``).

``pool="gap"`` drops the class token and averages the patch tokens after the final LayerNorm.

Inputs whose size differs from ``image_size`` (multi-crop) are supported: learned position
embeddings are resized bicubically to the new patch grid (as DINO's ``interpolate_pos_encoding``),
sin-cos ones are computed for the new grid.

Dtypes: parameters float32, matmuls in ``dtype``, LayerNorm and the attention softmax in float32
(``jax.nn.dot_product_attention`` computes its logits in float32), features/logits in float32.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ssl_jax.models.attention import dot_product_attention
from ssl_jax.models.conv import Conv, Impl
from ssl_jax.models.dense import Linear

POOLS = ("cls", "gap")
POS_EMBEDS = ("learned", "sincos")

_trunc02 = nnx.initializers.truncated_normal(0.02)
_xavier = nnx.initializers.xavier_uniform()


def sincos_pos_embed_2d(grid_h: int, grid_w: int, dim: int,
                        temperature: float = 10000.0) -> np.ndarray:
  """Fixed 2-D sin-cos position embedding ``[grid_h * grid_w, dim]`` (row-major patches).

  As MoCo v3's ``build_2d_sincos_position_embedding``: a quarter of the channels each for
  ``sin(w * omega)``, ``cos(w * omega)``, ``sin(h * omega)``, ``cos(h * omega)`` with
  ``omega_k = temperature ** (-k / (dim / 4))``.

  Example:
    >>> sincos_pos_embed_2d(2, 3, 8).shape
    (6, 8)
  """
  if dim % 4:
    raise ValueError(f"sin-cos position embedding needs dim divisible by 4, got {dim}.")
  gh, gw = np.meshgrid(np.arange(grid_h, dtype=np.float64), np.arange(grid_w, dtype=np.float64),
                       indexing="ij")
  quarter = dim // 4
  omega = 1.0 / temperature**(np.arange(quarter, dtype=np.float64) / quarter)
  out_w = gw.reshape(-1, 1) * omega[None]
  out_h = gh.reshape(-1, 1) * omega[None]
  return np.concatenate([np.sin(out_w), np.cos(out_w), np.sin(out_h), np.cos(out_h)],
                        axis=1).astype(np.float32)


def _layer_norm(dim: int, rngs: nnx.Rngs) -> nnx.LayerNorm:
  return nnx.LayerNorm(dim, epsilon=1e-6, dtype=jnp.float32, rngs=rngs)


class Attention(nnx.Module):
  """Multi-head self-attention with a fused ``qkv`` projection (timm layout).

  ``[B, T, dim] -> [B, T, dim]``.
  """

  def __init__(self, dim: int, num_heads: int, *, dtype: jnp.dtype, rngs: nnx.Rngs):
    if dim % num_heads:
      raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}.")
    self.num_heads = num_heads
    self.qkv = Linear(dim, 3 * dim, dtype=dtype, kernel_init=_xavier, rngs=rngs)
    self.proj = Linear(dim, dim, dtype=dtype, kernel_init=_xavier, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    b, t, d = x.shape
    qkv = self.qkv(x).reshape(b, t, 3, self.num_heads, d // self.num_heads)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # [B, T, heads, head_dim]
    out = dot_product_attention(q, k, v)  # float32 logits and softmax
    return self.proj(out.reshape(b, t, d))


class Block(nnx.Module):
  """Pre-LN transformer block: ``x + Attn(LN(x))``, ``x + MLP(LN(x))``. ``[B, T, D] -> same``."""

  def __init__(self, dim: int, num_heads: int, *, mlp_ratio: float, dtype: jnp.dtype,
               rngs: nnx.Rngs):
    hidden = int(dim * mlp_ratio)
    self.dtype = dtype
    self.norm1 = _layer_norm(dim, rngs)
    self.attn = Attention(dim, num_heads, dtype=dtype, rngs=rngs)
    self.norm2 = _layer_norm(dim, rngs)
    self.fc1 = Linear(dim, hidden, dtype=dtype, kernel_init=_xavier, rngs=rngs)
    self.fc2 = Linear(hidden, dim, dtype=dtype, kernel_init=_xavier, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = x + self.attn(self.norm1(x).astype(self.dtype))
    h = self.fc1(self.norm2(x).astype(self.dtype), activation="gelu")
    return x + self.fc2(h)


class VisionTransformer(nnx.Module):
  """ViT encoder: ``[B, H, W, C] -> [B, dim]`` (or ``[B, num_classes]`` logits).

  Args:
    dim: token width ``D`` (= ``out_features``).
    depth: number of blocks.
    num_heads: attention heads.
    mlp_ratio: MLP hidden width / ``dim``.
    patch_size: patch side; H and W should be multiples of it (the remainder is dropped).
    image_size: the input side the position embeddings are built for.
    in_channels: input channels ``C``.
    pool: ``"cls"`` (class token) or ``"gap"`` (mean of patch tokens, no class token).
    pos_embed: ``"learned"`` or ``"sincos"`` (fixed, not a parameter).
    num_classes: if set, a linear classifier on the pooled features; ``__call__`` then returns
      logits and :meth:`features` the pooled features.
    dtype: compute dtype (parameters are always float32).
    conv_impl: backward implementation of the patch embedding (see :mod:`ssl_jax.models.conv`).
    remat: rematerialize each block in the backward pass.
    rngs: random number generators.

  ``train`` is accepted for interface uniformity; this ViT has no dropout or BatchNorm, so
  ``train=True`` and ``train=False`` compute the same function.

  Example:
    >>> from flax import nnx
    >>> vit = nnx.eval_shape(lambda: VisionTransformer(768, 12, 12, rngs=nnx.Rngs(0)))
    >>> vit.out_features, vit.cls_token.shape, vit.pos_embed.shape
    (768, (1, 1, 768), (1, 197, 768))
  """

  def __init__(self, dim: int, depth: int, num_heads: int, *, mlp_ratio: float = 4.0,
               patch_size: int = 16, image_size: int = 224, in_channels: int = 3,
               pool: Literal["cls", "gap"] = "cls",
               pos_embed: Literal["learned", "sincos"] = "learned",
               num_classes: int | None = None, dtype: jnp.dtype = jnp.float32,
               conv_impl: Impl | None = None, remat: bool = False, rngs: nnx.Rngs):
    if pool not in POOLS:
      raise ValueError(f"Unknown pool {pool!r}; valid: {', '.join(POOLS)}.")
    if pos_embed not in POS_EMBEDS:
      raise ValueError(f"Unknown pos_embed {pos_embed!r}; valid: {', '.join(POS_EMBEDS)}.")
    if image_size < patch_size:
      raise ValueError(f"image_size {image_size} is smaller than patch_size {patch_size}.")
    self.dim = dim
    self.patch_size = patch_size
    self.grid = image_size // patch_size
    self.pool = pool
    self.pos_embed_kind = pos_embed
    self.dtype = dtype
    self.remat = remat
    self.num_classes = num_classes
    self.out_features = dim
    # timm/MAE initialise the patch projection like a linear layer (xavier on the flattened kernel).
    self.patch_embed = Conv(in_channels, dim, patch_size, patch_size, padding="VALID", dtype=dtype,
                            kernel_init=nnx.initializers.xavier_uniform(in_axis=(0, 1, 2)),
                            impl=conv_impl, rngs=rngs)
    self.num_prefix = 1 if pool == "cls" else 0
    self.cls_token: nnx.Param | None = nnx.data(None)
    if pool == "cls":
      self.cls_token = nnx.Param(nnx.initializers.normal(1e-6)(rngs.params(), (1, 1, dim)))
    self.pos_embed: nnx.Param | None = nnx.data(None)
    if pos_embed == "learned":
      self.pos_embed = nnx.Param(
          _trunc02(rngs.params(), (1, self.num_prefix + self.grid**2, dim)))
    self.blocks = nnx.List([Block(dim, num_heads, mlp_ratio=mlp_ratio, dtype=dtype, rngs=rngs)
                            for _ in range(depth)])
    self.norm = _layer_norm(dim, rngs)
    self.head: Linear | None = nnx.data(None)
    if num_classes is not None:
      self.head = Linear(dim, num_classes, dtype=dtype, rngs=rngs)

  def _pos_embed(self, grid_h: int, grid_w: int) -> tuple[jax.Array, jax.Array | None]:
    """Position embeddings ``[1, grid_h * grid_w, D]`` for the patches, and for the prefix."""
    if self.pos_embed is None:
      return jnp.asarray(sincos_pos_embed_2d(grid_h, grid_w, self.dim))[None], None
    pos = self.pos_embed[...]
    prefix, patches = pos[:, :self.num_prefix], pos[:, self.num_prefix:]
    if (grid_h, grid_w) != (self.grid, self.grid):
      patches = jax.image.resize(patches.reshape(1, self.grid, self.grid, self.dim),
                                 (1, grid_h, grid_w, self.dim), "bicubic")
      patches = patches.reshape(1, grid_h * grid_w, self.dim)
    return patches, (prefix if self.num_prefix else None)

  def tokens(self, x: jax.Array) -> jax.Array:
    """``[B, H, W, C] -> [B, prefix + (H // p) * (W // p), D]`` final-LayerNormed tokens."""
    x = self.patch_embed(jnp.asarray(x, self.dtype))  # [B, H/p, W/p, D]
    b, gh, gw, d = x.shape
    patch_pos, prefix_pos = self._pos_embed(gh, gw)
    x = x.reshape(b, gh * gw, d).astype(jnp.float32) + patch_pos
    if self.cls_token is not None:
      cls = self.cls_token[...] if prefix_pos is None else self.cls_token[...] + prefix_pos
      x = jnp.concatenate([jnp.broadcast_to(cls, (b, 1, d)), x], axis=1)
    x = x.astype(self.dtype)
    for blk in self.blocks:
      x = nnx.remat(lambda m, y: m(y))(blk, x) if self.remat else blk(x)
    return self.norm(x)

  def features(self, x: jax.Array, *, train: bool) -> jax.Array:
    """``[B, H, W, C] -> [B, dim]`` float32 pooled features (class token or patch mean)."""
    del train  # No dropout / BatchNorm.
    t = self.tokens(x)
    return (t[:, 0] if self.pool == "cls" else jnp.mean(t, axis=1)).astype(jnp.float32)

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """``[B, dim]`` features, or ``[B, num_classes]`` logits if ``num_classes`` is set."""
    h = self.features(x, train=train)
    if self.head is None:
      return h
    return self.head(h).astype(jnp.float32)
