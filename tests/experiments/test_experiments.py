"""Tests for the recipes in ``experiments/``: every config loads, and the ``runlocal`` shrinks run
end to end through the command line (in-process), pretraining then writing ``eval.json``.

CIFAR-10 cannot be downloaded here, so its recipe runs under ``tfds.testing.mock_data``: random
32x32x3 uint8 images with labels in 0..9 from the dataset's own feature spec
(``MockPolicy.USE_CODE``: from the builder class, no metadata files), the same examples for every
split.
"""

import json
import os
import pathlib

import numpy as np
import pytest

from ssl_jax import cli
from ssl_jax.config import load_config
from ssl_jax.evaluate.table import format_table

EXPERIMENTS = pathlib.Path(__file__).resolve().parents[2] / "experiments"
EXPERIMENT_FILES = sorted(EXPERIMENTS.glob("*.py"))
SOURCES = {"ssl", "random_init", "raw"}
NUM_MOCK_EXAMPLES = 64


def test_experiments_are_found():
  names = {p.name for p in EXPERIMENT_FILES}
  assert {"simclr_digits.py", "simclr_cifar10.py"} <= names


@pytest.mark.parametrize("path", EXPERIMENT_FILES, ids=lambda p: p.name)
def test_config_loads_with_and_without_runlocal(path):
  """Each file's ``get_config()`` passes :func:`load_config`'s checks, and so does its ``runlocal``
  shrink, which bounds the run with ``total_steps``; a mistyped argument is refused."""
  full = load_config(str(path))
  small = load_config(f"{path}:runlocal")
  for config in (full, small):
    assert config.dataset and config.method and config.encoder
  assert small.total_steps is not None and small.total_steps > 0
  with pytest.raises(ValueError, match="runlocal"):
    load_config(f"{path}:no_such_argument")


def _check_eval_json(workdir, config) -> dict:
  """Checks ``eval.json`` against the design notes' schema and the run's eval config."""
  with open(os.path.join(workdir, "eval.json"), encoding="utf-8") as f:
    results = json.load(f)
  assert set(results) == set(config.eval.protocols) == {"linear", "knn"}
  budgets = {str(b) for b in config.eval.budgets}
  for protocol, by_source in results.items():
    assert set(by_source) == SOURCES, protocol
    for source, row in by_source.items():
      where = f"{protocol}/{source}"
      assert budgets <= set(row), where
      assert set(row) <= budgets | {f"{b}_std" for b in budgets}, where
      assert f"{config.eval.budgets[0]}_std" in row, where  # several draws: a std
      for key, value in row.items():
        assert isinstance(value, float) and np.isfinite(value), (where, key)
        assert 0.0 <= value <= (1.0 if not key.endswith("_std") else 0.5), (where, key, value)
  return results


def _check_printed_table(out: str, results: dict, workdir) -> None:
  """The table printed at the end is the table of ``eval.json`` (row order aside)."""
  assert set(format_table(results).splitlines()) <= set(out.splitlines())
  assert f"Wrote {os.path.join(workdir, 'eval.json')}" in out


def _run_cli(config_arg: str, workdir) -> int:
  return cli.main(["pretrain", "--config", config_arg, "--workdir", str(workdir), "--quiet"])


@pytest.mark.slow
def test_simclr_digits_runlocal_cli(tmp_path, capsys):
  """``ssl-jax pretrain --config experiments/simclr_digits.py:runlocal``: pretrain, evaluate."""
  config_arg = f"{EXPERIMENTS / 'simclr_digits.py'}:runlocal"
  config = load_config(config_arg)
  assert _run_cli(config_arg, tmp_path) == 0
  out = capsys.readouterr().out
  assert sorted(os.listdir(tmp_path / "checkpoints")) == [str(config.total_steps)]
  results = _check_eval_json(tmp_path, config)
  _check_printed_table(out, results, tmp_path)
  assert "on digits: train 1257 / test 540 examples, 10 classes" in out


@pytest.mark.slow
def test_simclr_cifar10_runlocal_cli_on_mock_data(tmp_path, capsys):
  """The CIFAR-10 recipe's ``runlocal`` shrink (``resnet_tiny``, 2 steps), end to end on mock
  data."""
  tfds = pytest.importorskip("tensorflow_datasets")
  from ssl_jax.data import load_source  # pylint: disable=import-outside-toplevel

  config_arg = f"{EXPERIMENTS / 'simclr_cifar10.py'}:runlocal"
  config = load_config(config_arg)
  assert (config.dataset, config.encoder, config.total_steps) == ("tfds:cifar10", "resnet_tiny", 2)
  with tfds.testing.mock_data(num_examples=NUM_MOCK_EXAMPLES,
                              policy=tfds.testing.MockPolicy.USE_CODE):
    # The mock follows CIFAR-10's feature spec, and every class has an example (budget 1).
    source = load_source(config.dataset, config.train_split)
    assert (len(source), source.image_shape, source.num_classes) == (
        NUM_MOCK_EXAMPLES, (32, 32, 3), 10)
    first = source[0]
    assert first["image"].dtype == np.uint8 and first["label"].dtype == np.int32
    labels = np.asarray([ex["label"] for ex in source.__getitems__(range(len(source)))])
    assert set(labels.tolist()) == set(range(10))

    assert _run_cli(config_arg, tmp_path) == 0
  out = capsys.readouterr().out
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2"]
  with open(tmp_path / "metrics.jsonl", encoding="utf-8") as f:
    steps = [json.loads(line)["step"] for line in f if line.strip()]
  assert steps and steps[0] == 1  # the first step is always logged
  results = _check_eval_json(tmp_path, config)
  _check_printed_table(out, results, tmp_path)
  assert (f"on tfds:cifar10: train {NUM_MOCK_EXAMPLES} / test {NUM_MOCK_EXAMPLES} examples, "
          "10 classes") in out


