"""Every registered method (:data:`ssl_jax.methods.METHODS`): two steps through the real engine on 1
device and on 8 simulated devices (``shard_map``) from the same state and the same global batches
give the same losses, gradient norms, metrics, parameters, BatchNorm statistics and method state;
every parameter moves and the batch really spans 8 devices. The negative control drops the loss's
``axis_name`` under the 8-device ``shard_map``: the engine must refuse it (``check_vma``: the
per-device loss is not the replicated global loss) or the comparison must fail.

A method added to the registry is covered without writing anything: its config is
``experiments/<name>_digits.py`` for an image method, ``experiments/<name>_<corpus>.py`` (the first
in name order) for a text method, else ``mlm_<TEXT_FALLBACK_CORPUS>`` switched with
``--config.method=<name>``; shrunk to a tiny encoder (text: the ``make_text_config`` fixture's),
heads of :data:`HEAD_DIM` units and a batch of a few examples per device. One compilation per
method and device count (shared by the tests of a method through :func:`_runs`).
"""

import functools
import pathlib

import jax
import numpy as np
import pytest

from ssl_jax import config as config_lib
from ssl_jax import methods
from ssl_jax.train.loop import build, example_batch_for, load_train_source
from ssl_jax.train.parallel import Engine
from ssl_jax.train.preprocess import make_preprocess

EXPERIMENTS = pathlib.Path(__file__).resolve().parents[2] / "experiments"
TEXT_FALLBACK_CORPUS = "pydoc"  # a text method without a recipe: mlm_pydoc switched to it
HEAD_DIM = 16
TINY_IMAGE = {
    "encoder_kwargs": "{'widths': (8, 16), 'strides': (1, 2), 'fc_features': 16}",
    "batch_size": "32",
}
# Health metrics every step, so that every metric is finite and compared (on other steps they are
# NaN placeholders).
COMMON = {"total_steps": "2", "log.health_every": "1", "log.tensorboard": "False", "quiet": "True"}
# Per-method tolerances, each with its reason; every other method uses DEFAULT_TOL.
DEFAULT_TOL = {"rtol": 1e-5, "atol": 1e-5}
TOLERANCES: dict[str, dict] = {
    # bt_off_diag sums the squares of the 240 off-diagonal cross-correlations (each a mean over
    # the batch, reduced over 8 devices in another order): float32 rounding of ~2e-5 relative.
    "barlow_twins": {"rtol": 1e-4, "atol": 1e-5},
}
_CACHE: dict = {}


def experiment_config(name: str, make_text_config):
  """The tiny config of method ``name``, from its experiment file (see the module docstring);
  text methods through the ``make_text_config`` fixture (a 1-block, 32-wide Transformer)."""
  if methods.modality(name) == "text":
    files = sorted(EXPERIMENTS.glob(f"{name}_*.py"))
    experiment = files[0].stem if files else f"{name}:{TEXT_FALLBACK_CORPUS}"
    return make_text_config(experiment, method=name, **COMMON)
  path = EXPERIMENTS / f"{name}_digits.py"
  assert path.exists(), f"image method {name!r} has no experiments/{name}_digits.py"
  overrides = list({**COMMON, **TINY_IMAGE, "method": name}.items())
  config = config_lib.load_config(str(path), overrides)
  # Heads: every *_dim hyperparameter shrunk (projector, predictor and expander widths).
  small = [(f"method_kwargs.{k}", str(HEAD_DIM)) for k, v in config.method_kwargs.items()
           if k.endswith("_dim") and isinstance(v, int) and v > HEAD_DIM]
  return config_lib.load_config(str(path), overrides + small)


def _host_batches(config, source, n: int, seed: int = 0) -> list[dict]:
  """``n`` global host batches of ``config.batch_size`` distinct examples with their index."""
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(n):
    idx = rng.choice(len(source), config.batch_size, replace=False)
    examples = [source[int(i)] for i in idx]
    batch = {k: np.stack([np.asarray(ex[k]) for ex in examples]) for k in examples[0]}
    batch["index"] = idx.astype(np.int32)
    out.append(batch)
  return out


