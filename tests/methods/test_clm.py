"""Causal LM: a causal encoder is required, and learning on pydoc (perplexity and bits per
byte far below the unigram baseline; samples generated with the cache)."""

import pathlib

import jax
import numpy as np
import pytest

EXPERIMENTS = pathlib.Path(__file__).resolve().parents[2] / "experiments"


def test_needs_a_causal_encoder(make_text_config):
  from ssl_jax import methods
  config = make_text_config("clm_pydoc", encoder="bert_tiny")
  with pytest.raises(ValueError, match="not a causal"):
    methods.make("clm", config)


@pytest.mark.slow
def test_learns_on_pydoc(tmp_path):
  from ssl_jax import config as config_lib
  from ssl_jax.evaluate.text import evaluate_text_workdir
  from ssl_jax.train.loop import pretrain
  config = config_lib.load_config(str(EXPERIMENTS / "clm_pydoc.py"), [
      ("total_steps", "250"), ("quiet", "True"), ("log.tensorboard", "False"),
      ("method_kwargs.sample_tokens", "16")])
  pretrain(config, str(tmp_path), devices=jax.devices()[:1])  # see learns_on_digits
  results = evaluate_text_workdir(str(tmp_path), config=config, print_table=False,
                                  docstring_task=False)
  print(results)
  assert results["val_perplexity"] < 0.5 * results["unigram_perplexity"]
  assert results["bits_per_byte"] < 0.8 * np.log2(results["unigram_perplexity"])
  samples = (tmp_path / "samples.txt").read_text()
  assert samples.count(" | ") >= 3
