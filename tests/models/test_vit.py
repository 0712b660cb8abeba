"""Vision Transformers: parameter counts (timm), sin-cos embedding, attention, pooling, dtypes."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ssl_jax.models import build_encoder
from ssl_jax.models.vit import Attention, sincos_pos_embed_2d


def _abstract(name, **kwargs):
  return nnx.eval_shape(lambda: build_encoder(name, rngs=nnx.Rngs(0), **kwargs))


def _num_params(module) -> int:
  return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(nnx.state(module, nnx.Param)))


def _formula(dim, depth, patch=16, image=224, channels=3, classes=None, cls=True, learned=True):
  """Independent count: patch embed, class token, position embedding, blocks, final LN, head."""
  tokens = (image // patch)**2 + int(cls)
  per_block = 2 * 2 * dim + (3 * dim * dim + 3 * dim) + (dim * dim + dim) \
      + (dim * 4 * dim + 4 * dim) + (4 * dim * dim + dim)
  n = patch * patch * channels * dim + dim + int(cls) * dim + int(learned) * tokens * dim
  n += depth * per_block + 2 * dim
  return n + (dim * classes + classes if classes else 0)


@pytest.mark.parametrize("name,num_classes,expected", [
    ("vit_base", 1000, 86_567_656),  # timm vit_base_patch16_224 (86.6M)
    ("vit_small", 1000, 22_050_664),  # timm vit_small_patch16_224 (22.05M)
    ("vit_tiny", 1000, 5_717_416),  # timm vit_tiny_patch16_224 (5.7M)
])
def test_parameter_counts(name, num_classes, expected):
  assert _num_params(_abstract(name, num_classes=num_classes)) == expected


@pytest.mark.parametrize("kwargs", [
    dict(), dict(pool="gap"), dict(pos_embed="sincos"), dict(patch_size=8, image_size=64),
    dict(pool="gap", pos_embed="sincos", num_classes=10)])
def test_parameter_count_formula(kwargs):
  module = _abstract("vit_small", **kwargs)
  expected = _formula(384, 12, patch=kwargs.get("patch_size", 16),
                      image=kwargs.get("image_size", 224), classes=kwargs.get("num_classes"),
                      cls=kwargs.get("pool", "cls") == "cls",
                      learned=kwargs.get("pos_embed", "learned") == "learned")
  assert _num_params(module) == expected


def test_abstract_output_shapes():
  vit = _abstract("vit_base", num_classes=1000)
  graphdef, state = nnx.split(vit)
  x = jax.ShapeDtypeStruct((2, 224, 224, 3), jnp.float32)
  logits = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x, train=True), state, x)
  feats = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s).features(x, train=True), state, x)
  assert logits.shape == (2, 1000) and feats.shape == (2, 768) and vit.out_features == 768


def test_sincos_embedding_matches_moco_v3_formula():
  gh, gw, dim, temperature = 3, 4, 16, 10000.0
  got = sincos_pos_embed_2d(gh, gw, dim)
  quarter = dim // 4
  for h in range(gh):
    for w in range(gw):
      row = got[h * gw + w]
      for k in range(quarter):
        omega = 1.0 / temperature**(k / quarter)
        np.testing.assert_allclose(row[k], math.sin(w * omega), atol=1e-6)
        np.testing.assert_allclose(row[quarter + k], math.cos(w * omega), atol=1e-6)
        np.testing.assert_allclose(row[2 * quarter + k], math.sin(h * omega), atol=1e-6)
        np.testing.assert_allclose(row[3 * quarter + k], math.cos(h * omega), atol=1e-6)
  with pytest.raises(ValueError, match="divisible by 4"):
    sincos_pos_embed_2d(2, 2, 6)


def test_attention_matches_numpy():
  dim, heads = 8, 2
  attn = Attention(dim, heads, dtype=jnp.float32, rngs=nnx.Rngs(0))
  x = np.asarray(jax.random.normal(jax.random.key(1), (2, 5, dim)), np.float64)
  w_qkv, b_qkv = np.asarray(attn.qkv.kernel[...]), np.asarray(attn.qkv.bias[...])
  w_o, b_o = np.asarray(attn.proj.kernel[...]), np.asarray(attn.proj.bias[...])
  qkv = x @ w_qkv + b_qkv  # [B, T, 3 * dim] laid out as (3, heads, head_dim)
  hd = dim // heads
  out = np.zeros_like(x)
  for b in range(2):
    for h in range(heads):
      q, k, v = (qkv[b, :, i * dim + h * hd:i * dim + (h + 1) * hd] for i in range(3))
      logits = q @ k.T / np.sqrt(hd)
      p = np.exp(logits - logits.max(-1, keepdims=True))
      p /= p.sum(-1, keepdims=True)
      out[b, :, h * hd:(h + 1) * hd] = p @ v
  np.testing.assert_allclose(attn(jnp.asarray(x, jnp.float32)), out @ w_o + b_o, rtol=1e-4,
                             atol=1e-5)


@pytest.fixture(scope="module")
def micro():
  """vit_micro variants (16x16 inputs, 4x4 patches) with a shared jitted forward each."""
  def make(**kwargs):
    module = build_encoder("vit_micro", rngs=nnx.Rngs(0), **kwargs)
    graphdef, state = nnx.split(module)
    fwd = jax.jit(lambda s, x, train: nnx.merge(graphdef, s)(x, train=train),
                  static_argnames="train")
    return module, state, fwd
  x = jax.random.normal(jax.random.key(1), (2, 16, 16, 3))
  return make, x


def test_micro_forward_cls_and_train_flag(micro):
  make, x = micro
  module, state, fwd = make()
  y = fwd(state, x, train=True)
  assert y.shape == (2, 32) and y.dtype == jnp.float32
  np.testing.assert_array_equal(y, fwd(state, x, train=False))  # no dropout / BN in this ViT
  # The class-token output is the class-token row of the final-LayerNormed tokens.
  tokens = module.tokens(x)
  assert tokens.shape == (2, 1 + 16, 32)
  np.testing.assert_allclose(y, tokens[:, 0], rtol=1e-5, atol=1e-5)
  # Multi-crop: another image size works (the learned position embedding is resized) ...
  assert fwd(state, x[:, :8, :12], train=True).shape == (2, 32)
  # ... and the output depends on the position embedding.
  state2 = jax.tree.map(lambda a: a, state)
  noise = jax.random.normal(jax.random.key(2), state["pos_embed"].shape)
  state2["pos_embed"].set_value(state["pos_embed"][...] + noise)
  assert not np.allclose(fwd(state2, x, train=True), y, atol=1e-4)


def test_micro_gap_sincos_and_classifier(micro):
  make, x = micro
  module, state, fwd = make(pool="gap", pos_embed="sincos", num_classes=5)
  assert module.cls_token is None and module.pos_embed is None
  logits = fwd(state, x, train=False)
  feats = module.features(x, train=False)
  assert logits.shape == (2, 5) and feats.shape == (2, 32)
  np.testing.assert_allclose(feats, jnp.mean(module.tokens(x), axis=1), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(
      logits, feats @ module.head.kernel[...] + module.head.bias[...], rtol=1e-4, atol=1e-5)


def test_micro_bfloat16_and_remat(micro):
  make, x = micro
  _, state, fwd = make()
  _, _, fwd_bf16 = make(dtype=jnp.bfloat16, remat=True)
  y, y_bf16 = fwd(state, x, train=True), fwd_bf16(state, x, train=True)
  assert y_bf16.dtype == jnp.float32
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(state))
  np.testing.assert_allclose(y_bf16, y, atol=0.1)


def test_bad_options():
  with pytest.raises(ValueError, match="cls, gap"):
    _abstract("vit_micro", pool="max")
  with pytest.raises(ValueError, match="learned, sincos"):
    _abstract("vit_micro", pos_embed="rope")
