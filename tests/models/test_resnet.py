"""ResNet encoders: parameter counts (torchvision), layout, BatchNorm modes, remat, dtypes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import lax

from ssl_jax.models import build_encoder
from ssl_jax.models.nnx_utils import Networks
from ssl_jax.models.resnet import BasicBlock, Bottleneck


def _abstract(name, **kwargs):
  return nnx.eval_shape(lambda: build_encoder(name, rngs=nnx.Rngs(0), **kwargs))


def _num_params(module) -> int:
  return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(nnx.state(module, nnx.Param)))


@pytest.mark.parametrize("name,num_classes,expected", [
    ("resnet18", 1000, 11_689_512),  # torchvision resnet18
    ("resnet34", 1000, 21_797_672),  # torchvision resnet34
    ("resnet50", 1000, 25_557_032),  # torchvision resnet50 (25.6M)
    ("resnet50", None, 25_557_032 - (2048 * 1000 + 1000)),  # 23.5M without the classifier
])
def test_parameter_counts(name, num_classes, expected):
  assert _num_params(_abstract(name, num_classes=num_classes)) == expected


def _abstract_forward(module, shape, **call_kwargs):
  graphdef, state = nnx.split(module)
  return jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x, **call_kwargs), state,
                        jax.ShapeDtypeStruct(shape, jnp.float32))


@pytest.mark.parametrize("name,kwargs,shape,out,features", [
    ("resnet18", {}, (2, 224, 224, 3), (2, 512), 512),
    ("resnet50", {}, (2, 224, 224, 3), (2, 2048), 2048),
    ("resnet50", {"num_classes": 1000}, (2, 224, 224, 3), (2, 1000), 2048),
    ("resnet18", {"stem": "cifar", "num_classes": 10}, (2, 32, 32, 3), (2, 10), 512),
    ("resnet34", {"stem": "cifar", "width": 32, "in_channels": 1}, (2, 28, 28, 1), (2, 256), 256),
])
def test_output_shapes(name, kwargs, shape, out, features):
  module = _abstract(name, **kwargs)
  y = _abstract_forward(module, shape, train=False)
  assert y.shape == out and y.dtype == jnp.float32
  assert module.out_features == features


def test_v15_layout_and_stems():
  r50 = _abstract("resnet50")
  first_of_stage2 = r50.blocks[3]
  assert first_of_stage2.conv1.strides == (1, 1) and first_of_stage2.conv2.strides == (2, 2)
  assert first_of_stage2.conv2.kernel.shape == (3, 3, 128, 128)
  assert first_of_stage2.shortcut.strides == (2, 2)
  assert first_of_stage2.shortcut.kernel.shape == (1, 1, 256, 512)
  assert r50.stem_conv.kernel.shape == (7, 7, 3, 64) and r50.stem_conv.strides == (2, 2)
  cifar = _abstract("resnet18", stem="cifar")
  assert cifar.stem_conv.kernel.shape == (3, 3, 3, 64) and cifar.stem_conv.strides == (1, 1)
  # 224 -> 112 (stem) -> 56 (max-pool) with the ImageNet stem; 32 stays 32 with the CIFAR one.
  r18 = _abstract("resnet18")
  assert _abstract_forward(r18.stem_conv, (1, 224, 224, 3)).shape == (1, 112, 112, 64)
  tiny = _abstract("resnet_tiny")
  assert [b.conv2.kernel.shape[-1] for b in tiny.blocks] == [16, 32, 64, 128]
  assert tiny.out_features == 128


def test_zero_init_residual():
  norm_kwargs = dict(momentum=0.9, epsilon=1e-5, axis_name=None)

  def block(cls, zero):
    return cls(8, 8, stride=2, zero_init_residual=zero, norm_kwargs=norm_kwargs,
               dtype=jnp.float32, conv_impl=None, rngs=nnx.Rngs(0))

  basic, bottleneck = block(BasicBlock, True), block(Bottleneck, True)
  np.testing.assert_array_equal(basic.bn2.bn.scale[...], 0.0)
  np.testing.assert_array_equal(bottleneck.bn3.bn.scale[...], 0.0)
  for bn in (basic.bn1, basic.shortcut_bn, bottleneck.bn1, bottleneck.bn2, bottleneck.shortcut_bn):
    np.testing.assert_array_equal(bn.bn.scale[...], 1.0)
  np.testing.assert_array_equal(block(BasicBlock, False).bn2.bn.scale[...], 1.0)
  # A zero-initialised block is relu(shortcut(x)) in eval mode (fresh statistics: BN = identity).
  x = jax.random.normal(jax.random.key(0), (2, 6, 6, 8))
  np.testing.assert_allclose(basic(x, train=False),
                             jax.nn.relu(basic.shortcut(x) / np.sqrt(1 + 1e-5)), rtol=1e-5,
                             atol=1e-6)


def test_bad_options():
  with pytest.raises(ValueError, match="imagenet, cifar"):
    _abstract("resnet18", stem="tiny")


# --- Real computation on resnet_tiny (8x8 inputs, batch 4), compiled once per module. ---------


@pytest.fixture(scope="module")
def tiny():
  nets = Networks(lambda rngs, axis: build_encoder("resnet_tiny", rngs=rngs, bn_axis_name=axis))
  params, stats = jax.jit(nets.init)(jax.random.key(0))

  @jax.jit
  def train_fwd(params, stats, x):
    model = nets.bind(params, stats)
    return model(x, train=True), nets.batch_stats(model)

  @jax.jit
  def eval_fwd(params, stats, x):
    model = nets.bind(params, stats)
    return model(x, train=False), nets.batch_stats(model)

  x = jax.random.uniform(jax.random.key(1), (4, 8, 8, 3))
  return nets, params, stats, train_fwd, eval_fwd, x


def test_batchnorm_train_vs_eval(tiny):
  nets, params, stats, train_fwd, eval_fwd, x = tiny
  y_train, stats_train = train_fwd(params, stats, x)
  y_eval, stats_eval = eval_fwd(params, stats, x)
  assert y_train.shape == (4, 128)
  # Eval mode leaves the running statistics alone; train mode moves every one of them.
  jax.tree.map(np.testing.assert_array_equal, stats_eval, stats)
  moved = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), stats_train, stats)
  assert all(jax.tree.leaves(moved))
  # Running mean of the stem BN = momentum 0.9 * 0 + 0.1 * batch mean of the stem conv output.
  kernel = params["stem_conv"]["kernel"]
  conv = lax.conv_general_dilated(x, kernel, (1, 1), ((1, 1), (1, 1)),
                                  dimension_numbers=("NHWC", "HWIO", "NHWC"))
  np.testing.assert_allclose(stats_train["stem_bn"]["bn"]["mean"], 0.1 * conv.mean((0, 1, 2)),
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(stats_train["stem_bn"]["bn"]["var"],
                             0.9 + 0.1 * conv.var((0, 1, 2)), rtol=1e-5)
  # Eval outputs of one example do not depend on the rest of the batch; train outputs do.
  y_eval_1, _ = eval_fwd(params, stats, jnp.tile(x[:1], (4, 1, 1, 1)))
  np.testing.assert_allclose(y_eval_1[0], y_eval[0], rtol=1e-5, atol=1e-6)
  y_train_1, _ = train_fwd(params, stats, jnp.concatenate([x[:1], x[1:] * 2.0 + 1.0]))
  assert not np.allclose(y_train_1[0], y_train[0], atol=1e-4)


def test_determinism(tiny):
  nets, params, stats, train_fwd, _, x = tiny
  params2, stats2 = jax.jit(nets.init)(jax.random.key(0))
  jax.tree.map(np.testing.assert_array_equal, params2, params)
  other, _ = jax.jit(nets.init)(jax.random.key(1))
  assert not np.allclose(other["stem_conv"]["kernel"], params["stem_conv"]["kernel"])
  np.testing.assert_array_equal(train_fwd(params, stats, x)[0], train_fwd(params2, stats2, x)[0])


def test_remat_same_values_and_gradients(tiny):
  _, params, stats, _, _, x = tiny
  grads = {}
  for remat in (False, True):
    nets = Networks(lambda rngs, axis, remat=remat: build_encoder("resnet_tiny", rngs=rngs,
                                                                  remat=remat))

    @jax.jit
    def loss_grad(params, stats, x, nets=nets):
      def loss(params):
        model = nets.bind(params, stats)
        return jnp.mean(model(x, train=True) ** 2), nets.batch_stats(model)
      return jax.value_and_grad(loss, has_aux=True)(params)

    grads[remat] = loss_grad(params, stats, x)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
               grads[True], grads[False])


def test_bfloat16_compute(tiny):
  _, params, stats, train_fwd, _, x = tiny
  nets = Networks(lambda rngs, axis: build_encoder("resnet_tiny", rngs=rngs, dtype=jnp.bfloat16))
  abstract_params, _ = nets.abstract_init()
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(abstract_params))
  y, new_stats = jax.jit(lambda p, s, x: (lambda m: (m(x, train=True), nets.batch_stats(m)))(
      nets.bind(p, s)))(params, stats, x)
  y_ref, stats_ref = train_fwd(params, stats, x)
  assert y.dtype == jnp.float32
  assert all(s.dtype == jnp.float32 for s in jax.tree.leaves(new_stats))
  np.testing.assert_allclose(y, y_ref, rtol=0.1, atol=0.05 * float(jnp.max(jnp.abs(y_ref))))
