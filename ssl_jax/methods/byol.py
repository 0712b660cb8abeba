"""BYOL (Grill et al., 2020, "Bootstrap Your Own Latent", https://arxiv.org/abs/2006.07733).

An online network (encoder, projector, predictor) regresses the projection that a *target*
network (encoder, projector) gives of the other view; the target is an exponential moving average
of the online encoder and projector and is never trained by gradient (section 3.1, algorithm 1):

* ``loss = byol_loss(p_a, z'_b) + byol_loss(p_b, z'_a)`` (:func:`ssl_jax.losses.byol_loss`, the
  squared distance of the L2-normalized vectors, ``2 - 2 cos``, averaged over the global batch),
  summed over both directions as ``loss_fn`` in ``byol/byol_experiment.py`` of
  google-deepmind/deepmind-research; target outputs under ``stop_gradient``.
* ``target <- m * target + (1 - m) * online`` after every optimizer step, with BYOL's cosine
  schedule ``m = 1 - (1 - base_momentum) (cos(pi k / K) + 1) / 2`` from ``base_momentum`` (0.996)
  at step 0 to 1 at the last step ``K`` (section 3.2; :func:`ssl_jax.methods.common.cosine_momentum`
  with the run's ``total_steps`` from :func:`make`).
* As the official code, each view goes through the networks in its own forward pass (BatchNorm
  statistics per view, synced over the data axis when ``config.sync_bn``), and the target network
  runs in training mode: it normalizes with its batch statistics and keeps its *own* BatchNorm
  running averages (updated by its forward passes, not averaged from the online network's), in
  ``method_state["target"]["batch_stats"]``. They are never used for anything (the target only
  runs in training mode); they are kept so the target is a complete network that can be evaluated.
* Projector and predictor: ``Linear(4096) - BN - ReLU - Linear(256)`` (appendix A / J.1); as
  ``networks.MLP`` of the official code, the output layer has no bias (the hidden layer's bias is
  dropped too, here: it feeds a BatchNorm, which cancels it).

``method_state = {"target": {"params": {"encoder", "projector"}, "batch_stats": {...}}}``. The
target starts as a copy of the online encoder and projector (the paper's algorithm 1 leaves the
initialization open; the official code initializes it independently and reports no difference).
``features`` is the online encoder, as the paper evaluates.

The collapse monitor (:func:`ssl_jax.train.monitors.embedding_std`) is computed on the online
projection of view ``a`` (the target's projection of it differs only by the EMA lag), with the
other health monitors (:func:`ssl_jax.train.monitors.health_metrics`: RankMe and uniformity of
it, alignment with the online projection of view ``b``) and ``teacher_agreement``, the mean cosine
of the online prediction ``p_a`` and the target projection ``t_b`` it regresses.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from ssl_jax import losses
from ssl_jax.train.monitors import method_health
from ssl_jax.methods import FlopsNetworks, Method, RunInfo
from ssl_jax.methods.common import (bn_axis, build_encoder, cosine_momentum, encoder_features,
                                   teacher_after_forward, teacher_init, teacher_update,
                                   two_views)
from ssl_jax.models.heads import MLPHead
from ssl_jax.models.nnx_utils import Bundle, Networks

DISPLAY_NAME = "BYOL"


def default_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      proj_hidden_dim=4096,  # appendix A / J.1: projector Linear(4096)-BN-ReLU-Linear(256)
      proj_dim=256,
      proj_layers=2,  # 0: no projector, the predictor works on the encoder's output
      pred_hidden_dim=4096,  # predictor: the same MLP on the 256-d projection
      base_momentum=0.996,  # tau_base, section 3.2 (cosine schedule to 1)
  ))


def build_networks(config, *, with_predictor: bool) -> Networks:
  """Encoder + projector (+ predictor for the online network) as one NNX module tree."""
  kw = config.method_kwargs
  dtype = jnp.dtype(config.compute_dtype)

  def build(rngs, bn_axis_name):
    encoder = build_encoder(config, rngs, bn_axis_name)
    head = dict(output_bias=False, bn_axis_name=bn_axis_name, dtype=dtype, rngs=rngs)
    nets = dict(encoder=encoder)
    dim = encoder.out_features
    if kw.proj_layers:
      nets["projector"] = MLPHead(dim, kw.proj_hidden_dim, kw.proj_dim,
                                  num_layers=kw.proj_layers, **head)
      dim = kw.proj_dim
    if with_predictor:
      nets["predictor"] = MLPHead(dim, kw.pred_hidden_dim, dim, **head)
    return Bundle(**nets)

  return Networks(build)


def make(config, run: RunInfo = RunInfo()) -> Method:
  kw = config.method_kwargs
  total_steps = run.total_steps
  online_nets = build_networks(config, with_predictor=True)
  target_nets = build_networks(config, with_predictor=False)
  target_keys = ("encoder", "projector") if kw.proj_layers else ("encoder",)

  def embed(net, x):
    y = net.encoder(x, train=True)
    return net.projector(y, train=True) if kw.proj_layers else y

  def init(rng, example_batch):
    del example_batch  # the networks' shapes do not depend on the image size
    params, batch_stats = online_nets.init(rng)
    return params, batch_stats, {"target": teacher_init(params, batch_stats, target_keys)}

  def loss_fn(params, batch_stats, method_state, batch, rng, *, axis_name):
    del rng
    online = online_nets.bind(params, batch_stats, axis_name=bn_axis(config, axis_name))
    target = target_nets.bind(method_state["target"]["params"],
                              method_state["target"]["batch_stats"],
                              axis_name=bn_axis(config, axis_name))
    x_a, x_b = two_views(batch)

    def online_forward(x):
      z = embed(online, x)
      return z, online.predictor(z, train=True)

    def target_forward(x):
      return jax.lax.stop_gradient(embed(target, x))

    (z_a, p_a), (z_b, p_b) = online_forward(x_a), online_forward(x_b)
    t_a, t_b = target_forward(x_a), target_forward(x_b)
    loss = (losses.byol_loss(p_a, t_b, axis_name=axis_name)
            + losses.byol_loss(p_b, t_a, axis_name=axis_name))
    new_state = {"target": teacher_after_forward(
        method_state["target"], target_nets.batch_stats(target), axis_name=axis_name,
        sync_bn=config.sync_bn)}
    metrics = {"loss": loss, **method_health(config, batch, z_a, z_b, axis_name=axis_name,
                                              student=p_a, teacher=t_b)}
    return loss, (metrics, online_nets.batch_stats(online), new_state)

  def update(params, batch_stats, method_state, step):
    del batch_stats  # the target keeps its own BatchNorm statistics (see the module docstring)
    momentum = cosine_momentum(step, total_steps, kw.base_momentum)
    return {"target": teacher_update(method_state["target"], params, momentum)}

  return Method(init=init, loss_fn=loss_fn, update=update, features=encoder_features(online_nets))


def flops_networks(config) -> FlopsNetworks:
  """What one train step runs, for the FLOPs count (:class:`ssl_jax.methods.FlopsNetworks`):
  the online networks on both views, and the momentum encoder and projector on both."""
  return FlopsNetworks(build_networks(config, with_predictor=True),
                       teachers=("encoder", "projector"))
