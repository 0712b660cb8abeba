"""MLP heads: structure of the paper recipes, values against NumPy, BatchNorm modes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ssl_jax.models.heads import MLPHead


def _abstract(*args, **kwargs):
  return nnx.eval_shape(lambda: MLPHead(*args, rngs=nnx.Rngs(0), **kwargs))


def _num_params(module) -> int:
  return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(nnx.state(module, nnx.Param)))


@pytest.mark.parametrize("name,args,kwargs,expected", [
    # SimCLR: 2048x2048 (no bias) + BN(2048) + 2048x128 + bias.
    ("simclr", (2048, 2048, 128), {}, 2048 * 2048 + 2 * 2048 + 2048 * 128 + 128),
    # SimCLR v2: three layers, BN everywhere, no biases.
    ("simclr_v2", (2048, 2048, 128), dict(num_layers=3, output_norm="bn"),
     2048 * 2048 * 2 + 2 * 2048 * 2 + 2048 * 128 + 2 * 128),
    # BYOL projector: 2048x4096 + BN(4096) + 4096x256 + bias.
    ("byol", (2048, 4096, 256), {}, 2048 * 4096 + 2 * 4096 + 4096 * 256 + 256),
    # SimSiam projector: output BN without affine parameters.
    ("simsiam", (2048, 2048, 2048), dict(num_layers=3, output_norm="bn_noaffine"),
     3 * 2048 * 2048 + 2 * 2 * 2048),
    # Barlow Twins: 8192 x 3, bias-free last layer.
    ("barlow", (2048, 8192, 8192), dict(num_layers=3, output_bias=False),
     2048 * 8192 + 2 * 8192 * 8192 + 2 * 2 * 8192),
    # MoCo v3 predictor: bias-free last layer without a norm.
    ("mocov3_pred", (256, 4096, 256), dict(output_bias=False), 256 * 4096 * 2 + 2 * 4096),
    ("linear", (16, 0, 4), dict(num_layers=1), 16 * 4 + 4),
])
def test_recipe_parameter_counts(name, args, kwargs, expected):
  assert _num_params(_abstract(*args, **kwargs)) == expected, name


def test_structure():
  head = _abstract(8, 16, 4, num_layers=3, hidden_norm="bn", output_norm="bn_noaffine")
  assert [layer.bias is None for layer in head.layers] == [True, True, True]
  assert head.norms[2].norm.scale is None and head.norms[2].norm.bias is None
  assert head.norms[0].norm.scale is not None
  ln = _abstract(8, 16, 4, hidden_norm="ln", output_norm="ln")
  assert all(layer.bias is not None for layer in ln.layers)
  assert isinstance(ln.norms[0].norm, nnx.LayerNorm)
  plain = _abstract(8, 16, 4, hidden_norm=None)
  assert list(plain.norms) == [None, None]


@pytest.mark.parametrize("kwargs,match", [
    (dict(num_layers=0), "num_layers"), (dict(hidden_norm="gn"), "hidden_norm"),
    (dict(output_norm="bn_affine"), "output_norm"), (dict(activation="tanh"), "relu, gelu")])
def test_bad_options(kwargs, match):
  with pytest.raises(ValueError, match=match):
    _abstract(8, 16, 4, **kwargs)


def _bn(h, mean, var, scale=1.0, bias=0.0, eps=1e-5):
  return (h - mean) / np.sqrt(var + eps) * scale + bias


@pytest.fixture(scope="module")
def simsiam_like():
  """A 3-layer head with BN hidden norms and an affine-free BN output, jitted train/eval."""
  head = MLPHead(6, 10, 4, num_layers=3, output_norm="bn_noaffine", rngs=nnx.Rngs(0))
  graphdef, params, stats = nnx.split(head, nnx.Param, nnx.BatchStat)

  @jax.jit(static_argnames="train")
  def apply(params, stats, x, train):
    module = nnx.merge(graphdef, params, stats, copy=True)
    return module(x, train=train), nnx.state(module, nnx.BatchStat)

  x = jax.random.normal(jax.random.key(1), (8, 6))
  return params, stats, apply, x


def _numpy_forward(params, x, stats=None):
  """The head in NumPy: batch statistics when ``stats`` is None, else running averages."""
  h = np.asarray(x, np.float64)
  for i in range(3):
    h = h @ np.asarray(params["layers"][i]["kernel"][...], np.float64)
    if stats is None:
      mean, var = h.mean(0), h.var(0)
    else:
      mean, var = (np.asarray(stats["norms"][i]["norm"][k][...]) for k in ("mean", "var"))
    if i < 2:
      norm = params["norms"][i]["norm"]
      h = np.maximum(_bn(h, mean, var, np.asarray(norm["scale"][...]),
                         np.asarray(norm["bias"][...])), 0.0)
    else:
      h = _bn(h, mean, var)
  return h


def test_train_and_eval_against_numpy(simsiam_like):
  params, stats, apply, x = simsiam_like
  y, new_stats = apply(params, stats, x, True)
  np.testing.assert_allclose(y, _numpy_forward(params, x), rtol=1e-4, atol=1e-5)
  # Output BN without affine: zero mean, unit (biased) variance per feature over the batch.
  np.testing.assert_allclose(y.mean(0), 0.0, atol=1e-5)
  np.testing.assert_allclose(y.var(0), 1.0, rtol=1e-3)
  # Running statistics moved by 0.1 of the batch statistics (momentum 0.9).
  h0 = np.asarray(x) @ np.asarray(params["layers"][0]["kernel"][...])
  np.testing.assert_allclose(new_stats["norms"][0]["norm"]["mean"][...], 0.1 * h0.mean(0),
                             rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(new_stats["norms"][0]["norm"]["var"][...], 0.9 + 0.1 * h0.var(0),
                             rtol=1e-4)
  # Eval mode: running statistics are used and left unchanged.
  y_eval, eval_stats = apply(params, new_stats, x, False)
  np.testing.assert_allclose(y_eval, _numpy_forward(params, x, new_stats), rtol=1e-4, atol=1e-5)
  jax.tree.map(np.testing.assert_array_equal, eval_stats, new_stats)


def test_bfloat16_compute(simsiam_like):
  params, stats, _, x = simsiam_like
  head = MLPHead(6, 10, 4, num_layers=3, output_norm="bn_noaffine", dtype=jnp.bfloat16,
                 rngs=nnx.Rngs(0))
  nnx.update(head, params)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(nnx.state(head, nnx.Param)))
  y = head(x, train=True)
  assert y.dtype == jnp.float32
  np.testing.assert_allclose(y, _numpy_forward(params, x), atol=0.1)
