"""SimSiam (Chen & He, 2021, "Exploring Simple Siamese Representation Learning",
https://arxiv.org/abs/2011.10566).

One network ``f`` (encoder + projection MLP) embeds both views, a prediction MLP ``h`` maps each
embedding to a prediction of the other's, and a stop-gradient on the targets is what prevents
collapse (section 3, algorithm 1, section 4.1):

* ``loss = 0.5 * (D(p_a, z_b) + D(p_b, z_a))`` with ``D`` the negative cosine similarity against a
  stop-gradient target (:func:`ssl_jax.losses.negative_cosine`, mean over the global batch), as
  ``main_simsiam.py`` of facebookresearch/simsiam (``-(criterion(p1, z2) + criterion(p2, z1)) *
  0.5``).
* Projector (section 3, "Baseline settings"): three fully connected layers of width 2048 with BN
  on each, the output one included, ReLU on the hidden ones: ``MLPHead(D, 2048, 2048,
  num_layers=3, output_norm=...)``. The output BN has no affine parameters in the official
  ``builder.py`` (``BatchNorm1d(dim, affine=False)``): ``proj_output_norm="bn_noaffine"``; ``"bn"``
  gives it a learned scale and shift. The official code sets the hidden width to the encoder's
  width (2048 for ResNet-50, as the paper's text); here it is ``proj_hidden_dim``.
* Predictor: a bottleneck ``Linear(512) - BN - ReLU - Linear(2048)``, no BN on the output (a BN
  there makes training unstable, table 3d); the output layer has a bias, as the official code.
* As the official code, each view goes through the network in its own forward pass, so BatchNorm
  statistics are per view (synced over the data axis when ``config.sync_bn``: the paper uses
  SyncBN).

``stop_gradient=False`` removes the stop-gradient (the paper's section 4.1 / figure 2 ablation, in
which the representation collapses to a constant: the per-dimension std of the L2-normalized
``z`` falls to 0 and the loss to its minimum -1). :func:`ssl_jax.losses.negative_cosine` always
stops the gradient to its target (the stop-gradient is part of that loss), so this switch uses
:func:`negative_cosine_no_stop_gradient` below: the same forward value, with gradients flowing
into both arguments.

The collapse monitor (:func:`ssl_jax.train.monitors.embedding_std`) is computed on ``z_a``,
the projection that is the loss's target: the quantity of the paper's figure 2 (middle). With the
output BatchNorm (the default), every dimension of ``z`` is standardized over the batch, so that
per-dimension std cannot fall to 0 even when the stop-gradient is removed (on digits it stayed
above 0.8); with ``proj_output_norm="none"`` the collapse shows in the monitor as in the paper
(``tests/methods/test_simsiam.py::test_collapse_guard``).
``features`` is the encoder output, before the projector.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from ssl_jax import losses
from ssl_jax.train.monitors import method_health
from ssl_jax.losses.utils import AxisName, global_mean, l2_normalize
from ssl_jax.methods import FlopsNetworks, Method, RunInfo, no_update
from ssl_jax.methods.common import (bn_axis, build_encoder, encoder_features, plain_init,
                                   two_views)
from ssl_jax.models.heads import MLPHead
from ssl_jax.models.nnx_utils import Bundle, Networks

DISPLAY_NAME = "SimSiam"


def default_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      proj_hidden_dim=2048,  # section 3, baseline settings
      proj_dim=2048,
      proj_layers=3,  # 2 for CIFAR-10 (appendix D)
      proj_output_norm="bn_noaffine",  # "bn": with a learned scale and shift
      pred_hidden_dim=512,  # bottleneck predictor 2048-512-2048
      stop_gradient=True,  # False: the collapse ablation of section 4.1
  ))


def negative_cosine_no_stop_gradient(p: jax.Array, z: jax.Array, *,
                                     axis_name: AxisName = None) -> jax.Array:
  """``-mean_i cos(p_i, z_i)`` over the global batch with gradients into BOTH ``p`` and ``z``.

  The forward value equals :func:`ssl_jax.losses.negative_cosine`'s; only the missing
  stop-gradient differs. For SimSiam's stop-gradient ablation only (section 4.1).
  """
  cos = jnp.sum(l2_normalize(p) * l2_normalize(z), axis=-1)
  return -global_mean(cos, axis_name)


def build_networks(config) -> Networks:
  """Encoder + projector + predictor as one NNX module tree."""
  kw = config.method_kwargs
  dtype = jnp.dtype(config.compute_dtype)

  def build(rngs, bn_axis_name):
    encoder = build_encoder(config, rngs, bn_axis_name)
    head = dict(bn_axis_name=bn_axis_name, dtype=dtype, rngs=rngs)
    projector = MLPHead(encoder.out_features, kw.proj_hidden_dim, kw.proj_dim,
                        num_layers=kw.proj_layers,
                        output_norm=None if kw.proj_output_norm == "none" else kw.proj_output_norm,
                        **head)
    predictor = MLPHead(kw.proj_dim, kw.pred_hidden_dim, kw.proj_dim, **head)
    return Bundle(encoder=encoder, projector=projector, predictor=predictor)

  return Networks(build)


def make(config, run: RunInfo = RunInfo()) -> Method:
  del run  # no schedule of its own
  kw = config.method_kwargs
  nets = build_networks(config)
  criterion = losses.negative_cosine if kw.stop_gradient else negative_cosine_no_stop_gradient

  def loss_fn(params, batch_stats, method_state, batch, rng, *, axis_name):
    del rng
    model = nets.bind(params, batch_stats, axis_name=bn_axis(config, axis_name))
    x_a, x_b = two_views(batch)

    def forward(x):
      z = model.projector(model.encoder(x, train=True), train=True)
      return z, model.predictor(z, train=True)

    (z_a, p_a), (z_b, p_b) = forward(x_a), forward(x_b)
    loss = 0.5 * (criterion(p_a, z_b, axis_name=axis_name)
                  + criterion(p_b, z_a, axis_name=axis_name))
    metrics = {"loss": loss, **method_health(config, batch, z_a, z_b, axis_name=axis_name)}
    return loss, (metrics, nets.batch_stats(model), method_state)

  return Method(init=plain_init(nets), loss_fn=loss_fn, update=no_update,
                features=encoder_features(nets))


def flops_networks(config) -> FlopsNetworks:
  """What one train step runs, for the FLOPs count (:class:`ssl_jax.methods.FlopsNetworks`):
  every network on both views."""
  return FlopsNetworks(build_networks(config))