def _pretrain_without_eval_and_check(config_arg, config, workdir, capsys) -> None:
  """``ssl-jax pretrain --no-eval`` succeeds, checkpoints the last step and logs finite losses."""
  code = cli.main(["pretrain", "--config", config_arg, "--workdir", str(workdir), "--quiet",
                   "--no-eval"])
  assert code == 0, capsys.readouterr()
  assert sorted(os.listdir(workdir / "checkpoints")) == [str(config.total_steps)]
  with open(workdir / "metrics.jsonl", encoding="utf-8") as f:
    logged = [json.loads(line) for line in f if line.strip()]
  assert logged and all(np.isfinite(m["loss"]) for m in logged)


PAPER_RECIPES = sorted(p for p in EXPERIMENT_FILES
                       if p.stem.endswith(("_cifar10", "_imagenet")) and p.stem != "simclr_cifar10")


@pytest.mark.slow
@pytest.mark.parametrize("path", PAPER_RECIPES, ids=lambda p: p.stem)
def test_paper_recipe_runlocal_pretrains_on_mock_data(path, tmp_path, capsys):
  """Each method's CIFAR-10 / ImageNet recipe, shrunk by ``runlocal`` (tiny encoder and heads,
  the recipe's own views, optimizer and method state), pretrains its 2 steps through the command
  line on ``tfds.testing.mock_data`` and checkpoints them (evaluation is covered above)."""
  tfds = pytest.importorskip("tensorflow_datasets")
  config_arg = f"{path}:runlocal"
  config = load_config(config_arg)
  with tfds.testing.mock_data(num_examples=NUM_MOCK_EXAMPLES,
                              policy=tfds.testing.MockPolicy.USE_CODE):
    _pretrain_without_eval_and_check(config_arg, config, tmp_path, capsys)


TEXT_ACCELERATOR_RECIPES = ("bert_base_wikipedia", "gpt2_small_lm1b")


@pytest.mark.parametrize("name", TEXT_ACCELERATOR_RECIPES)
def test_text_accelerator_recipes_have_the_papers_sizes(name):
  """BERT-base / GPT-2 small as configured, counted abstractly (``jax.eval_shape``): the papers'
  parameter counts once the recipe's tokenizer has its full vocabulary."""
  from flax import nnx

  from ssl_jax.models.text import build_text_encoder, count_params
  config = load_config(str(EXPERIMENTS / f"{name}.py"))
  vocab = int(config.text.tokenizer.split(":")[1])
  model = nnx.eval_shape(lambda: build_text_encoder(config.encoder, vocab_size=vocab,
                                                    rngs=nnx.Rngs(0),
                                                    **config.encoder_kwargs.to_dict()))
  expected = {"bert_base_wikipedia": 109_482_240, "gpt2_small_lm1b": 124_439_808}[name]
  assert count_params(nnx.state(model, nnx.Param)) == expected
  assert config.compute_dtype == "bfloat16"


@pytest.mark.slow
@pytest.mark.parametrize("name", TEXT_ACCELERATOR_RECIPES)
def test_text_accelerator_recipe_runlocal_pretrains_on_mock_data(name, tmp_path, capsys):
  """The recipe's ``runlocal`` shrink (tiny Transformer, a 300-entry vocabulary trained on the
  served text) pretrains 2 steps through the command line under ``tfds.testing.mock_data``."""
  tfds = pytest.importorskip("tensorflow_datasets")
  from ssl_jax.data import load_corpus  # pylint: disable=import-outside-toplevel
  config_arg = f"{EXPERIMENTS / name}.py:runlocal"
  config = load_config(config_arg)
  # TFDS's random mock text has no sentences to pair (NSP): serve real prose (Python's help
  # texts) through the dataset's own feature spec instead.
  texts = load_corpus("pydoc", "validation").documents

  class Prose(list):
    def __init__(self, builder):
      super().__init__({"text": texts[i % len(texts)].encode(), "title": b"t"}
                       for i in range(NUM_MOCK_EXAMPLES))
      self.dataset_info = builder.info

    def __getitems__(self, keys):
      return [self[k] for k in keys]

  with tfds.testing.mock_data(num_examples=NUM_MOCK_EXAMPLES,
                              as_data_source_fn=lambda builder, **_: Prose(builder)):
    _pretrain_without_eval_and_check(config_arg, config, tmp_path, capsys)
