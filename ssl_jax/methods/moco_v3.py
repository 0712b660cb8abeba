"""MoCo v3 (Chen, Xie & He, 2021, "An Empirical Study of Training Self-Supervised Vision
Transformers", https://arxiv.org/abs/2104.02057).

A base network (encoder, projector, predictor) and a momentum network (encoder, projector) see
both views; each query must pick its own key among the keys of the whole global batch (no queue):

* ``loss = ctr(q1, k2) + ctr(q2, k1)`` with ``ctr(q, k) = 2 T * infonce(q, stop_gradient(k))``
  (Algorithm 1; :func:`ssl_jax.losses.infonce` without negatives gathers the keys of the global
  batch; the ``2 T`` factor and the sum of both directions are those of ``MoCo.contrastive_loss``
  / ``MoCo.forward`` in ``moco/builder.py`` of facebookresearch/moco-v3, which make the gradient
  scale independent of ``T``).
* Momentum network ``<- m * momentum + (1 - m) * base`` (encoder and projector), with ``m``
  following the cosine schedule from ``base_momentum`` (0.99) to ``final_momentum`` (1) over the
  run (section 4 "momentum encoder"; official ``--moco-m-cos``,
  :func:`ssl_jax.methods.common.cosine_momentum`). The official code updates the momentum
  encoder at the start of iteration ``i`` with ``m(i)`` from the parameters after ``i`` optimizer
  steps; here the update after optimizer step ``t`` (0-based, which leaves the parameters of
  ``t + 1`` steps) uses ``m(t + 1)``: the same sequence. It starts as a copy of the base network.
* Heads (section 4 and the official ``_build_mlp``): every linear layer without bias, BatchNorm +
  ReLU after the hidden ones; projector 3 layers for a ViT, 2 for a ResNet, with BatchNorm
  *without affine* on the output (``output_norm="bn_noaffine"``); predictor 2 layers, no output
  BatchNorm; widths 4096 hidden and 256 out. ``pred_layers=0`` drops the predictor.
* BatchNorm (heads and ResNet) is synced over the global batch when ``config.sync_bn`` (the
  official code converts every BatchNorm to SyncBatchNorm). Each view goes through the networks in
  its own forward pass, as the official code; the momentum network runs in training mode and keeps
  its own (unused) BatchNorm running averages in ``method_state["momentum"]["batch_stats"]``.
* ViT backbones (``vit_small``, ``vit_base``) take ``encoder_kwargs.pos_embed="sincos"`` for the
  paper's fixed 2-D sin-cos position embedding. The paper's frozen random patch projection
  (section 4.2, ``--stop-grad-conv1``) is not implemented: freezing needs the optimizer to skip the
  patch embedding (a ``stop_gradient`` alone would still let AdamW's decoupled weight decay shrink
  it).

``method_state = {"momentum": {"params": {"encoder", "projector"}, "batch_stats": {...}}}``.
``features`` is the base encoder (the class token of a ViT, before the projector), as the paper
evaluates. The health monitors (:func:`ssl_jax.train.monitors.health_metrics`) are computed on
the query (prediction) of view ``a``, alignment between the two views' queries, and
``teacher_agreement`` between the query ``q1`` and the momentum key ``k2`` it is trained to match.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from ssl_jax import losses
from ssl_jax.train.monitors import method_health
from ssl_jax.losses.utils import l2_normalize
from ssl_jax.methods import FlopsNetworks, Method, RunInfo
from ssl_jax.methods.common import (bn_axis, build_encoder, cosine_momentum, encoder_features,
                                   teacher_after_forward, teacher_init, teacher_update,
                                   two_views)
from ssl_jax.models.heads import MLPHead
from ssl_jax.models.nnx_utils import Bundle, Networks

DISPLAY_NAME = "MoCo v3"

MOMENTUM_KEYS = ("encoder", "projector")  # the sub-networks the momentum network mirrors


def default_config() -> ml_collections.ConfigDict:
  """The ViT hyperparameters of MoCo v3 (section 4 and appendix; official CONFIG.md)."""
  return ml_collections.ConfigDict(dict(
      temperature=0.2,  # ViT (the ResNet-50 recipe uses 1.0)
      base_momentum=0.99,  # m at step 0, cosine to final_momentum
      final_momentum=1.0,
      proj_hidden_dim=4096,
      proj_dim=256,
      proj_layers=3,  # ViT: 3, ResNet: 2
      pred_hidden_dim=4096,
      pred_layers=2,  # 0: no predictor
  ))


def build_networks(config, *, with_predictor: bool) -> Networks:
  """Encoder + projector (+ predictor for the base network) as one NNX module tree."""
  kw = config.method_kwargs
  dtype = jnp.dtype(config.compute_dtype)

  def build(rngs, bn_axis_name):
    encoder = build_encoder(config, rngs, bn_axis_name)
    common = dict(hidden_norm="bn", output_bias=False, bn_axis_name=bn_axis_name, dtype=dtype,
                  rngs=rngs)
    projector = MLPHead(encoder.out_features, kw.proj_hidden_dim, kw.proj_dim,
                        num_layers=kw.proj_layers, output_norm="bn_noaffine", **common)
    if not (with_predictor and kw.pred_layers):
      return Bundle(encoder=encoder, projector=projector)
    predictor = MLPHead(kw.proj_dim, kw.pred_hidden_dim, kw.proj_dim, num_layers=kw.pred_layers,
                        output_norm=None, **common)
    return Bundle(encoder=encoder, projector=projector, predictor=predictor)

  return Networks(build)


def make(config, run: RunInfo = RunInfo()) -> Method:
  kw = config.method_kwargs
  base_nets = build_networks(config, with_predictor=True)
  momentum_nets = build_networks(config, with_predictor=False)

  def init(rng, example_batch):
    del example_batch  # the networks' shapes do not depend on the image size
    params, batch_stats = base_nets.init(rng)
    return params, batch_stats, {"momentum": teacher_init(params, batch_stats, MOMENTUM_KEYS)}

  def loss_fn(params, batch_stats, method_state, batch, rng, *, axis_name):
    del rng
    base = base_nets.bind(params, batch_stats, axis_name=bn_axis(config, axis_name))
    mom = momentum_nets.bind(method_state["momentum"]["params"],
                             method_state["momentum"]["batch_stats"],
                             axis_name=bn_axis(config, axis_name))
    x1, x2 = two_views(batch)

    def query(x):
      z = base.projector(base.encoder(x, train=True), train=True)
      return base.predictor(z, train=True) if kw.pred_layers else z

    def key(x):
      return jax.lax.stop_gradient(mom.projector(mom.encoder(x, train=True), train=True))

    def ctr(q, k):
      t = kw.temperature
      return 2.0 * t * losses.infonce(q, k, temperature=t, axis_name=axis_name)

    q1, q2 = query(x1), query(x2)
    k1, k2 = key(x1), key(x2)
    loss = ctr(q1, k2) + ctr(q2, k1)

    new_state = {"momentum": teacher_after_forward(
        method_state["momentum"], momentum_nets.batch_stats(mom), axis_name=axis_name,
        sync_bn=config.sync_bn)}
    positive = jnp.mean(jnp.sum(l2_normalize(q1) * l2_normalize(k2), axis=1))
    metrics = {"loss": loss, "positive_cosine": jax.lax.stop_gradient(positive),
               **method_health(config, batch, q1, q2, axis_name=axis_name, student=q1,
                               teacher=k2)}
    return loss, (metrics, base_nets.batch_stats(base), new_state)

  def update(params, batch_stats, method_state, step):
    del batch_stats  # the momentum network keeps its own BatchNorm statistics
    m = momentum_at(step + 1, run.total_steps, kw)
    return {"momentum": teacher_update(method_state["momentum"], params, m)}

  return Method(init=init, loss_fn=loss_fn, update=update, features=encoder_features(base_nets))


def momentum_at(step, total_steps: int | None, kw) -> jax.Array:
  """The momentum used by the update that prepares the keys of iteration ``step``."""
  return cosine_momentum(step, total_steps, kw.base_momentum, kw.final_momentum)


def flops_networks(config) -> FlopsNetworks:
  """What one train step runs, for the FLOPs count (:class:`ssl_jax.methods.FlopsNetworks`):
  the online networks on both views, and the momentum encoder and projector on both."""
  return FlopsNetworks(build_networks(config, with_predictor=True),
                       teachers=("encoder", "projector"))
