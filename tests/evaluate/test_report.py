"""The visual report: figures exist and are real PNGs, the summary carries eval.json's numbers,
bad input gives a clear error, and the CLI writes it."""

import json
import os
import struct

import numpy as np
import pytest

from ssl_jax import cli
from ssl_jax.evaluate import report

EVAL = {"linear": {"ssl": {"1": 0.712, "1_std": 0.031, "5": 0.884, "5_std": 0.012, "all": 0.953},
                   "random_init": {"1": 0.401, "1_std": 0.052, "5": 0.623, "5_std": 0.02,
                                   "all": 0.871},
                   "raw": {"1": 0.699, "1_std": 0.014, "5": 0.85, "5_std": 0.01, "all": 0.967}},
        "knn": {"ssl": {"1": 0.705, "1_std": 0.03, "all": 0.941}}}


def png_size(path):
  with open(path, "rb") as f:
    head = f.read(24)
  assert head[:8] == b"\x89PNG\r\n\x1a\n", path
  return struct.unpack(">II", head[16:24])


@pytest.fixture(scope="module")
def written(tiny_workdir):
  with open(os.path.join(tiny_workdir, "eval.json"), "w", encoding="utf-8") as f:
    json.dump(EVAL, f)
  return report.write_report(tiny_workdir, max_points=300)


def test_figures_are_valid_pngs_of_sane_size(written):
  out = os.path.dirname(written)
  for name in ("training.png", "health.png", "fewshot.png", "embedding.png"):
    width, height = png_size(os.path.join(out, name))
    assert 300 <= width <= 3000 and 200 <= height <= 3000, (name, width, height)
    assert os.path.getsize(os.path.join(out, name)) > 10_000  # drawn, not blank


def test_summary_mentions_the_evaluation_numbers_and_figures(written):
  text = open(written, encoding="utf-8").read()
  assert "simclr on digits" in text
  for protocol, rows in EVAL.items():
    for row in rows.values():
      for key, value in row.items():
        if not key.endswith("_std"):
          cell = f"{100 * value:.1f}"
          if f"{key}_std" in row:
            cell += f" ± {100 * row[key + '_std']:.1f}"
          assert cell in text, (protocol, key, cell)
  for name in ("training.png", "health.png", "fewshot.png", "embedding.png"):
    assert f"({name})" in text
  assert "rankme" in text and "embedding_std_ratio" in text  # the health monitors' last values


def test_read_metrics_keeps_the_last_value_of_a_relogged_step(tmp_path):
  path = tmp_path / "metrics.jsonl"
  rows = [{"step": 1, "loss": 3.0}, {"step": 2, "loss": 2.0}, {"step": 2, "loss": 1.5},
          {"step": 3, "loss": None}]
  path.write_text("\n".join(json.dumps(r) for r in rows) + "\n{\"step\": 4, \"lo")
  steps, loss = report.read_metrics(str(path))["loss"]
  assert steps.tolist() == [1, 2] and loss.tolist() == [3.0, 1.5]


def test_projection_pca_and_tsne_separate_clusters():
  rng = np.random.default_rng(0)
  centers = rng.normal(size=(3, 16)) * 5
  x = np.concatenate([c + rng.normal(size=(30, 16)) for c in centers])
  for method in ("pca", "tsne"):
    p = report.project_2d(x, method=method)
    assert p.shape == (90, 2) and np.isfinite(p).all()
    means = np.stack([p[i * 30:(i + 1) * 30].mean(0) for i in range(3)])
    spread = max(p[i * 30:(i + 1) * 30].std(0).max() for i in range(3))
    gaps = [np.linalg.norm(means[i] - means[j]) for i in range(3) for j in range(i + 1, 3)]
    assert min(gaps) > 2 * spread, method
  with pytest.raises(ValueError, match="projection='umap'"):
    report.project_2d(x, method="umap")


def test_bad_workdir_is_a_clear_error(tmp_path, capsys):
  with pytest.raises(FileNotFoundError, match="not a directory"):
    report.write_report(str(tmp_path / "missing"))
  with pytest.raises(FileNotFoundError, match="config.json not found"):
    report.write_report(str(tmp_path))
  assert cli.main(["report", "--workdir", str(tmp_path / "missing")]) == cli.EXIT_BAD_INPUT
  assert "not a directory" in capsys.readouterr().err


def test_cli_report_without_embedding(tiny_workdir, capsys):
  assert cli.main(["report", "--workdir", tiny_workdir, "--no-embedding"]) == 0
  assert "report/summary.md" in capsys.readouterr().out


@pytest.mark.slow
def test_main_job_writes_the_report_and_says_where(tmp_path, capsys):
  """`ssl-jax pretrain` evaluates, then writes DIR/report/ and prints its path."""
  args = ["pretrain", "--workdir", str(tmp_path), "--quiet",
          "--config.encoder_kwargs={'widths': (8, 16), 'strides': (1, 2), 'fc_features': 16}",
          "--config.batch_size=64", "--config.total_steps=4", "--config.log.tensorboard=False",
          "--config.eval.budgets=(1,)", "--config.eval.protocols=('knn',)"]
  assert cli.main(args) == 0
  out = capsys.readouterr().out
  summary = tmp_path / "report" / "summary.md"
  assert f"Report: {summary}" in out
  for name in ("training.png", "health.png", "fewshot.png", "embedding.png"):
    png_size(tmp_path / "report" / name)
  assert "online_probe_acc" in summary.read_text()


