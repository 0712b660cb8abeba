"""SimCLR (Chen et al., 2020, https://arxiv.org/abs/2002.05709).

Encoder + MLP projector; two augmented views of each example; NT-Xent over the global batch
(:func:`ssl_jax.losses.ntxent`). As in the official TF code, both views go through the networks
as one concatenated batch, so BatchNorm statistics cover the 2N views (synced over the data axis
when ``config.sync_bn``). Projector: SimCLR v1's Linear-BN-ReLU-Linear by default (``proj_layers``
and ``proj_output_norm="bn"`` give SimCLR v2's deeper head with BN on the output);
``proj_layers=0`` applies the loss to the encoder's features directly (the digits recipe: with an
8x8 input and a 128-wide fully connected encoder output, a projector made the pre-projector
features worse for few-label probing on the validation split).
"""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections

from ssl_jax import losses
from ssl_jax.train.monitors import method_health
from ssl_jax.methods import FlopsNetworks, Method, RunInfo, no_update
from ssl_jax.methods.common import (bn_axis, encoder_features, plain_init, projector_networks,
                                   two_views)
from ssl_jax.models.nnx_utils import Networks

DISPLAY_NAME = "SimCLR"


def default_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      temperature=0.5,  # SimCLR appendix B.9 (CIFAR-10)
      proj_hidden_dim=2048,
      proj_dim=128,
      proj_layers=2,
      proj_output_norm="none",  # "bn" for SimCLR v2
  ))


def build_networks(config, *, projector_dims: tuple[int, int, int, str]) -> Networks:
  """Encoder + projector ``(hidden, out, layers, output_norm)`` as one NNX module tree
  (no projector when ``layers == 0``)."""
  hidden, out, layers, output_norm = projector_dims
  return projector_networks(config, hidden=hidden, out=out, layers=layers,
                            output_norm=None if output_norm == "none" else output_norm)


def make(config, run: RunInfo = RunInfo()) -> Method:
  del run  # no schedule of its own
  kw = config.method_kwargs
  nets = build_networks(config, projector_dims=(kw.proj_hidden_dim, kw.proj_dim, kw.proj_layers,
                                                kw.proj_output_norm))

  def loss_fn(params, batch_stats, method_state, batch, rng, *, axis_name):
    del rng
    model = nets.bind(params, batch_stats, axis_name=bn_axis(config, axis_name))
    x_a, x_b = two_views(batch)
    z = model.encoder(jnp.concatenate([x_a, x_b]), train=True)
    if kw.proj_layers:
      z = model.projector(z, train=True)
    z_a, z_b = jnp.split(z, 2)
    loss = losses.ntxent(z_a, z_b, temperature=kw.temperature, axis_name=axis_name)
    metrics = {"loss": loss, **method_health(config, batch, z_a, z_b, axis_name=axis_name)}
    return loss, (metrics, nets.batch_stats(model), method_state)

  return Method(init=plain_init(nets), loss_fn=loss_fn, update=no_update,
                features=encoder_features(nets))


def flops_networks(config) -> FlopsNetworks:
  """What one train step runs, for the FLOPs count (:class:`ssl_jax.methods.FlopsNetworks`):
  encoder and projector on both views."""
  kw = config.method_kwargs
  return FlopsNetworks(build_networks(config, projector_dims=(
      kw.proj_hidden_dim, kw.proj_dim, kw.proj_layers, kw.proj_output_norm)))
