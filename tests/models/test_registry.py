"""The encoder registry (``ssl_jax.models``) and BatchNorm synced across devices."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from ssl_jax.models import build_encoder, encoder_kwargs, encoder_names, fit_encoder_kwargs
from ssl_jax.models.heads import MLPHead
from ssl_jax.models.nnx_utils import Bundle, Networks

ALL = ["cnn_digits", "cnn_small", "resnet18", "resnet34", "resnet50", "resnet_tiny", "vit_base", "vit_micro",
       "vit_small", "vit_tiny"]
# Input shapes and expected (out_features, output width with num_classes=7).
SHAPES = {
    "cnn_digits": ((2, 8, 8, 1), 128), "cnn_small": ((2, 8, 8, 1), 128),
    "resnet18": ((2, 64, 64, 3), 512),
    "resnet34": ((2, 64, 64, 3), 512), "resnet50": ((2, 64, 64, 3), 2048),
    "resnet_tiny": ((2, 16, 16, 3), 128), "vit_base": ((2, 224, 224, 3), 768),
    "vit_micro": ((2, 16, 16, 3), 32), "vit_small": ((2, 224, 224, 3), 384),
    "vit_tiny": ((2, 224, 224, 3), 192),
}


def test_names():
  assert encoder_names() == ALL


def test_errors_list_valid_choices():
  with pytest.raises(ValueError, match="Valid encoders: cnn_digits, cnn_small, resnet18"):
    build_encoder("resnet101", rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match=r"Unknown argument\(s\) depht.*Valid: .*stem"):
    build_encoder("resnet18", rngs=nnx.Rngs(0), depht=3)
  # Architecture-defining arguments of a named encoder cannot be overridden.
  with pytest.raises(ValueError, match="stage_sizes"):
    build_encoder("resnet18", rngs=nnx.Rngs(0), stage_sizes=(1, 1, 1, 1))
  with pytest.raises(ValueError, match="Valid: .*patch_size"):
    build_encoder("vit_small", rngs=nnx.Rngs(0), depth=6)
  assert "pool" in encoder_kwargs("vit_micro") and "widths" in encoder_kwargs("cnn_small")


@pytest.mark.parametrize("name", ALL)
def test_interface_and_shapes(name):
  shape, features = SHAPES[name]
  in_channels = {"in_channels": shape[-1]}
  for num_classes, width in ((None, features), (7, 7)):
    module = nnx.eval_shape(lambda: build_encoder(name, rngs=nnx.Rngs(0), num_classes=num_classes,
                                                  **in_channels))
    assert module.out_features == features
    graphdef, state = nnx.split(module)
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    y = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x, train=True), state, x)
    h = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s).features(x, train=False), state, x)
    assert y.shape == (2, width) and y.dtype == jnp.float32
    assert h.shape == (2, features) and h.dtype == jnp.float32
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(nnx.state(module, nnx.Param)))


@pytest.mark.parametrize("name", ["resnet_tiny", "cnn_small"])
def test_bn_axis_name_reaches_every_batchnorm(name):
  module = nnx.eval_shape(lambda: build_encoder(name, rngs=nnx.Rngs(0), bn_axis_name="data"))
  norms = [m for _, m in nnx.iter_graph(module) if isinstance(m, nnx.BatchNorm)]
  assert len(norms) >= 3 and all(m.axis_name == "data" for m in norms)


# --- BatchNorm synced over 8 simulated devices under shard_map ---------------------------------


def _build(rngs, axis):
  encoder = build_encoder("cnn_small", rngs=rngs, bn_axis_name=axis, widths=(8, 16),
                          strides=(1, 2), in_channels=3)
  projector = MLPHead(encoder.out_features, 16, 8, num_layers=2, output_norm="bn",
                      bn_axis_name=axis, rngs=rngs)
  return Bundle(encoder=encoder, projector=projector)


def _forward(nets, params, stats, x, *, axis):
  model = nets.bind(params, stats, axis_name=axis)
  z = model.projector(model.encoder(x, train=True), train=True)
  return z, nets.batch_stats(model)


def test_synced_batchnorm_shard_map_equals_one_device():
  assert jax.device_count() == 8
  nets = Networks(_build)
  params, stats = jax.jit(nets.init)(jax.random.key(0))
  x = jax.random.normal(jax.random.key(1), (16, 8, 8, 3)) * 2.0 + jnp.arange(16.0)[:, None,
                                                                                   None, None]
  z_one, stats_one = jax.jit(functools.partial(_forward, nets, axis=None))(params, stats, x)

  mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  x_sharded = jax.device_put(x, jax.NamedSharding(mesh, P("data")))
  assert len(x_sharded.sharding.device_set) == 8
  assert {s.data.shape for s in x_sharded.addressable_shards} == {(2, 8, 8, 3)}

  def run(axis):
    fn = jax.shard_map(functools.partial(_forward, nets, axis=axis), mesh=mesh,
                       in_specs=(P(), P(), P("data")), out_specs=(P("data"), P()),
                       check_vma=axis is not None)
    return jax.jit(fn)(params, stats, x_sharded)

  z_synced, stats_synced = run("data")
  np.testing.assert_allclose(z_synced, z_one, rtol=1e-4, atol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               stats_synced, stats_one)
  # Negative control: without the axis name each device normalizes its own 2 examples.
  z_local, _ = run(None)
  assert not np.allclose(z_local, z_one, atol=1e-2)


@pytest.mark.parametrize("shape", [(8, 8, 1), (16, 16, 3)])
def test_every_encoder_fits_the_data_or_names_the_size_it_needs(shape):
  """Every registered encoder, fitted to digits-shaped and 16x16 RGB images, runs a forward pass
  on them (abstractly: shapes only, the registry's full widths), or is refused with the image size
  it needs and the key that sets it."""
  x = jax.ShapeDtypeStruct((2, *shape), jnp.float32)
  for name in encoder_names():
    try:
      kwargs = fit_encoder_kwargs(name, {}, shape)
    except ValueError as e:
      assert name.startswith("vit") and shape[0] == 8, (name, e)  # patch 16 on 8x8
      assert "multiple of 16" in str(e) and "--config.data.image_size=16" in str(e)
      continue
    assert kwargs["in_channels"] == shape[-1]
    tiny = {"width": 4} if "width" in kwargs or name.startswith("resnet") else {}
    encoder = nnx.eval_shape(lambda: build_encoder(name, rngs=nnx.Rngs(0), **kwargs, **tiny))
    graphdef, state = nnx.split(encoder)
    y = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x, train=True), state, x)
    assert y.shape == (2, encoder.out_features), name


def test_explicit_kwargs_win_and_mismatches_are_refused():
  assert fit_encoder_kwargs("vit_micro", {"image_size": 32}, (16, 16, 3))["image_size"] == 32
  with pytest.raises(ValueError, match=r"--config.encoder_kwargs.in_channels=3 but digits has 1 "
                                       r"channel.*--config.data.color=rgb"):
    fit_encoder_kwargs("resnet18", {"in_channels": 3}, (8, 8, 1), data="digits")
  with pytest.raises(ValueError, match=r"multiple of 4.*has 10x10.*--config.data.image_size=8 "
                                       r"or --config.encoder_kwargs.patch_size"):
    fit_encoder_kwargs("vit_micro", {}, (10, 10, 3))
  with pytest.raises(ValueError, match=r"cannot take .*1x1x1 images.*max-pools leave no pixel"
                                       r".*--config.data.image_size=N"):
    fit_encoder_kwargs("cnn_digits", {}, (1, 1, 1))
