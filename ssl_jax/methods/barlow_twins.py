"""Barlow Twins (Zbontar et al., 2021, https://arxiv.org/abs/2103.03230).

Encoder + projector; two augmented views; the cross-correlation matrix of the two views'
projections, standardized over the global batch, is driven to the identity
(:func:`ssl_jax.losses.barlow_twins`).

As the official code (``BarlowTwins`` in ``main.py`` of facebookresearch/barlowtwins):

* projector ``Linear-BN-ReLU`` x (``proj_layers - 1``) then a ``Linear`` *without bias* (the loss
  standardizes the embeddings itself); 8192-8192-8192 in the paper (section 4, "Architecture"),
  hidden linears without bias (a BatchNorm follows them);
* each view goes through the networks *separately*, so BatchNorm statistics are those of one view
  (synced over the data axis when ``config.sync_bn``: the official code converts to
  ``SyncBatchNorm``), and the running averages are updated once per view;
* ``lambda_ = 0.0051`` (``--lambd``; the paper's section 4 says ``5e-3``); ``scale_loss = 1``
  (the current official code dropped the first release's ``--scale-loss 1/32``, see
  :func:`ssl_jax.losses.barlow_twins`; solo-learn's CIFAR recipe uses 0.1). The factor multiplies
  the loss, so it matters under LARS, whose trust ratio normalizes the weights' gradients but not
  the biases' nor the weight decay's share.

Metrics: ``loss`` (scaled), the collapse monitor on the first view's projections
(:func:`ssl_jax.train.monitors.embedding_std`), and the two terms of the loss:
``bt_on_diag = sum_i (1 - C_ii)^2`` (computed here from the diagonal, ``O(N D)``) and
``bt_off_diag = sum_{i != j} C_ij^2``, recovered as ``(loss / scale_loss - bt_on_diag) /
lambda_`` so the ``[D, D]`` matrix is not built twice.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from ssl_jax import losses
from ssl_jax.train.monitors import method_health
from ssl_jax.losses.utils import global_mean, standardize  # the loss's own standardization
from ssl_jax.methods import FlopsNetworks, Method, RunInfo, no_update
from ssl_jax.methods.common import bias_free_projector_networks as build_networks
from ssl_jax.methods.common import bn_axis, embed_views, encoder_features, plain_init

DISPLAY_NAME = "Barlow Twins"


def default_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      lambda_=0.0051,  # official --lambd (paper section 4: 5e-3)
      scale_loss=1.0,  # the first official release's --scale-loss (1/32); solo-learn CIFAR: 0.1
      proj_hidden_dim=8192,
      proj_dim=8192,
      proj_layers=3,
  ))


def make(config, run: RunInfo = RunInfo()) -> Method:
  del run  # no schedule of its own
  kw = config.method_kwargs
  if kw.proj_layers < 0:
    raise ValueError(f"barlow_twins: proj_layers must be >= 0, got {kw.proj_layers}.")
  if kw.lambda_ <= 0 or kw.scale_loss <= 0:
    raise ValueError(f"barlow_twins: lambda_ and scale_loss must be > 0, got {kw.lambda_} and "
                     f"{kw.scale_loss}.")
  nets = build_networks(config, hidden=kw.proj_hidden_dim, out=kw.proj_dim,
                        layers=kw.proj_layers)

  def loss_fn(params, batch_stats, method_state, batch, rng, *, axis_name):
    del rng
    z_a, z_b, new_stats = embed_views(nets, params, batch_stats, batch,
                                      axis_name=bn_axis(config, axis_name),
                                      use_projector=kw.proj_layers > 0)
    unscaled = losses.barlow_twins(z_a, z_b, lambda_=kw.lambda_, axis_name=axis_name)
    loss = kw.scale_loss * unscaled
    # The diagonal of C costs O(N D); the off-diagonal sum follows from the loss.
    sa, sb = (jax.lax.stop_gradient(standardize(z.astype(jnp.float32), axis_name))
              for z in (z_a, z_b))
    on_diag = jnp.sum(jnp.square(1.0 - global_mean(sa * sb, axis_name)))
    off_diag = (jax.lax.stop_gradient(unscaled) - on_diag) / kw.lambda_
    metrics = {"loss": loss, "bt_on_diag": on_diag, "bt_off_diag": off_diag,
               **method_health(config, batch, z_a, z_b, axis_name=axis_name)}
    return loss, (metrics, new_stats, method_state)

  return Method(init=plain_init(nets), loss_fn=loss_fn, update=no_update,
                features=encoder_features(nets))


def flops_networks(config) -> FlopsNetworks:
  """What one train step runs, for the FLOPs count (:class:`ssl_jax.methods.FlopsNetworks`):
  encoder and projector on both views."""
  kw = config.method_kwargs
  return FlopsNetworks(build_networks(config, hidden=kw.proj_hidden_dim, out=kw.proj_dim,
                                      layers=kw.proj_layers))
