"""Bad input is refused by the command line with a message naming the problem (exit code 2)."""

import os

import numpy as np
import pytest
from PIL import Image

from ssl_jax import cli

TINY = ["--config.encoder_kwargs={'widths': (8, 16), 'strides': (1, 2), 'fc_features': 16}",
        "--config.batch_size=64", "--config.total_steps=1", "--config.log.tensorboard=False",
        "--quiet", "--no-eval"]


def run(tmp_path, *args):
  return cli.main(["pretrain", "--workdir", str(tmp_path / "run"), *TINY, *args])


@pytest.mark.parametrize("args, message", [
    (["--config.method=simclear"], "method='simclear' is not valid; choose one of: .*simclr"),
    (["--config.dataset=mnsit"], "unknown dataset name 'mnsit'; valid names: digits, mnist, tfds:"),
    (["--config.dataset=npz:/no/such.npz"], "no/such.npz"),
    (["--config.optimiser.lr=1"], "Unknown config key 'optimiser'. Valid keys here: .*optimizer"),
    (["--config.batch_size=0"], "batch_size must be a positive integer"),
    (["--config.batch_size=-8"], "batch_size must be a positive integer"),
    (["--config.batch_size=60"], "batch_size=60 must be a positive multiple of the number of "
                                 "devices \\(8\\)"),
    (["--config.encoder=resnet51"], "Unknown encoder 'resnet51'. Valid encoders: "),
    (["--config.views.a=flip(p=1)"], "unknown augmentation op 'flip'"),
    (["--config.parallel=gspmd", "--config.fsdp=maybe"], "Bad value for config.fsdp"),
])
def test_refused_with_a_message_naming_the_problem(tmp_path, capsys, args, message):
  assert run(tmp_path, *args) == cli.EXIT_BAD_INPUT
  import re
  assert re.search(message, capsys.readouterr().err), capsys.readouterr()


def test_wrong_image_shape_or_dtype(tmp_path, capsys):
  bad_rank = tmp_path / "rank.npz"
  np.savez(bad_rank, x_train=np.zeros((64, 8), np.uint8), y_train=np.zeros(64, np.int64))
  assert run(tmp_path, f"--config.dataset=npz:{bad_rank}") == cli.EXIT_BAD_INPUT
  assert "[N, H, W]" in capsys.readouterr().err
  bad_range = tmp_path / "range.npz"
  np.savez(bad_range, x_train=np.full((64, 8, 8), 3.0, np.float32),
           y_train=np.zeros(64, np.int64))
  assert run(tmp_path, f"--config.dataset=npz:{bad_range}") == cli.EXIT_BAD_INPUT
  assert "[0, 1]" in capsys.readouterr().err


def test_corrupt_image_in_folder_is_refused_or_skipped_per_config(tmp_path, capsys):
  root = tmp_path / "folder"
  rng = np.random.default_rng(0)
  for c in range(2):
    (root / f"class{c}").mkdir(parents=True)
    for i in range(40):
      Image.fromarray(rng.integers(0, 255, (8, 8), np.uint8)).save(root / f"class{c}" / f"{i}.png")
  (root / "class1" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
  assert run(tmp_path, f"--config.dataset=folder:{root}") == cli.EXIT_BAD_INPUT
  assert "broken.png" in capsys.readouterr().err
  assert run(tmp_path, f"--config.dataset=folder:{root}", "--config.data.on_corrupt=skip",
             "--overwrite") == 0


def test_workdir_of_another_run_is_not_clobbered(tmp_path, capsys):
  assert run(tmp_path) == 0
  before = sorted(os.listdir(tmp_path / "run" / "checkpoints"))
  assert run(tmp_path, "--config.seed=3") == cli.EXIT_BAD_INPUT
  assert "holds a checkpoint of a different config" in capsys.readouterr().err
  assert sorted(os.listdir(tmp_path / "run" / "checkpoints")) == before


def test_dataset_too_small_for_the_hosts_is_refused_not_duplicated(tmp_path):
  from ssl_jax.data import load_source, make_iterator
  tiny = tmp_path / "tiny.npz"
  np.savez(tiny, x_train=np.zeros((3, 8, 8), np.uint8), y_train=np.arange(3))
  source = load_source(f"npz:{tiny}", "train")
  for process_index in range(2):
    with pytest.raises(ValueError, match="3 examples"):
      make_iterator(source, global_batch_size=4, seed=0, process_index=process_index,
                    process_count=2)
