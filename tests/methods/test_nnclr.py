"""NNCLR: the method contract and its loss, the support queue (global-batch pushes in order, the
same on 1 and 8 devices, nothing pushed on a skipped step), and learning on digits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax import losses, methods
from ssl_jax.losses.utils import l2_normalize
from ssl_jax.train.preprocess import make_view_preprocess

HEADS = {"method": "nnclr", "method_kwargs.proj_hidden_dim": 32, "method_kwargs.proj_dim": 8,
         "method_kwargs.pred_hidden_dim": 32, "method_kwargs.queue_size": 160}


def test_defaults_follow_the_paper():
  kw = methods.get_module("nnclr").default_config()
  assert (kw.temperature, kw.queue_size, kw.proj_hidden_dim, kw.proj_dim, kw.pred_hidden_dim) == (
      0.1, 98304, 2048, 256, 4096)
  assert (kw.proj_layers, kw.pred_layers) == (3, 2)


def test_push_and_gather():
  queue = jnp.arange(10.0).reshape(5, 2)
  np.testing.assert_array_equal(methods.get_module("nnclr").push(queue, -jnp.ones((2, 2))),
                                [[4, 5], [6, 7], [8, 9], [-1, -1], [-1, -1]])
  big = jnp.arange(14.0).reshape(7, 2)  # a global batch larger than the queue: its last rows
  np.testing.assert_array_equal(methods.get_module("nnclr").push(queue, big), big[2:])


def test_contract_and_loss(make_config):
  """The loss is ``(InfoNCE(NN(z_a), p_b) + InfoNCE(NN(z_b), p_a)) / 2`` with the networks run by
  hand; the returned state has the first view's normalized projections and labels at the end;
  ``pred_layers=0`` gives :func:`losses.nnclr` exactly."""
  config = make_config(**HEADS)
  module = methods.get_module("nnclr")
  method = methods.make("nnclr", config)
  params, stats, mstate = method.init(jax.random.key(0), None)
  assert set(params) == {"encoder", "projector", "predictor"}
  queue = mstate["queue"]
  assert queue.shape == (160, 8) and mstate["queue_label"].shape == (160,)
  np.testing.assert_allclose(np.linalg.norm(queue, axis=1), 1.0, rtol=1e-5)
  assert (np.asarray(mstate["queue_label"]) == -1).all()

  rng = np.random.default_rng(0)
  x_a, x_b = (jnp.asarray(rng.random((12, 8, 8, 1)), jnp.float32) for _ in range(2))
  labels = jnp.asarray(rng.integers(0, 10, 12), jnp.int32)
  batch = {"views": {"a": x_a, "b": x_b}, "label": labels}
  loss, (metrics, new_stats, new_mstate) = method.loss_fn(params, stats, mstate, batch,
                                                          jax.random.key(1), axis_name=None)
  assert float(metrics["loss"]) == float(loss) and float(metrics["nn_acc"]) == 0.0
  assert jax.tree.structure(new_stats) == jax.tree.structure(stats)

  model = module.build_networks(config).bind(params, stats)
  z = [model.projector(model.encoder(x, train=True), train=True) for x in (x_a, x_b)]
  p = [model.predictor(zz, train=True) for zz in z]
  nn_a, _ = losses.nearest_neighbour(z[0], queue)
  nn_b, _ = losses.nearest_neighbour(z[1], queue)
  expected = 0.5 * (losses.infonce(nn_a, p[1], temperature=0.1)
                    + losses.infonce(nn_b, p[0], temperature=0.1))
  np.testing.assert_allclose(loss, expected, rtol=1e-5)
  np.testing.assert_allclose(new_mstate["queue"][-12:], l2_normalize(z[0]), rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(new_mstate["queue"][:-12], queue[12:])
  np.testing.assert_array_equal(new_mstate["queue_label"][-12:], labels)

  # A second step sees the pushed labels: its own examples are now the nearest neighbours.
  _, (metrics, _, _) = method.loss_fn(params, stats, new_mstate, batch, jax.random.key(1),
                                      axis_name=None)
  assert float(metrics["nn_acc"]) == 1.0

  no_pred = make_config(**HEADS, **{"method_kwargs.pred_layers": 0})
  method = methods.make("nnclr", no_pred)
  params, stats, mstate = method.init(jax.random.key(0), None)
  assert set(params) == {"encoder", "projector"}
  loss, _ = method.loss_fn(params, stats, mstate, batch, jax.random.key(1), axis_name=None)
  model = module.build_networks(no_pred).bind(params, stats)
  z = [model.projector(model.encoder(x, train=True), train=True) for x in (x_a, x_b)]
  np.testing.assert_allclose(loss, losses.nnclr(z[0], z[1], mstate["queue"], temperature=0.1),
                             rtol=1e-5)
  assert method.features(params, stats, {}, x_a).shape == (12, 16)  # the encoder's output


def test_queue_on_one_and_eight_devices_with_a_skipped_step(make_config, digits_batches,
                                                            run_steps):
  """Through the engine (shard_map), 3 steps with step 1 made non-finite, on 1 and on 8 devices:

  * after step 0 the newest 64 rows are the normalized projections of the global batch's first
    view, in global-batch order (labels too), computed here by hand from the initial weights;
  * step 1 is skipped: queue and labels exactly as before;
  * step 2 pushes its batch behind step 0's;
  * the queues on 1 and 8 devices agree at every step.
  """
  config = make_config(**HEADS, total_steps=3, **{"debug.nan_at_step": 1})
  source, sent = digits_batches(config, 3, seed=1)
  queues = {}
  for num_devices in (1, 8):
    engine, states, metrics = run_steps(config, source, sent, devices=jax.devices()[:num_devices])
    assert engine.num_devices == num_devices and engine.mode == "shard_map"
    for step, m in enumerate(metrics):
      assert int(m["skipped"]) == (step == 1)
      assert step == 1 or np.isfinite(m["loss"]) and 0 <= m["nn_acc"] <= 1
    initial, history = states[0], [s.method_state for s in states[1:]]
    queues[num_devices] = history

    assert (history[0]["queue_label"][:-64] == -1).all()
    np.testing.assert_array_equal(history[0]["queue_label"][-64:], sent[0]["label"])
    jax.tree.map(np.testing.assert_array_equal, history[1], history[0])  # skipped: no push
    np.testing.assert_array_equal(history[2]["queue_label"][-128:-64], sent[0]["label"])
    np.testing.assert_array_equal(history[2]["queue_label"][-64:], sent[2]["label"])
    np.testing.assert_array_equal(history[2]["queue"][-128:-64], history[0]["queue"][-64:])

    if num_devices == 1:  # the pushed rows, recomputed by hand from the initial weights
      preprocess = make_view_preprocess(config.views)
      aug_key, _ = jax.random.split(jax.random.fold_in(initial.rng, 0))
      views = preprocess(sent[0], aug_key)["views"]
      params, stats = jax.tree.map(jnp.asarray, (initial.params, initial.batch_stats))
      model = methods.get_module("nnclr").build_networks(config).bind(params, stats)
      z_a = model.projector(model.encoder(views["a"], train=True), train=True)
      np.testing.assert_allclose(history[0]["queue"][-64:], l2_normalize(z_a), rtol=1e-4,
                                 atol=1e-5)
      np.testing.assert_array_equal(history[0]["queue"][:-64], initial.method_state["queue"][64:])

  for one, eight in zip(queues[1], queues[8]):
    np.testing.assert_array_equal(one["queue_label"], eight["queue_label"])
    np.testing.assert_allclose(one["queue"], eight["queue"], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_learns_on_digits(learns_on_digits):
  """A short run of the digits recipe: the encoder's features beat the same network at random
  init on every paired label draw, with 1 and 5 labels per class."""
  # fit/val: smallest gain over random init 0.190 (1 label) and 0.095 (5).
  learns_on_digits("nnclr", 150, margin=0.05)