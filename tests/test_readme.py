"""The README's promises: its two commands, CI running the second, and the loss example."""

import os
import re

import numpy as np

ROOT = os.path.join(os.path.dirname(__file__), "..")


def _readme():
  return open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()


def test_readme_starts_with_two_commands_and_ci_runs_the_second():
  first_block = re.search(r"```bash\n(.*?)```", _readme(), re.S).group(1).strip().splitlines()
  assert len(first_block) == 2
  setup_and_run, setup_and_test = first_block
  assert "ssl-jax pretrain" in setup_and_run and "pytest" in setup_and_test
  ci = open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8").read().splitlines()
  assert setup_and_test in ci


def test_loss_example_runs_and_matches_one_device():
  code = re.search(r"## Compose a loss.*?```python\n(.*?)```", _readme(), re.S).group(1)
  assert len(code.strip().splitlines()) <= 12
  scope = {}
  exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - our own documentation
  import jax
  from ssl_jax.losses import ntxent
  w, x_a, x_b = np.eye(8, 4), scope["x_a"], scope["x_b"]
  expected = ntxent(x_a @ w, x_b @ w, temperature=0.2)
  np.testing.assert_allclose(scope["loss"], expected, rtol=1e-5)
  grad = jax.grad(lambda w: ntxent(x_a @ w, x_b @ w, temperature=0.2))(w)
  np.testing.assert_allclose(scope["grad"], grad, rtol=1e-4, atol=1e-7)
  assert jax.device_count() == 8


def _method_rows() -> dict:
  """``{method: row name}`` of the README's results table: every registered image method, named
  by its module's ``DISPLAY_NAME`` (as ``ssl-jax compare`` names the rows)."""
  from ssl_jax import methods
  return {name: methods.display_name(name) for name in methods.METHODS
          if methods.modality(name) == "image"}


def test_results_table_is_the_recorded_runs():
  """The README's results table is ``compare_markdown`` of the eval.json files recorded in
  docs/results/digits/ (no hand-edited number), and each recorded run used its method's digits
  recipe as the experiment file gives it today."""
  import json

  from ssl_jax.config import load_config, state_affecting_diff
  from ssl_jax.evaluate.table import compare_markdown

  results_dir = os.path.join(ROOT, "docs", "results", "digits")
  runs = {}
  for method, row in _method_rows().items():
    with open(os.path.join(results_dir, f"{method}_eval.json"), encoding="utf-8") as f:
      runs[row] = json.load(f)
    with open(os.path.join(results_dir, f"{method}_config.json"), encoding="utf-8") as f:
      recorded = json.load(f)
    current = json.loads(load_config(os.path.join(ROOT, "experiments", f"{method}_digits.py"))
                         .to_json())
    assert not state_affecting_diff(recorded, current), method
  assert compare_markdown(runs) in _readme()


def test_readme_runlocal_command_without_prepared_data_gives_the_prepared_data_message(
    tmp_path, capsys):
  """The README's ``ssl-jax pretrain --config experiments/simclr_cifar10.py:runlocal`` on a machine
  where CIFAR-10 was never prepared: exit code 2, the message that says how to prepare it, and
  nothing written to the workdir."""
  from ssl_jax import cli
  line = re.search(r"^ssl-jax (pretrain --config experiments/simclr_cifar10\.py:runlocal)\b",
                   _readme(), re.M).group(1)
  workdir = tmp_path / "run"
  args = line.split() + [f"--config.data_dir={tmp_path / 'tfds'}", "--workdir", str(workdir)]
  args[2] = os.path.join(ROOT, args[2])
  assert cli.main(args) == cli.EXIT_BAD_INPUT
  err = capsys.readouterr().err
  assert "no ArrayRecord data for 'cifar10'" in err
  assert "tfds build cifar10 --file_format=array_record" in err
  assert not workdir.exists()


