"""The small digits CNN: shapes, configurability, a NumPy check of its first stage."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import lax

from ssl_jax.models.cnn import SmallCNN


def test_default_shapes_and_parameters():
  net = nnx.eval_shape(lambda: SmallCNN(rngs=nnx.Rngs(0)))
  assert net.out_features == 128
  assert [c.kernel.shape for c in net.convs] == [(3, 3, 1, 32), (3, 3, 32, 64), (3, 3, 64, 128)]
  assert [c.strides for c in net.convs] == [(1, 1), (2, 2), (2, 2)]
  assert all(c.bias is None for c in net.convs)
  graphdef, state = nnx.split(net)
  y = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x, train=True), state,
                     jax.ShapeDtypeStruct((5, 8, 8, 1), jnp.float32))
  assert y.shape == (5, 128) and y.dtype == jnp.float32


def test_configurable():
  net = nnx.eval_shape(lambda: SmallCNN(widths=(4, 8), strides=(1, 1), convs_per_stage=2,
                                        in_channels=3, num_classes=10, rngs=nnx.Rngs(0)))
  assert len(net.convs) == 4 and net.out_features == 8 and net.fc.kernel.shape == (8, 10)
  with pytest.raises(ValueError, match="equal length"):
    SmallCNN(widths=(4, 8), strides=(1,), rngs=nnx.Rngs(0))


def test_single_stage_against_numpy():
  """One stage: conv3x3 (no bias) - BN(batch stats) - ReLU - global average pool, in NumPy."""
  net = SmallCNN(widths=(4,), strides=(1,), rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(1), (3, 8, 8, 1))
  kernel = np.asarray(net.convs[0].kernel[...], np.float64)
  xp = np.pad(np.asarray(x, np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
  conv = np.zeros((3, 8, 8, 4))
  for i in range(3):
    for j in range(3):
      conv += np.einsum("nhwc,co->nhwo", xp[:, i:i + 8, j:j + 8], kernel[i, j])
  normed = (conv - conv.mean((0, 1, 2))) / np.sqrt(conv.var((0, 1, 2)) + 1e-5)
  expected = np.maximum(normed, 0).mean((1, 2))
  np.testing.assert_allclose(net(x, train=True), expected, rtol=1e-4, atol=1e-5)
  # Cross-check the NumPy convolution against XLA's, so the reference itself is tested.
  xla = lax.conv_general_dilated(x, net.convs[0].kernel[...], (1, 1), "SAME",
                                 dimension_numbers=("NHWC", "HWIO", "NHWC"))
  np.testing.assert_allclose(xla, conv, rtol=1e-4, atol=1e-5)


def test_digits_encoder_pool_flatten_and_fully_connected_layer():
  """cnn_digits: 3 stride-1 stages, max-pool after the second, flatten, Linear-BN-ReLU."""
  from ssl_jax.models import build_encoder
  net = build_encoder("cnn_digits", rngs=nnx.Rngs(0), num_classes=10)
  assert net.out_features == 128 and net.fc_hidden.kernel.shape == (4 * 4 * 128, 128)
  assert net.fc.kernel.shape == (128, 10)
  x = jax.random.normal(jax.random.key(1), (3, 8, 8, 1))
  # Reference: the same layers applied by hand with lax and NumPy max-pooling.
  h = x
  for i, (conv, norm) in enumerate(zip(net.convs, net.norms)):
    h = lax.conv_general_dilated(h, conv.kernel[...], (1, 1), "SAME",
                                 dimension_numbers=("NHWC", "HWIO", "NHWC"))
    h = np.maximum((h - h.mean((0, 1, 2))) / np.sqrt(h.var((0, 1, 2)) + 1e-5), 0)
    if i == 1:
      h = np.asarray(h).reshape(3, 4, 2, 4, 2, 64).max(axis=(2, 4))
  h = np.asarray(h).reshape(3, -1) @ np.asarray(net.fc_hidden.kernel[...])
  expected = np.maximum((h - h.mean(0)) / np.sqrt(h.var(0) + 1e-5), 0)
  np.testing.assert_allclose(net.features(x, train=True), expected, rtol=1e-3, atol=1e-4)
  with pytest.raises(ValueError, match="pool_after"):
    SmallCNN(widths=(4,), strides=(1,), pool_after=(3,), rngs=nnx.Rngs(0))
