"""BERT's MLM + NSP on sentence pairs: 1 device == 8 devices, and learning on pydoc pairs."""

import numpy as np
import pytest


def test_one_device_equals_eight(make_text_config, text_one_vs_eight):
  metrics = text_one_vs_eight(make_text_config("nsp:pydoc"),
                              metric_keys=("mlm_loss", "nsp_loss", "nsp_accuracy"))
  np.testing.assert_allclose(metrics[0]["loss"], metrics[0]["mlm_loss"] + metrics[0]["nsp_loss"],
                             rtol=1e-5)


@pytest.mark.slow
def test_masked_lm_half_learns_on_pydoc_pairs(make_text_config, tmp_path):
  from ssl_jax.evaluate.text import evaluate_text_workdir
  from ssl_jax.train.loop import pretrain
  config = make_text_config("nsp:pydoc", **{
      "encoder_kwargs": "{'width': 64, 'depth': 2, 'num_heads': 2, 'mlp_dim': 128, "
                        "'max_len': 128, 'dropout': 0.0}",
      "text.seq_len": 64, "batch_size": 32, "total_steps": 200, "log.every_steps": 10,
      "optimizer.warmup_steps": 20})
  last = pretrain(config, str(tmp_path))
  print(last)
  # The masked-LM half learns under the joint objective; the NSP head does not in a run this
  # short (measured: accuracy 0.5, a constant prediction, after 200 steps of this 2-layer model;
  # on held-out pydoc pairs it stays at chance even after 800 steps of the recipe's model, see the
  # README), so its loss is only required to stay at or below chance.
  assert last["nsp_loss"] < np.log(2) + 0.05
  results = evaluate_text_workdir(str(tmp_path), config=config, print_table=False,
                                  docstring_task=False)
  assert results["val_perplexity"] < 0.7 * results["unigram_perplexity"]
