"""Unsupervised SimCSE (Gao, Yao & Chen, 2021, https://arxiv.org/abs/2104.08821).

Each row holds one document (``pack=False``: a docstring truncated to ``T`` tokens). The
bidirectional encoder reads the batch twice with different dropout masks (keys folded with the
pass and the example's index); the two mean-pooled encodings, passed through an MLP (dense + tanh,
the paper's training-only MLP over the representation), are each other's positive and the other
sentences of the global batch are negatives (:func:`ssl_jax.losses.simcse`, temperature 0.05).
Evaluation uses the mean-pooled encoding without the MLP, as the paper does for unsupervised
SimCSE. Mean pooling rather than ``[CLS]``: the paper finds them within a point of each other, and
the mean is the feature every text method here is probed with.
"""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections
from flax import nnx

from ssl_jax import losses
from ssl_jax.train.monitors import method_health
from ssl_jax.methods import FlopsHead, FlopsNetworks, Method, RunInfo, no_update
from ssl_jax.methods.common import plain_init
from ssl_jax.methods.text_common import (build_transformer, check_encoder, example_keys,
                                         text_features, tokenizer_for)
from ssl_jax.models.nnx_utils import Bundle, Networks
from ssl_jax.models.text import mean_pool

DISPLAY_NAME = "SimCSE"
MODALITY = "text"
DATA = dict(style="bert", pairs=False, pack=False)


def default_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(temperature=0.05, mlp=True))


def build_networks(config, tokenizer) -> Networks:
  dtype = jnp.dtype(config.compute_dtype)

  def build(rngs, bn_axis_name):
    del bn_axis_name
    encoder = build_transformer(config, tokenizer, rngs, causal=False, pooler=False)
    if not config.method_kwargs.mlp:
      return Bundle(encoder=encoder)
    mlp = nnx.Linear(encoder.width, encoder.width, dtype=dtype, rngs=rngs)
    return Bundle(encoder=encoder, mlp=mlp)

  return Networks(build)


def make(config, run: RunInfo = RunInfo()) -> Method:
  del run
  check_encoder(config, causal=False)
  tokenizer = tokenizer_for(config)
  nets = build_networks(config, tokenizer)
  kw = config.method_kwargs

  def loss_fn(params, batch_stats, method_state, batch, rng, *, axis_name):
    model = nets.bind(params, batch_stats)

    def encode(salt):
      hidden = model.encoder(batch["tokens"], segment_ids=batch["segment_ids"],
                             positions=batch["positions"],
                             dropout_keys=example_keys(rng, batch["index"], salt=salt))
      z = mean_pool(hidden, batch["segment_ids"])
      return jnp.tanh(model.mlp(z.astype(model.mlp.dtype)).astype(jnp.float32)) if kw.mlp else z

    z_a, z_b = encode(2), encode(3)
    loss = losses.simcse(z_a, z_b, temperature=kw.temperature, axis_name=axis_name)
    metrics = {"loss": loss, **method_health(config, batch, z_a, z_b, axis_name=axis_name)}
    return loss, (metrics, batch_stats, method_state)

  return Method(init=plain_init(nets), loss_fn=loss_fn, update=no_update,
                features=text_features(nets))


def flops_networks(config) -> FlopsNetworks:
  """What one train step runs, for the FLOPs count (:class:`ssl_jax.methods.FlopsNetworks`):
  two passes (two dropout masks) of the encoder and of the optional MLP."""
  heads = {"mlp": FlopsHead("mlp", 1)} if config.method_kwargs.mlp else {}
  return FlopsNetworks(build_networks(config, tokenizer_for(config)), passes=2, heads=heads)