# ------------------------------------ evaluation and the report with the run's settings and steps
# (here because they share this module's tiny_workdir: each module that asks for it pretrains it)

import shutil  # noqa: E402

from PIL import Image  # noqa: E402

from ssl_jax.evaluate.features import checkpoint_step  # noqa: E402
from ssl_jax.evaluate.runner import eval_config, evaluate_workdir  # noqa: E402


def test_eval_config_takes_eval_and_data_keys_and_refuses_pretraining_keys(tiny_workdir):
  config = eval_config(tiny_workdir, [("eval.finetune.steps", "7"), ("data.image_size", "8"),
                                      ("eval.budgets", "(1, 'all')")])
  assert (config.eval.finetune.steps, config.data.image_size) == (7, 8)
  assert list(config.eval.budgets) == [1, "all"]
  with pytest.raises(ValueError, match="Unknown config key 'eval.finetune.stepz'"):
    eval_config(tiny_workdir, [("eval.finetune.stepz", "7")])
  with pytest.raises(ValueError, match=r"--config.method_kwargs.temperature is a pretraining key"):
    eval_config(tiny_workdir, [("method_kwargs.temperature", "0.5")])
  with pytest.raises(ValueError, match=r"with --dataset NAME"):
    eval_config(tiny_workdir, [("dataset", "npz:x.npz")])
  with pytest.raises(ValueError, match=r"finetune.steps must be a positive integer"):
    eval_config(tiny_workdir, [("eval.finetune.steps", "0")])
  for key, value in (("data.on_corrupt", "ignore"), ("data.color", "cmyk")):  # the run's checks
    with pytest.raises(ValueError, match=rf"--config.{key}='{value}' is not valid; choose one"):
      eval_config(tiny_workdir, [(key, value)])


def test_unknown_step_lists_the_steps_there(tiny_workdir, tmp_path, capsys):
  assert checkpoint_step(tiny_workdir) == 6
  with pytest.raises(FileNotFoundError, match=r"step 999 not found in .*checkpoints; available "
                                              r"steps: 3, 6\."):
    checkpoint_step(tiny_workdir, 999)
  assert cli.main(["eval", "--workdir", tiny_workdir, "--step", "999"]) == cli.EXIT_BAD_INPUT
  assert "available steps: 3, 6" in capsys.readouterr().err
  with pytest.raises(FileNotFoundError, match="no committed checkpoint in"):
    checkpoint_step(str(tmp_path))
  assert cli.main(["eval", "--workdir", tiny_workdir, "--config.encoder=resnet18"]) == 2
  assert "--config.encoder is a pretraining key" in capsys.readouterr().err
  assert cli.main(["report", "--workdir", tiny_workdir, "--config.eval.nope=1"]) == 2
  assert "Unknown config key 'eval.nope'" in capsys.readouterr().err


@pytest.fixture(scope="module")
def corrupt_folder_run(tiny_workdir, tmp_path_factory):
  """The tiny digits run's checkpoints in a workdir whose config.json says it pretrained on a
  folder of 8x8 grayscale PNGs (two classes, one truncated file) with data.on_corrupt=skip."""
  root = tmp_path_factory.mktemp("corrupt")
  rng = np.random.default_rng(0)
  for split, n in (("train", 4), ("test", 2)):
    for c in ("a", "b"):
      (root / "imgs" / split / c).mkdir(parents=True)
      for i in range(n):
        Image.fromarray(rng.integers(0, 255, (8, 8), np.uint8)).save(
            root / "imgs" / split / c / f"{i}.png")
  good = (root / "imgs" / "train" / "a" / "0.png").read_bytes()
  (root / "imgs" / "train" / "b" / "cut.png").write_bytes(good[:len(good) // 2])
  workdir = root / "run"
  shutil.copytree(tiny_workdir, workdir, ignore=shutil.ignore_patterns("eval*.json", "report"))
  config = json.loads((workdir / "config.json").read_text())
  config["dataset"] = f"folder:{root / 'imgs'}"
  config["data"]["on_corrupt"] = "skip"
  (workdir / "config.json").write_text(json.dumps(config))
  return str(workdir)


def test_eval_and_report_read_the_data_as_the_run_did(corrupt_folder_run):
  few = [("eval.budgets", "(1, 'all')"), ("eval.num_draws", "1")]
  results = evaluate_workdir(corrupt_folder_run, protocols="knn", print_table=False,
                             overrides=few)
  assert set(results["knn"]) == {"ssl", "random_init", "raw"}
  with pytest.raises(ValueError, match=r"corrupted image file .*cut\.png"):
    evaluate_workdir(corrupt_folder_run, protocols="knn", print_table=False,
                     overrides=[*few, ("data.on_corrupt", "error")])
  summary = report.write_report(corrupt_folder_run, config=eval_config(corrupt_folder_run))
  assert "embedding.png" in open(summary, encoding="utf-8").read()
