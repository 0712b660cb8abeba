"""BERT's MLM + NSP on sentence pairs: 1 device == 8 devices, and the NSP head learns on pydoc."""

import numpy as np
import pytest


def test_one_device_equals_eight(make_text_config, text_one_vs_eight):
  metrics = text_one_vs_eight(make_text_config("nsp:pydoc"),
                              metric_keys=("mlm_loss", "nsp_loss", "nsp_accuracy"))
  np.testing.assert_allclose(metrics[0]["loss"], metrics[0]["mlm_loss"] + metrics[0]["nsp_loss"],
                             rtol=1e-5)


@pytest.mark.slow
def test_learns_next_sentence_on_pydoc(make_text_config, tmp_path):
  from ssl_jax.evaluate.text import evaluate_text_workdir
  from ssl_jax.train.loop import pretrain
  config = make_text_config("nsp:pydoc", **{
      "encoder_kwargs": "{'width': 64, 'depth': 2, 'num_heads': 2, 'mlp_dim': 128, "
                        "'max_len': 128, 'dropout': 0.0}",
      "text.seq_len": 64, "batch_size": 32, "total_steps": 200, "log.every_steps": 10,
      "optimizer.warmup_steps": 20})
  last = pretrain(config, str(tmp_path))
  print(last)
  assert last["nsp_accuracy"] > 0.6  # chance is 0.5
  results = evaluate_text_workdir(str(tmp_path), config=config, print_table=False,
                                  docstring_task=False)
  assert results["val_perplexity"] < 0.7 * results["unigram_perplexity"]