def test_mnist_results_table_is_the_recorded_run():
  """The README's MNIST table is ``compare_markdown`` of docs/results/mnist/simclr_eval.json, a
  run of experiments/simclr_mnist.py as the file gives it today, and SimCLR's 1- and 10-label
  linear probes beat the raw pixels' by a wide margin."""
  import json

  from ssl_jax.config import load_config, state_affecting_diff
  from ssl_jax.evaluate.table import compare_markdown

  results_dir = os.path.join(ROOT, "docs", "results", "mnist")
  with open(os.path.join(results_dir, "simclr_eval.json"), encoding="utf-8") as f:
    results = json.load(f)
  with open(os.path.join(results_dir, "simclr_config.json"), encoding="utf-8") as f:
    recorded = json.load(f)
  current = json.loads(load_config(os.path.join(ROOT, "experiments", "simclr_mnist.py")).to_json())
  assert not state_affecting_diff(recorded, current)
  assert recorded["dataset"] == "mnist" and recorded["test_split"] == "test"
  assert compare_markdown({"SimCLR": results}) in _readme()
  for budget in ("1", "10"):
    assert results["linear"]["ssl"][budget] > results["linear"]["raw"][budget] + 0.1


# Appended to each `ssl-jax pretrain` line of the README's "Command line" block, before the line's
# own arguments (which win): the same command, shrunk to a smoke run (2 small steps; evaluation
# with 1 label per class, one draw, kNN only).
SHRINK = ["--config.total_steps=2", "--config.batch_size=64", "--config.eval.budgets=(1,)",
          "--config.eval.num_draws=1", "--config.eval.protocols=('knn',)",
          "--config.log.tensorboard=False", "--config.data_dir={tfds}", "--quiet"]
# The benchmark command times real ResNet-18 / ViT steps (minutes); tests/test_benchmarks.py runs
# the bench command line on its small suites instead.
NOT_RUN = ("bench",)


def _command_lines(section: str) -> list[list[str]]:
  """The ``ssl-jax`` lines of a README section's bash block: comments and ``[optional]`` parts
  dropped, split into arguments."""
  block = re.search(rf"## {section}\n.*?```bash\n(.*?)```", _readme(), re.S).group(1)
  lines = []
  for line in block.splitlines():
    line = re.sub(r"\[[^\]]*\]", "", line.split("#")[0]).strip()
    if line.startswith("ssl-jax "):
      lines.append(line.split()[1:])
  return lines


def test_every_command_line_example_runs_or_gives_the_prepared_data_message(
    tmp_path, monkeypatch, capsys):
  """Each command of the README's "Command line" block, in order, in a fresh directory (so
  ``runs/`` is created there): pretraining commands shrunk by :data:`SHRINK`; a CIFAR-10 recipe
  ends in the prepared-data message (nothing is prepared here)."""
  from ssl_jax import cli
  monkeypatch.chdir(tmp_path)
  (tmp_path / "experiments").symlink_to(os.path.join(ROOT, "experiments"))
  lines = _command_lines("Command line")
  assert len(lines) >= 8 and lines[0] == ["pretrain"]
  ran = []
  for args in lines:
    if args[0] in NOT_RUN:
      continue
    if args[0] == "pretrain":
      args = ["pretrain", *(a.format(tfds=tmp_path / "tfds") for a in SHRINK), *args[1:]]
      if any("pydoc" in a for a in args):  # a language model's evaluation reads every docstring
        args.append("--no-eval")
    code = cli.main(args)
    out, err = capsys.readouterr()
    if any("cifar10" in a for a in args):
      assert code == cli.EXIT_BAD_INPUT and "tfds build cifar10" in err, (args, err)
    else:
      assert code == 0, (args, out, err)
    ran.append(args[0])
  assert {"pretrain", "eval", "compare", "report"} <= set(ran)
  assert (tmp_path / "runs" / "simclr_digits" / "eval.json").exists()
  assert (tmp_path / "runs" / "simclr_digits" / "report" / "summary.md").exists()
