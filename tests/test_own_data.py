"""Issue 18, replayed end to end through the command line (``ssl_jax.cli.main``, in process): a
user's own data with the default recipe and tiny networks, every outcome asserted.

* A folder of RGB PNGs of mixed sizes, some grayscale, one truncated, with no test split:
  ``data.on_corrupt=skip`` through ``pretrain`` (which holds out a stratified test split),
  ``eval`` (with ``--config.*`` overrides) and ``report``.
* A folder whose ``test/`` images are all grayscale and ``train/`` ones RGB: one colour decision
  for both splits, evaluated with the RGB run above as a transfer dataset.
* A channel-first npz: refused before anything is written, naming the layout.
* A ViT on digits: the encoder follows the data's 8x8x1 images.
* Ctrl-C during a run: a checkpoint of the step reached and a one-line message (exit 130); the
  same command resumes; a larger ``--config.total_steps`` extends the finished run.
"""

import json
import os
import pathlib
import signal

import numpy as np
import PIL.Image
import pytest

from ssl_jax import cli
from ssl_jax.evaluate.report import REPORT_DIR

TINY = ["--config.encoder_kwargs={'widths': (8, 16), 'strides': (1, 2), 'fc_features': 16}",
        "--config.batch_size=8", "--config.total_steps=2", "--config.log.tensorboard=False",
        "--config.eval.budgets=(1,)", "--config.eval.num_draws=1",
        "--config.eval.protocols=('knn',)", "--quiet"]
CLASSES = ("ant", "bee", "cat")


def _png(path: pathlib.Path, image: np.ndarray) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  PIL.Image.fromarray(image).save(path)


def _folder(root: pathlib.Path, per_class: int, *, gray: bool = False, seed: int = 0) -> None:
  """``root/<class>/<i>.png``: colour (or grayscale) noise images of varying sizes."""
  rng = np.random.default_rng(seed)
  for c, name in enumerate(CLASSES):
    for i in range(per_class):
      h, w = 10 + i % 3, 12 + c
      shape = (h, w) if gray else (h, w, 3)
      _png(root / name / f"{i}.png", rng.integers(0, 256, shape, dtype=np.uint8))


def _steps(workdir: pathlib.Path) -> list[int]:
  return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


@pytest.fixture(scope="module")
def rgb_run(tmp_path_factory):
  """Pretrains (then evaluates) on a folder without a test split: RGB and grayscale PNGs of
  several sizes, one of them truncated."""
  tmp = tmp_path_factory.mktemp("own")
  data = tmp / "imgs"
  _folder(data, 8)
  _png(data / "bee" / "gray.png", np.full((11, 13), 77, np.uint8))
  good = (data / "ant" / "0.png").read_bytes()
  (data / "cat" / "truncated.png").write_bytes(good[: len(good) // 2])
  workdir = tmp / "run"
  code = cli.main(["pretrain", "--workdir", str(workdir), f"--config.dataset=folder:{data}",
                   "--config.data.image_size=8", "--config.data.on_corrupt=skip", *TINY])
  return code, data, workdir


def test_rgb_folder_without_test_split_with_a_corrupt_file(rgb_run, capsys):
  code, _, workdir = rgb_run
  assert code == 0
  config = json.loads((workdir / "config.json").read_text())
  assert config["data"]["holdout"] == 0.2 and config["data"]["color"] == "auto"
  results = json.loads((workdir / "eval.json").read_text())
  assert set(results["knn"]) == {"ssl", "random_init", "raw"}
  # eval: the run's data settings (skip the truncated file, 8x8 RGB) and --config overrides.
  assert cli.main(["eval", "--workdir", str(workdir), "--config.eval.num_draws=2"]) == 0
  again = json.loads((workdir / "eval.json").read_text())
  assert "1_std" in again["knn"]["ssl"]  # two draws: a spread
  assert cli.main(["eval", "--workdir", str(workdir), "--config.method_kwargs.temperature=1.0"]
                  ) == cli.EXIT_BAD_INPUT
  assert "pretraining key" in capsys.readouterr().err
  assert cli.main(["eval", "--workdir", str(workdir), "--step", "999"]) == cli.EXIT_BAD_INPUT
  assert "available steps: 2" in capsys.readouterr().err
  assert cli.main(["report", "--workdir", str(workdir)]) == 0
  assert any((workdir / REPORT_DIR).iterdir())


def test_grayscale_test_split_gets_the_train_splits_channels(rgb_run, tmp_path):
  _, _, workdir = rgb_run
  mixed = tmp_path / "mixed"
  _folder(mixed / "train", 3, seed=1)
  _folder(mixed / "test", 2, gray=True, seed=2)
  assert cli.main(["eval", "--workdir", str(workdir), "--dataset", f"folder:{mixed}"]) == 0
  (written,) = [p for p in workdir.iterdir() if p.name.startswith("eval_folder") and
                "mixed" in p.name]
  assert set(json.loads(written.read_text())["knn"]) == {"ssl", "random_init", "raw"}


def test_channel_first_npz_is_refused_before_anything_is_written(tmp_path, capsys):
  path = tmp_path / "cf.npz"
  rng = np.random.default_rng(0)
  np.savez(path, x_train=rng.integers(0, 256, (20, 3, 8, 8), dtype=np.uint8),
           y_train=np.arange(20) % 2, x_test=rng.integers(0, 256, (6, 3, 8, 8), dtype=np.uint8),
           y_test=np.arange(6) % 2)
  workdir = tmp_path / "run"
  assert cli.main(["pretrain", "--workdir", str(workdir), f"--config.dataset=npz:{path}",
                   *TINY]) == cli.EXIT_BAD_INPUT
  err = capsys.readouterr().err
  assert "channel-first" in err and "transpose(0, 2, 3, 1)" in err
  assert not workdir.exists() or not any(workdir.iterdir())


def test_a_vit_on_digits(tmp_path):
  workdir = tmp_path / "vit"
  assert cli.main(["pretrain", "--workdir", str(workdir), "--config.encoder=vit_micro",
                   "--no-eval", *TINY[1:]]) == 0
  assert _steps(workdir) == [2]


def test_ctrl_c_then_resume_then_extend(tmp_path, monkeypatch, capsys):
  from ssl_jax.train.parallel import Engine  # pylint: disable=import-outside-toplevel
  step, calls = Engine.step, []

  def interrupted(self, state, batch):
    calls.append(1)
    if len(calls) == 2:
      os.kill(os.getpid(), signal.SIGINT)
    return step(self, state, batch)

  workdir = tmp_path / "run"
  args = ["pretrain", "--workdir", str(workdir), "--no-eval", *TINY,
          "--config.total_steps=4", "--config.checkpoint.every_steps=100"]
  monkeypatch.setattr(Engine, "step", interrupted)
  assert cli.main(args) == cli.EXIT_INTERRUPTED
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "Interrupted (Ctrl-C): saved a checkpoint at step 2" in err[0]
  assert _steps(workdir) == [2]
  monkeypatch.undo()
  assert cli.main(args) == 0  # the same command resumes
  assert _steps(workdir)[-1] == 4
  assert cli.main([*args[:-2], "--config.total_steps=6"]) == 0  # a longer run: extended
  assert _steps(workdir)[-1] == 6
  assert json.loads((workdir / "config.json").read_text())["total_steps"] == 6