def _run(config, source, batches, num_devices: int, *, drop_axis: bool = False):
  """Steps the engine over ``batches``: ``(host states before and after each step, metrics)``.
  With ``drop_axis`` the method's loss is called with ``axis_name=None`` whatever the engine
  passes."""
  devices = jax.devices()[:num_devices]
  method, engine, _ = build(config, len(source), devices=devices)
  if drop_axis:
    loss_fn = method.loss_fn
    method = method._replace(loss_fn=lambda *a, axis_name: loss_fn(*a, axis_name=None))
    engine = Engine(method, engine.tx, make_preprocess(config), global_batch_size=config.batch_size,
                    devices=devices, sync_bn=config.sync_bn)
  assert engine.num_devices == num_devices and engine.mode == "shard_map"
  state = engine.init_state(jax.random.key(0), example_batch_for(config, source))
  states, metrics = [jax.device_get(state)], []
  for batch in batches:
    placed = engine.put_batch(batch)
    for x in jax.tree.leaves(placed):
      assert len(x.sharding.device_set) == num_devices
    state, m = engine.step(state, placed)
    states.append(jax.device_get(state))
    metrics.append(jax.device_get(m))
  return states, metrics


def _setup(name: str, make_text_config):
  """``(config, source, two global host batches)`` of method ``name``, computed once."""
  if ("setup", name) not in _CACHE:
    config = experiment_config(name, make_text_config)
    source = load_train_source(config)
    _CACHE["setup", name] = config, source, _host_batches(config, source, 2)
  return _CACHE["setup", name]


def _runs(name: str, num_devices: int, make_text_config):
  """The states and metrics of two steps on ``num_devices`` devices, computed once."""
  if ("run", name, num_devices) not in _CACHE:
    _CACHE["run", name, num_devices] = _run(*_setup(name, make_text_config), num_devices)
  return _CACHE["run", name, num_devices]


def _assert_same(name, one, eight):
  """The two runs agree: metrics of each step, and the state after the last one."""
  tol = TOLERANCES.get(name, DEFAULT_TOL)
  (states1, metrics1), (states8, metrics8) = one, eight
  for m1, m8 in zip(metrics1, metrics8):
    assert set(m1) == set(m8)
    for key in m8:
      np.testing.assert_allclose(m8[key], m1[key], **tol, err_msg=f"{name}: metric {key}")
  last1, last8 = states1[-1], states8[-1]
  for part in ("params", "batch_stats", "method_state"):
    jax.tree.map(functools.partial(np.testing.assert_allclose, **tol,
                                   err_msg=f"{name}: {part}"),
                 getattr(last1, part), getattr(last8, part))


@pytest.mark.parametrize("name", sorted(methods.METHODS))
def test_one_device_equals_eight(name, make_text_config):
  one, eight = _runs(name, 1, make_text_config), _runs(name, 8, make_text_config)
  states8, metrics8 = eight
  for m in metrics8:
    assert m["skipped"] == 0
    for key, value in m.items():
      assert np.all(np.isfinite(value)), (name, key, value)
  assert int(states8[-1].step) == 2
  _assert_same(name, one, eight)
  moved = jax.tree.map(lambda a, b: not np.allclose(a, b), states8[0].params, states8[-1].params)
  assert all(jax.tree.leaves(moved)), (name, moved)


@pytest.mark.parametrize("name", sorted(methods.METHODS))
def test_negative_control_without_axis_name(name, make_text_config):
  """The loss without its axis name under the 8-device shard_map: refused by the engine, or the
  1-vs-8 comparison fails."""
  config, source, batches = _setup(name, make_text_config)
  try:
    dropped = _run(config, source, batches, 8, drop_axis=True)
  except ValueError as e:
    assert "replicated" in str(e), e
    return
  with pytest.raises(AssertionError):
    _assert_same(name, _runs(name, 1, make_text_config), dropped)
