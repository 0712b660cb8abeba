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

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ssl_jax import losses
from ssl_jax.losses.text import causal_targets, weighted_mean
from ssl_jax.methods import FlopsHead, FlopsNetworks, Method, RunInfo, no_update
from ssl_jax.methods.common import plain_init
from ssl_jax.methods.text_common import (build_transformer, check_encoder, example_keys,
                                         text_features, tokenizer_for)
from ssl_jax.models.nnx_utils import Bundle, Networks
from ssl_jax.models.text import generate

DISPLAY_NAME = "CLM"
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


def make(config, run: RunInfo = RunInfo()) -> Method:
  del run
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


def prompts_of(source, *, num: int = 3, length: int = 24) -> np.ndarray:
  """The first ``length`` tokens of ``num`` rows of ``source`` that start a document."""
  arrays = source.arrays()
  starts = np.flatnonzero(arrays["positions"][:, 0] == 0)[:num]
  return arrays["tokens"][starts, :length]


def samples(config, params, batch_stats, prompts: np.ndarray) -> list[str]:
  """``"prompt | continuation"`` texts generated from ``prompts`` ``[N, P]`` with the key-value
  cache (``sample_tokens`` tokens, ``sample_temperature``, ``sample_top_k``; seeded by
  ``config.seed``). The train loop logs them at every checkpoint; evaluation writes them to
  ``DIR/samples.txt``."""
  kw = config.method_kwargs
  tokenizer = tokenizer_for(config)
  model = build_networks(config, tokenizer).bind(params, batch_stats).encoder
  max_new = min(kw.sample_tokens, model.max_len - prompts.shape[1])
  out = np.asarray(generate(model, jnp.asarray(prompts), max_new_tokens=max_new,
                            rng=jax.random.key(config.seed), temperature=kw.sample_temperature,
                            top_k=kw.sample_top_k or None))
  p = prompts.shape[1]
  return [f"{tokenizer.decode(row[:p])} | {tokenizer.decode(row[p:])}" for row in out]


def flops_networks(config) -> FlopsNetworks:
  """What one train step runs, for the FLOPs count (:class:`ssl_jax.methods.FlopsNetworks`):
  the decoder on every token and the tied output layer at every position."""
  return FlopsNetworks(build_networks(config, tokenizer_for(config)), passes=1, heads={
      "lm_head": FlopsHead(None, config.text.seq_len, vocab_projection=True)})
