"""A tiny SimCLR-on-digits config shared by the train tests (small nets compile fast)."""

import pytest

from ssl_jax import config as config_lib


def tiny_config(**overrides):
  base = {
      "encoder_kwargs": "{'widths': (8, 16), 'strides': (1, 2)}",
      "method_kwargs.proj_hidden_dim": "32",
      "method_kwargs.proj_dim": "16",
      "batch_size": "64",
      "total_steps": "10",
      "log.every_steps": "1",
      "log.tensorboard": "False",
      "checkpoint.every_steps": "5",
      "quiet": "True",
  }
  base.update({k: str(v) for k, v in overrides.items()})
  return config_lib.load_config(None, list(base.items()))


@pytest.fixture
def make_config():
  return tiny_config
