"""BERT's full pretraining objective: masked LM + next-sentence prediction (Devlin et al., 2019,
section 3.1, https://arxiv.org/abs/1810.04805).

Rows are sentence pairs ``[CLS] A [SEP] B [SEP]`` (:class:`ssl_jax.data.SentencePairSource`: B
follows A in half of the pairs, is a random sentence run otherwise; token types 0 for A, 1 for B;
``dupe_factor`` passes over the training corpus, 10 as BERT).
The loss is the sum of the masked-LM loss (masking as :mod:`ssl_jax.methods.mlm`) and the
next-sentence cross-entropy of a 2-way classifier on the pooled ``[CLS]``
(:func:`ssl_jax.losses.next_sentence`), as in BERT's ``run_pretraining.py``. RoBERTa later showed
NSP can be dropped (the ``mlm`` method).
"""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections

from ssl_jax import losses
from ssl_jax.methods import FlopsHead, FlopsNetworks, Method, RunInfo, mlm, no_update
from ssl_jax.methods.common import plain_init
from ssl_jax.methods.text_common import check_encoder, text_features, tokenizer_for

DISPLAY_NAME = "BERT (MLM + NSP)"
MODALITY = "text"
DATA = dict(style="bert", pairs=True, pack=False)


def default_config() -> ml_collections.ConfigDict:
  c = mlm.default_config()
  c.nsp_weight = 1.0
  # Passes over the training corpus building pairs (BERT's create_pretraining_data.py default):
  # with one, the fixed negatives of a small corpus are memorized (measured on pydoc: train-batch
  # NSP accuracy 0.92 after 800 steps while held-out pairs stayed at chance).
  c.dupe_factor = 10
  return c


def make(config, run: RunInfo = RunInfo()) -> Method:
  del run
  check_encoder(config, causal=False)
  tokenizer = tokenizer_for(config)
  nets = mlm.build_networks(config, tokenizer, nsp=True)

  def loss_fn(params, batch_stats, method_state, batch, rng, *, axis_name):
    model = nets.bind(params, batch_stats)
    mlm_loss, metrics, hidden = mlm.mlm_forward(config, tokenizer, model, batch, rng,
                                                axis_name=axis_name)
    logits = model.nsp_head(model.encoder.pooled(hidden))
    nsp_loss = losses.next_sentence(logits, batch["is_next"], axis_name=axis_name)
    correct = (jnp.argmax(logits, -1) == batch["is_next"]).astype(jnp.float32)
    loss = mlm_loss + config.method_kwargs.nsp_weight * nsp_loss
    metrics = {"loss": loss, **metrics, "nsp_loss": nsp_loss,
               "nsp_accuracy": jnp.mean(correct)}  # per device; the step averages devices
    return loss, (metrics, batch_stats, method_state)

  return Method(init=plain_init(nets), loss_fn=loss_fn, update=no_update,
                features=text_features(nets))


def flops_networks(config) -> FlopsNetworks:
  """What one train step runs, for the FLOPs count (:class:`ssl_jax.methods.FlopsNetworks`):
  masked LM's, plus the pooler and the 2-way classifier on the ``[CLS]`` token."""
  return FlopsNetworks(mlm.build_networks(config, tokenizer_for(config), nsp=True), passes=1,
                       heads={"mlm_head": FlopsHead("mlm_head", mlm.max_predictions(config),
                                                    vocab_projection=True),
                              "pooler": FlopsHead("encoder.pooler", 1),
                              "nsp_head": FlopsHead("nsp_head", 1)})
