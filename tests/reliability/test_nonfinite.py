"""Non-finite steps hold back everything (EMA teacher and queue included); huge gradients clip."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from ssl_jax import losses
from ssl_jax.methods import Method
from ssl_jax.methods.common import ema, gather_global, push
from ssl_jax.models.nnx_utils import Networks
from ssl_jax.train.parallel import Engine

BATCH = 16


class Net(nnx.Module):

  def __init__(self, rngs, bn_axis_name):
    self.lin = nnx.Linear(4, 8, rngs=rngs)
    self.bn = nnx.BatchNorm(8, axis_name=bn_axis_name, rngs=rngs)

  def __call__(self, x):
    return self.bn(self.lin(x), use_running_average=False)


def teacher_queue_method(loss_scale=1.0) -> Method:
  """A method with every kind of state: BN statistics, an EMA teacher and a queue."""
  nets = Networks(Net)

  def init(rng, batch):
    params, stats = nets.init(rng)
    return params, stats, {"teacher": params, "queue": jnp.zeros((32, 8)), "ptr": jnp.zeros(
        (), jnp.int32)}

  def loss_fn(params, stats, mstate, batch, rng, *, axis_name):
    model = nets.bind(params, stats, axis_name=axis_name)
    z_a, z_b = model(batch["x"]), model(batch["x"] + 0.1)
    loss = loss_scale * losses.ntxent(z_a, z_b, temperature=0.5, axis_name=axis_name)
    queue, ptr = push(mstate["queue"], mstate["ptr"], gather_global(z_a, axis_name))
    new = dict(mstate, queue=queue, ptr=ptr)
    return loss, ({}, Networks.batch_stats(model), new)

  def update(params, stats, mstate, step):
    return dict(mstate, teacher=ema(mstate["teacher"], params, 0.9))

  return Method(init, loss_fn, update, lambda p, s, m, x: x)


def _engine(method, **kw):
  tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1)
  preprocess = lambda batch, key: {"x": batch["x"]}
  engine = Engine(method, tx, preprocess, global_batch_size=BATCH, **kw)
  state = engine.init_state(jax.random.key(0), {"x": jax.ShapeDtypeStruct((BATCH, 4), jnp.float32)})
  return engine, state


def _batch(seed):
  return {"x": np.random.default_rng(seed).normal(size=(BATCH, 4)).astype(np.float32)}


def test_nonfinite_step_holds_back_params_optimizer_stats_teacher_and_queue():
  engine, state = _engine(teacher_queue_method(), nan_at_step=1)
  state, m0 = engine.step(state, engine.put_batch(_batch(0)))
  assert m0["skipped"] == 0
  before = jax.device_get(state)
  assert np.abs(before.method_state["queue"]).sum() > 0  # the first step did push
  state, m1 = engine.step(state, engine.put_batch(_batch(1)))
  after = jax.device_get(state)
  assert m1["skipped"] == 1 and after.skips == 1 and after.total_skips == 1
  jax.tree.map(np.testing.assert_array_equal,
               (before.params, before.opt_state, before.batch_stats, before.method_state),
               (after.params, after.opt_state, after.batch_stats, after.method_state))
  state, m2 = engine.step(state, engine.put_batch(_batch(2)))
  assert m2["skipped"] == 0 and int(state.skips) == 0 and int(state.total_skips) == 1
  assert int(state.method_state["ptr"]) == 2 * BATCH % 32


def test_gradient_scaled_by_a_million_is_clipped_and_its_norm_logged():
  engine, state = _engine(teacher_queue_method(loss_scale=1e6), clip_norm=1.0)
  before = jax.device_get(state.params)
  state, metrics = engine.step(state, engine.put_batch(_batch(0)))
  assert metrics["grad_norm"] > 1e4  # the pre-clip norm is what is logged as grad_norm
  assert metrics["grad_norm_clipped"] <= 1.0 + 1e-5
  step = jax.tree.map(lambda a, b: np.asarray(a) - b, state.params, before)
  assert float(optax.tree.norm(step)) <= 0.1 * 1.0 + 1e-6  # lr x clipped norm
