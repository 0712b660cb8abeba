"""Fixtures shared by the evaluation tests: the digits split as arrays, frozen CNN features of it,
a tiny pretrained digits workdir (fixtures, since tests are imported with
``--import-mode=importlib`` and cannot import a conftest)."""

import jax
import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split


@pytest.fixture(scope="module")
def digits():
  """The protocol's digits split (stratified 70/30, random_state=0) as float32 pixels in [0, 1]."""
  x, y = load_digits(return_X_y=True)
  x_tr, x_te, y_tr, y_te = train_test_split(x / 16.0, y, test_size=0.3, stratify=y,
                                            random_state=0)
  return (x_tr.astype(np.float32), y_tr.astype(np.int32), x_te.astype(np.float32),
          y_te.astype(np.int32))


@pytest.fixture(scope="module")
def frozen_features(digits):
  """Features of a frozen (randomly initialized, BatchNorm in inference mode) digits CNN."""
  from flax import nnx

  from ssl_jax import models
  enc = models.build_encoder("cnn_digits", rngs=nnx.Rngs(0))
  fn = jax.jit(lambda x: enc(x.reshape(-1, 8, 8, 1) * 2.0 - 1.0, train=False))
  x_tr, y_tr, x_te, y_te = digits
  return np.asarray(fn(x_tr)), y_tr, np.asarray(fn(x_te)), y_te


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
