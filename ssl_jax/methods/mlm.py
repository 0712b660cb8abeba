"""Masked language modelling: BERT (Devlin et al., 2019, https://arxiv.org/abs/1810.04805) and
RoBERTa (Liu et al., 2019, https://arxiv.org/abs/1907.11692).

A bidirectional Transformer (``config.encoder``, e.g. ``bert_tiny`` / ``bert_base``) reads packed
rows (``[CLS] doc [SEP]``, documents never attend to each other) in which
:func:`ssl_jax.masking.bert_mask` chose 15% of the non-special tokens (80% ``[MASK]``, 10% random,
10% unchanged; whole words with ``whole_word=True``); the MLM head (dense + GELU + LayerNorm, then
the tied embedding) predicts the original tokens there and :func:`ssl_jax.losses.masked_lm`
averages the cross-entropy over every masked token of the global batch.

Masking is *dynamic* by default (RoBERTa: a new mask every time a row is seen; keys folded from
the step key and the example's index) or *static* with ``static_masking=True`` (BERT: one mask per
example for the whole run, keys from the seed and the index only).

As BERT's ``max_predictions_per_seq``, the head runs only on the first ``max_predictions`` masked
positions of each row (default ``round(rate * T) + 1``, + 8 with whole-word masking), not on all
``T``: the vocabulary projection is the largest matmul of a small model.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from ssl_jax import losses
from ssl_jax.losses.text import weighted_mean
from ssl_jax.masking import bert_mask
from ssl_jax.methods import FlopsHead, FlopsNetworks, Method, RunInfo, no_update
from ssl_jax.methods.common import plain_init
from ssl_jax.methods.text_common import (build_transformer, check_encoder, example_keys,
                                         gather_positions, text_features, tokenizer_for)
from ssl_jax.models.nnx_utils import Bundle, Networks
from ssl_jax.models.text import MLMHead

DISPLAY_NAME = "MLM"
MODALITY = "text"
DATA = dict(style="bert", pairs=False, pack=True)


def default_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      mask_rate=0.15,  # BERT section 3.1
      mask_prob=0.8,
      random_prob=0.1,
      whole_word=False,
      static_masking=False,  # True: BERT's one mask per example; False: RoBERTa's dynamic masking
      max_predictions=0,  # 0: round(mask_rate * seq_len) + 1 (+ 8 with whole_word)
  ))


def max_predictions(config) -> int:
  kw = config.method_kwargs
  if kw.max_predictions:
    return int(kw.max_predictions)
  return int(round(kw.mask_rate * config.text.seq_len)) + 1 + (8 if kw.whole_word else 0)


def mask_batch(config, tokenizer, batch, rng):
  """``(inputs, labels, mask)`` of the batch's rows (dynamic or static masking)."""
  kw = config.method_kwargs
  key = jax.random.key(config.seed) if kw.static_masking else rng
  keys = example_keys(key, batch["index"], salt=1)
  return bert_mask(keys, batch["tokens"], special_ids=tuple(tokenizer.special_ids.tolist()),
                   mask_id=tokenizer.mask_id, vocab_size=tokenizer.vocab_size,
                   valid=batch["segment_ids"] > 0,
                   word_starts=batch.get("word_starts") if kw.whole_word else None,
                   rate=kw.mask_rate, mask_prob=kw.mask_prob, random_prob=kw.random_prob)


def build_networks(config, tokenizer, *, nsp: bool = False) -> Networks:
  dtype = jnp.dtype(config.compute_dtype)

  def build(rngs, bn_axis_name):
    del bn_axis_name  # no BatchNorm
    encoder = build_transformer(config, tokenizer, rngs, causal=False, pooler=nsp)
    parts = dict(encoder=encoder, mlm_head=MLMHead(encoder.width, tokenizer.vocab_size,
                                                   dtype=dtype, rngs=rngs))
    if nsp:
      from ssl_jax.models.text import NSPHead  # pylint: disable=g-import-not-at-top
      parts["nsp_head"] = NSPHead(encoder.width, dtype=dtype, rngs=rngs)
    return Bundle(**parts)

  return Networks(build)


def mlm_forward(config, tokenizer, model, batch, rng, *, axis_name):
  """Masks, encodes and scores a batch; returns ``(loss, metrics, hidden)``."""
  inputs, labels, mask = mask_batch(config, tokenizer, batch, rng)
  hidden = model.encoder(inputs, segment_ids=batch["segment_ids"], positions=batch["positions"],
                         type_ids=batch.get("type_ids"),
                         dropout_keys=example_keys(rng, batch["index"], salt=2))
  picked, valid, order = gather_positions(hidden, mask, max_predictions(config))
  targets = jnp.take_along_axis(labels, order, axis=1)
  logits = model.mlm_head(picked, model.encoder)  # [B, P, V]
  loss = losses.masked_lm(logits, targets, valid, axis_name=axis_name)
  correct = (jnp.argmax(logits, -1) == targets) & valid
  metrics = {"mlm_loss": loss,
             "mlm_accuracy": weighted_mean(correct.astype(jnp.float32), valid, axis_name)}
  return loss, metrics, hidden


def make(config, run: RunInfo = RunInfo()) -> Method:
  del run
  check_encoder(config, causal=False)
  tokenizer = tokenizer_for(config)
  nets = build_networks(config, tokenizer)

  def loss_fn(params, batch_stats, method_state, batch, rng, *, axis_name):
    model = nets.bind(params, batch_stats)
    loss, metrics, _ = mlm_forward(config, tokenizer, model, batch, rng, axis_name=axis_name)
    return loss, ({"loss": loss, **metrics}, batch_stats, method_state)

  return Method(init=plain_init(nets), loss_fn=loss_fn, update=no_update,
                features=text_features(nets))


def flops_networks(config) -> FlopsNetworks:
  """What one train step runs, for the FLOPs count (:class:`ssl_jax.methods.FlopsNetworks`):
  the encoder on every token, the head (dense + tied vocabulary projection) on the
  ``max_predictions`` gathered positions; no pooler."""
  return FlopsNetworks(build_networks(config, tokenizer_for(config)), passes=1, heads={
      "mlm_head": FlopsHead("mlm_head", max_predictions(config), vocab_projection=True)})
