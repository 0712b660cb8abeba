"""Fixtures shared by the method tests: digits batches, stepping the engine, the 8-device smoke
test, the learning test on digits and tiny text configs (1 vs 8 devices for every registered
method: test_one_vs_eight.py) (fixtures, since tests are imported with
``--import-mode=importlib`` and cannot import a conftest)."""

import pathlib

import jax
import numpy as np
import pytest

from ssl_jax.train.loop import build, example_batch, load_train_source

EXPERIMENTS = pathlib.Path(__file__).resolve().parents[2] / "experiments"


@pytest.fixture
def digits_batches():
  """``batches(config, n, size=64, seed=0) -> (source, [batch] * n)``: host batches (image,
  label, global index) drawn without replacement from the run's train split."""

  def batches(config, n, size=64, seed=0):
    source = load_train_source(config)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
      idx = rng.choice(len(source), size, replace=False)
      out.append({"image": np.stack([source[int(i)]["image"] for i in idx]),
                  "label": np.array([source[int(i)]["label"] for i in idx], np.int32),
                  "index": idx.astype(np.int32)})
    return source, out

  return batches


@pytest.fixture
def run_steps():
  """``run(config, source, batches, devices=None) -> (engine, states, metrics)``: the engine
  stepped over ``batches``; ``states`` holds the host state before the first step and after each
  one, ``metrics`` each step's host metrics."""

  def run(config, source, batches, devices=None):
    _, engine, _ = build(config, len(source), devices=devices)
    state = engine.init_state(jax.random.key(0),
                              example_batch(len(batches[0]["index"]), source.image_shape))
    states, metrics = [jax.device_get(state)], []
    for batch in batches:
      placed = engine.put_batch(batch)
      assert len(placed["image"].sharding.device_set) == engine.num_devices
      state, m = engine.step(state, placed)
      states.append(jax.device_get(state))
      metrics.append(jax.device_get(m))
    return engine, states, metrics

  return run


@pytest.fixture
def two_steps_on_eight_devices(digits_batches, run_steps):
  """``check(config, metric_keys=()) -> (states, metrics)``: two steps of the default parallel
  mode (``shard_map``) on 8 devices; the loss, the collapse monitor and ``metric_keys`` are
  finite, no step is skipped, and every parameter moved."""

  def check(config, metric_keys=()):
    source, batches = digits_batches(config, 2)
    engine, states, metrics = run_steps(config, source, batches)
    assert engine.num_devices == 8 and engine.mode == "shard_map"
    for m in metrics:
      assert m["skipped"] == 0
      for key in ("loss", "embedding_std_ratio", *metric_keys):
        assert np.isfinite(m[key]), (key, m)
    assert int(states[-1].step) == 2
    moved = jax.tree.map(lambda a, b: not np.allclose(a, b), states[0].params, states[-1].params)
    assert all(jax.tree.leaves(moved)), moved
    return states, metrics

  return check


# The learning tests' encoder: the digits recipe's ``cnn_digits`` at half width (16-32-64
# channels, 64 features), a quarter of its FLOPs, so that each test's run costs about half as
# much (compile and evaluation included). The tests check that each method learns; the recipes'
# own accuracies are measured at full size (docs/results). Each test's steps and margins were set
# on the fit/val split of the digits train set (values in each test's comment), never on test.
# The run is on one device: on the 8 simulated CPU devices of the test session this net's step
# takes twice as long (202 ms against 95 ms for Barlow Twins), and test_one_vs_eight.py already
# checks that 8 devices compute what one does.
HALF_WIDTH_DIGITS_NET = "{'widths': (16, 32, 64), 'fc_features': 64}"


@pytest.fixture
def learns_on_digits(tmp_path):
  """``check(method, steps, *, margin, raw_margin=None, overrides=()) -> (results, per_draw)``:
  a short run of ``experiments/<method>_digits.py`` on one device with the half-width encoder
  (:data:`HALF_WIDTH_DIGITS_NET`), then the few-label linear probe at 1 and 5 labels per class on
  the test split. On every paired label draw the SSL features beat the same network at random
  init by ``margin`` (and raw pixels by ``raw_margin`` when given)."""
  from ssl_jax import config as config_lib
  from ssl_jax.evaluate.runner import evaluate_workdir
  from ssl_jax.train.loop import pretrain

  def check(method, steps, *, margin, raw_margin=None, overrides=()):
    config = config_lib.load_config(str(EXPERIMENTS / f"{method}_digits.py"), [
        ("total_steps", str(steps)), ("quiet", "True"), ("log.tensorboard", "False"),
        ("encoder_kwargs", HALF_WIDTH_DIGITS_NET), ("eval.budgets", "(1, 5)"),
        ("eval.protocols", "('linear',)"), *overrides])
    pretrain(config, str(tmp_path), devices=jax.devices()[:1])
    results, info = evaluate_workdir(str(tmp_path), print_table=False, return_info=True)
    per_draw = info["per_draw"]["linear"]
    print(method, results, per_draw)
    for budget in ("1", "5"):
      ssl, rand, raw = (np.array(per_draw[s][budget]) for s in ("ssl", "random_init", "raw"))
      assert len(ssl) == config.eval.num_draws
      assert (ssl - rand).min() > margin, (budget, ssl, rand)
      if raw_margin is not None:
        assert (ssl - raw).min() > raw_margin, (budget, ssl, raw)
    return results, per_draw

  return check


TINY_TEXT = {
    "encoder_kwargs": "{'width': 32, 'depth': 1, 'num_heads': 2, 'mlp_dim': 64, 'max_len': 64, "
                      "'dropout': 0.1}",
    "text.seq_len": "32",
    "batch_size": "16",
    "total_steps": "10",
    "log.every_steps": "1",
    "log.tensorboard": "False",
    "quiet": "True",
}


@pytest.fixture
def make_text_config():
  """``make(experiment, **overrides)``: ``experiments/<experiment>.py`` with a 1-block, 32-wide
  Transformer on rows of 32 tokens, batch 16 (``experiment`` may name a method and its corpus as
  ``"nsp:pydoc"``: the mlm_pydoc recipe switched to that method)."""
  from ssl_jax import config as config_lib

  def make(experiment, **overrides):
    method = None
    if ":" in experiment:
      method, corpus = experiment.split(":")
      experiment = f"mlm_{corpus}"
    items = dict(TINY_TEXT)
    if method:
      items["method"] = method
    items.update({k: str(v) for k, v in overrides.items()})
    return config_lib.load_config(str(EXPERIMENTS / f"{experiment}.py"), list(items.items()))

  return make
