"""Fixtures shared by the evaluation tests: a tiny pretrained digits workdir (fixtures, since
tests are imported with ``--import-mode=importlib`` and cannot import a conftest)."""

import pytest


@pytest.fixture(scope="module")
def tiny_workdir(tmp_path_factory):
  """A workdir of a 6-step tiny SimCLR run on digits (checkpoint, config.json, metrics.jsonl;
  no evaluation), made once per test module."""
  from ssl_jax import config as config_lib
  from ssl_jax.train.loop import pretrain
  workdir = tmp_path_factory.mktemp("tiny_run")
  config = config_lib.load_config(None, [
      ("encoder_kwargs", "{'widths': (8, 16), 'strides': (1, 2), 'fc_features': 16}"),
      ("batch_size", "64"), ("total_steps", "6"), ("log.every_steps", "1"),
      ("log.tensorboard", "False"), ("checkpoint.every_steps", "3"), ("quiet", "True")])
  pretrain(config, str(workdir))
  return str(workdir)
