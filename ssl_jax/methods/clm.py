"""Causal language modelling: GPT (Radford et al., 2018,
https://cdn.openai.com/research-covers/language-unsupervised/language_understanding_paper.pdf) and
GPT-2 (Radford et al., 2019).

A decoder-only Transformer (``config.encoder``, e.g. ``gpt_tiny`` / ``gpt2_small``) reads packed
rows of ``[BOS] doc [EOS]`` pieces; each position predicts the next token
(:func:`ssl_jax.losses.causal_lm`, the shift done there), never across a document boundary and
never from padding. The output layer is tied to the token embedding (GPT-2). Features for probing
are the mean of the last hidden states over the row's real tokens (the decoder is causal, so
earlier tokens see less of the text). Text is generated with
:func:`ssl_jax.models.text.generate` (key-value cache).
"""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections

from ssl_jax import losses
from ssl_jax.losses.text import causal_targets, weighted_mean
from ssl_jax.methods import Method, no_update
from ssl_jax.methods.common import plain_init
from ssl_jax.methods.text_common import (build_transformer, check_encoder, example_keys,
                                         text_features, tokenizer_for)
from ssl_jax.models.nnx_utils import Bundle, Networks

MODALITY = "text"
DATA = dict(style="gpt", pairs=False, pack=True)


def default_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      sample_tokens=64,  # length of the samples generated at evaluation (0: none)
      sample_temperature=0.8,
      sample_top_k=40,
  ))


def build_networks(config, tokenizer) -> Networks:
  def build(rngs, bn_axis_name):
    del bn_axis_name
    return Bundle(encoder=build_transformer(config, tokenizer, rngs, causal=True))

  return Networks(build)


def make(config, *, total_steps: int | None = None) -> Method:
  del total_steps
  check_encoder(config, causal=True)
  tokenizer = tokenizer_for(config)
  nets = build_networks(config, tokenizer)

  def loss_fn(params, batch_stats, method_state, batch, rng, *, axis_name):
    model = nets.bind(params, batch_stats).encoder
    tokens, segment_ids = batch["tokens"], batch["segment_ids"]
    hidden = model(tokens, segment_ids=segment_ids, positions=batch["positions"],
                   dropout_keys=example_keys(rng, batch["index"], salt=2))
    logits = model.logits(hidden)
    loss = losses.causal_lm(logits, tokens, segment_ids=segment_ids, axis_name=axis_name)
    correct = (jnp.argmax(logits[:, :-1], -1) == tokens[:, 1:]).astype(jnp.float32)
    accuracy = weighted_mean(correct, causal_targets(tokens, segment_ids=segment_ids), axis_name)
    return loss, ({"loss": loss, "next_token_accuracy": accuracy}, batch_stats, method_state)

  return Method(init=plain_init(nets), loss_fn=loss_fn, update=no_update,
                features=text_features(nets))
