"""BERT's MLM + NSP on sentence pairs: the loss is the sum of its two
losses, and learning on pydoc pairs (1 vs 8 devices: test_one_vs_eight.py)."""

import functools

import jax
import numpy as np
import pytest


def test_loss_is_the_sum_of_masked_lm_and_next_sentence_losses(make_text_config):
  from ssl_jax import methods
  from ssl_jax.train.loop import load_train_source
  config = make_text_config("nsp:pydoc")
  source = load_train_source(config)
  examples = source.__getitems__(list(range(8)))
  batch = {k: np.stack([ex[k] for ex in examples]) for k in examples[0]}
  batch["index"] = np.arange(8, dtype=np.int32)
  method = methods.make("nsp", config)
  params, stats, mstate = method.init(jax.random.key(0), batch)
  loss_fn = jax.jit(functools.partial(method.loss_fn, axis_name=None))
  loss, (metrics, _, _) = loss_fn(params, stats, mstate, batch, jax.random.key(1))
  assert np.isfinite(loss) and 0 <= metrics["nsp_accuracy"] <= 1
  np.testing.assert_allclose(loss, metrics["mlm_loss"] + metrics["nsp_loss"], rtol=1e-5)


@pytest.mark.slow
def test_masked_lm_half_learns_on_pydoc_pairs(make_text_config, tmp_path):
  from ssl_jax.evaluate.text import evaluate_text_workdir
  from ssl_jax.train.loop import pretrain
  config = make_text_config("nsp:pydoc", **{
      "encoder_kwargs": "{'width': 64, 'depth': 2, 'num_heads': 2, 'mlp_dim': 128, "
                        "'max_len': 128, 'dropout': 0.0}",
      "text.seq_len": 64, "batch_size": 32, "total_steps": 200, "log.every_steps": 10,
      "optimizer.warmup_steps": 20})
  last = pretrain(config, str(tmp_path), devices=jax.devices()[:1])  # see learns_on_digits
  print(last)
  # The masked-LM half learns under the joint objective; the NSP head does not in a run this
  # short (measured: accuracy 0.5, a constant prediction, after 200 steps of this 2-layer model;
  # on held-out pydoc pairs it stays at chance even after 800 steps of the recipe's model, see the
  # README), so its loss is only required to stay at or below chance.
  assert last["nsp_loss"] < np.log(2) + 0.05
  results = evaluate_text_workdir(str(tmp_path), config=config, print_table=False,
                                  docstring_task=False)
  assert results["val_perplexity"] < 0.7 * results["unigram_perplexity"]
