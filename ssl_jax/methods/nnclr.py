"""NNCLR (Dwibedi et al., 2021, https://arxiv.org/abs/2104.14548).

Encoder + projector + predictor; two augmented views; each view's projection is replaced by its
nearest neighbour in a *support set* of past projections, which then serves as the anchor of a
contrastive loss against the other view's predictions (the paper's eq. 2, symmetrized):

``loss = 0.5 * (InfoNCE(NN(z_a), p_b) + InfoNCE(NN(z_b), p_a))``

with :func:`ssl_jax.losses.nearest_neighbour` (cosine, no gradient) and
:func:`ssl_jax.losses.infonce` (the positives and negatives are the other view's predictions over
the whole global batch), as the docstring of :func:`ssl_jax.losses.nnclr` composes them;
``pred_layers=0`` drops the predictor, which gives exactly :func:`ssl_jax.losses.nnclr`;
``proj_layers=0`` drops the projector (the support set then holds encoder features).

There is no official code. Architecture and recipe follow the paper's section 4.1
(implementation details): a 3-layer projector 2048-2048-256 and a 2-layer predictor 4096-256
(BYOL-style), temperature 0.1, a support set of 98,304 embeddings. The heads' layout follows
solo-learn's NNCLR (``solo/methods/nnclr.py``): ``Linear-BN-ReLU`` hidden layers, BatchNorm on
the projector's output, a plain ``Linear`` at the predictor's output; each view goes through the
networks separately (BatchNorm statistics of one view, synced over the data axis when
``config.sync_bn``).

**Support set.** ``method_state = {"queue": [Q, D] float32, "queue_label": [Q] int32}``, rows
ordered oldest first. It starts as random unit vectors (label -1), as solo-learn and lightly do.
Each step looks neighbours up in the queue *before* the push, then pushes the L2-normalized
projections of the first view of the whole global batch, in global-batch order: the rows are
all-gathered over ``axis_name`` (:func:`ssl_jax.methods.common.gather_global`, so the queue stays
replicated and identical on every device and for any device count), the oldest rows drop out and
``queue[-N:]`` holds the new batch. The push is part of ``loss_fn``'s returned method state, so a
step skipped for a non-finite loss pushes nothing (the engine holds the method state back).

Metrics: ``loss``, the collapse monitor on the first view's projections
(:func:`ssl_jax.train.monitors.embedding_std`) and ``nn_acc``: the fraction of the global
batch whose nearest neighbour (first view) carries the same class label, as solo-learn logs it.
Labels enter only this metric, through ``queue_label`` (never the loss); rows not yet filled hold
-1 and never match. Without a ``label`` in the batch the metric is omitted.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from ssl_jax import losses
from ssl_jax.train.monitors import method_health
from ssl_jax.losses.utils import global_mean, l2_normalize
from ssl_jax.methods import FlopsNetworks, Method, RunInfo, no_update
from ssl_jax.methods.common import (bn_axis, build_encoder, encoder_features, encoder_width,
                                   gather_global, two_views)
from ssl_jax.models.heads import MLPHead
from ssl_jax.models.nnx_utils import Bundle, Networks

QUEUE_KWARG = "queue_size"  # holds keys of past batches
DISPLAY_NAME = "NNCLR"

OUTPUT_NORMS = ("bn", "none")


def default_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      temperature=0.1,  # section 4.1
      queue_size=98304,  # support set size, section 4.1
      proj_hidden_dim=2048,
      proj_dim=256,
      proj_layers=3,
      proj_output_norm="bn",
      pred_hidden_dim=4096,
      pred_layers=2,  # 0: no predictor (NN(z_a) against z_b)
  ))


def build_networks(config) -> Networks:
  """Encoder + projector + (optional) predictor as one NNX module tree."""
  kw = config.method_kwargs
  dtype = jnp.dtype(config.compute_dtype)

  def build(rngs, bn_axis_name):
    encoder = build_encoder(config, rngs, bn_axis_name)
    head = dict(hidden_norm="bn", bn_axis_name=bn_axis_name, dtype=dtype, rngs=rngs)
    nets = dict(encoder=encoder)
    if kw.proj_layers:
      nets["projector"] = MLPHead(encoder.out_features, kw.proj_hidden_dim, kw.proj_dim,
                                  num_layers=kw.proj_layers,
                                  output_norm=None if kw.proj_output_norm == "none" else "bn",
                                  **head)
    dim = kw.proj_dim if kw.proj_layers else encoder.out_features
    if kw.pred_layers:
      nets["predictor"] = MLPHead(dim, kw.pred_hidden_dim, dim, num_layers=kw.pred_layers, **head)
    return Bundle(**nets)

  return Networks(build)


def push(queue: jax.Array, rows: jax.Array) -> jax.Array:
  """``rows`` appended at the end of the oldest-first ``queue``, the oldest rows dropped."""
  return jnp.concatenate([queue, rows.astype(queue.dtype)])[-queue.shape[0]:]


def make(config, run: RunInfo = RunInfo()) -> Method:
  del run  # no schedule of its own
  kw = config.method_kwargs
  if kw.queue_size < 1:
    raise ValueError(f"nnclr: queue_size must be >= 1, got {kw.queue_size}.")
  if kw.proj_layers < 0:
    raise ValueError(f"nnclr: proj_layers must be >= 0, got {kw.proj_layers}.")
  if kw.pred_layers < 0:
    raise ValueError(f"nnclr: pred_layers must be >= 0, got {kw.pred_layers}.")
  if kw.proj_output_norm not in OUTPUT_NORMS:
    raise ValueError(f"nnclr: proj_output_norm={kw.proj_output_norm!r}; valid: {OUTPUT_NORMS}.")
  nets = build_networks(config)
  dim = kw.proj_dim if kw.proj_layers else encoder_width(config)

  def init(rng, example_batch):
    del example_batch  # the networks' shapes do not depend on the image size
    params, batch_stats = nets.init(rng)
    queue = jax.random.normal(jax.random.fold_in(rng, 1), (kw.queue_size, dim))
    state = {"queue": l2_normalize(queue),
             "queue_label": jnp.full((kw.queue_size,), -1, jnp.int32)}
    return params, batch_stats, state

  def loss_fn(params, batch_stats, method_state, batch, rng, *, axis_name):
    del rng
    model = nets.bind(params, batch_stats, axis_name=bn_axis(config, axis_name))
    z, p = [], []
    for x in two_views(batch):
      h = model.encoder(x, train=True)
      z.append(model.projector(h, train=True) if kw.proj_layers else h)
      p.append(model.predictor(z[-1], train=True) if kw.pred_layers else z[-1])
    (z_a, z_b), (p_a, p_b) = z, p
    queue = method_state["queue"]
    nn_a, idx_a = losses.nearest_neighbour(z_a, queue)
    nn_b, _ = losses.nearest_neighbour(z_b, queue)
    t = kw.temperature
    loss = 0.5 * (losses.infonce(nn_a, p_b, temperature=t, axis_name=axis_name)
                  + losses.infonce(nn_b, p_a, temperature=t, axis_name=axis_name))

    metrics = {"loss": loss, **method_health(config, batch, z_a, z_b, axis_name=axis_name)}
    labels = batch.get("label")
    if labels is not None:
      same = (method_state["queue_label"][idx_a] == labels).astype(jnp.float32)
      metrics["nn_acc"] = global_mean(same, axis_name)
    else:
      labels = jnp.full((z_a.shape[0],), -1, jnp.int32)
    new_rows = gather_global(l2_normalize(jax.lax.stop_gradient(z_a)), axis_name)
    new_labels = gather_global(labels.astype(jnp.int32), axis_name)
    new_state = {"queue": push(queue, new_rows),
                 "queue_label": push(method_state["queue_label"], new_labels)}
    return loss, (metrics, nets.batch_stats(model), new_state)

  return Method(init=init, loss_fn=loss_fn, update=no_update, features=encoder_features(nets))


def flops_networks(config) -> FlopsNetworks:
  """What one train step runs, for the FLOPs count (:class:`ssl_jax.methods.FlopsNetworks`):
  every network on both views."""
  return FlopsNetworks(build_networks(config))
