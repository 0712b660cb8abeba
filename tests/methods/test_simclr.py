"""SimCLR: the method contract, a 2-step smoke run on 8 devices, and learning on digits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax import methods
from ssl_jax.train.loop import build, example_batch, load_train_source



def test_registry_and_defaults():
  assert methods.get_module("simclr").default_config().temperature > 0
  with pytest.raises(ValueError, match="Unknown method 'simclrr'. Valid methods: .*simclr"):
    methods.get_module("simclrr")


def test_contract_shapes_and_views(make_config):
  config = make_config(**{"method_kwargs.proj_layers": 2, "method_kwargs.proj_hidden_dim": 32,
                          "method_kwargs.proj_dim": 8})
  method = methods.make("simclr", config)
  params, stats, mstate = method.init(jax.random.key(0), None)
  assert set(params) == {"encoder", "projector"} and mstate == {}
  images = jnp.zeros((4, 8, 8, 1))
  batch = {"views": {"a": images, "b": images + 0.1}}
  loss, (metrics, new_stats, _) = method.loss_fn(params, stats, mstate, batch, jax.random.key(1),
                                                 axis_name=None)
  assert np.isfinite(loss) and float(metrics["loss"]) == float(loss)
  assert jax.tree.structure(new_stats) == jax.tree.structure(stats)
  assert method.features(params, stats, images).shape == (4, 16)  # before the 8-wide projector
  with pytest.raises(ValueError, match="exactly 2 views"):
    method.loss_fn(params, stats, mstate, {"views": {"a": images}}, jax.random.key(1),
                   axis_name=None)


def test_two_steps_on_eight_devices(make_config):
  config = make_config(total_steps=2)
  source = load_train_source(config)
  _, engine, _ = build(config, len(source), source.image_shape)
  assert engine.num_devices == 8 and engine.mode == "shard_map"
  state = engine.init_state(jax.random.key(0), example_batch(64, source.image_shape))
  start = jax.device_get(state.params)
  rng = np.random.default_rng(0)
  for step in range(2):
    idx = rng.choice(len(source), 64, replace=False)
    batch = {"image": np.stack([source[int(i)]["image"] for i in idx]),
             "label": np.array([source[int(i)]["label"] for i in idx], np.int32),
             "index": idx.astype(np.int32)}
    state, metrics = engine.step(state, engine.put_batch(batch))
    assert np.isfinite(metrics["loss"]) and metrics["skipped"] == 0
  assert int(state.step) == 2
  moved = jax.tree.map(lambda a, b: not np.allclose(a, b), start, jax.device_get(state.params))
  assert all(jax.tree.leaves(moved))


@pytest.mark.slow
def test_learns_on_digits(tmp_path):
  """A short run of the default recipe: SSL features beat the same network at random init (and
  raw pixels) on every paired label draw, with 1 and 5 labels per class."""
  from ssl_jax import config as config_lib
  from ssl_jax.evaluate.runner import evaluate_workdir
  from ssl_jax.train.loop import pretrain

  config = config_lib.load_config(None, [
      ("total_steps", "250"), ("quiet", "True"), ("log.tensorboard", "False"),
      ("eval.budgets", "(1, 5)"), ("eval.protocols", "('linear',)")])
  pretrain(config, str(tmp_path))
  results, info = evaluate_workdir(str(tmp_path), print_table=False, return_info=True)
  per_draw = info["per_draw"]["linear"]
  for budget in ("1", "5"):
    ssl, rand, raw = (np.array(per_draw[s][budget]) for s in ("ssl", "random_init", "raw"))
    assert len(ssl) == 5
    assert (ssl - rand).min() > 0.08, (budget, ssl, rand)
    assert (ssl - raw).min() > 0.04, (budget, ssl, raw)
  print(results, per_draw)
  assert results["linear"]["ssl"]["1"] > 0.85
