"""VICReg (Bardes, Ponce & LeCun, 2022, https://arxiv.org/abs/2105.04906).

Encoder + expander; two augmented views; variance, invariance and covariance terms on the
expander outputs of the global batch (:func:`ssl_jax.losses.vicreg`), weighted 25 / 25 / 1
(``lambda``, ``mu``, ``nu`` of the paper's eq. 6 and section 4.1).

As the official code (``VICReg`` and ``Projector`` in ``main_vicreg.py`` of
facebookresearch/vicreg): the expander is ``Linear-BN-ReLU`` x (``proj_layers - 1``) then a
bias-free ``Linear`` (8192-8192-8192 in the paper, section 4.1), the same head as Barlow Twins
(:func:`ssl_jax.methods.common.bias_free_projector_networks`); each view goes through the networks
separately, so BatchNorm statistics are those of one view (synced over the data axis when
``config.sync_bn``, as the official ``SyncBatchNorm``).

Metrics: ``loss``, the collapse monitor on the first view's expander outputs
(:func:`ssl_jax.train.monitors.embedding_std`), and the three unweighted terms:
``vicreg_invariance`` (the MSE) and ``vicreg_variance`` (the averaged hinge on the standard
deviations) computed here in ``O(N D)``, and ``vicreg_covariance`` recovered from the loss as
``(loss - sim_weight * invariance - var_weight * variance) / cov_weight`` (so the ``[D, D]``
covariances are not built twice; not logged when ``cov_weight == 0``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from ssl_jax import losses
from ssl_jax.train.monitors import method_health
from ssl_jax.losses.utils import global_count, global_mean
from ssl_jax.methods import FlopsNetworks, Method, RunInfo, no_update
from ssl_jax.methods.common import bias_free_projector_networks as build_networks
from ssl_jax.methods.common import bn_axis, embed_views, encoder_features, plain_init

DISPLAY_NAME = "VICReg"


def default_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      sim_weight=25.0,  # lambda, --sim-coeff
      var_weight=25.0,  # mu, --std-coeff
      cov_weight=1.0,  # nu, --cov-coeff
      eps=1e-4,
      proj_hidden_dim=8192,
      proj_dim=8192,
      proj_layers=3,
  ))


def _terms(z_a, z_b, eps, axis_name):
  """The unweighted invariance and variance terms of :func:`ssl_jax.losses.vicreg` (no grad)."""
  z_a, z_b = (jax.lax.stop_gradient(z.astype(jnp.float32)) for z in (z_a, z_b))
  invariance = jnp.mean(global_mean(jnp.square(z_a - z_b), axis_name))
  n = global_count(z_a.shape[0], axis_name)
  variance = 0.0
  for z in (z_a, z_b):
    centered = z - global_mean(z, axis_name)
    var = global_mean(centered * centered, axis_name) * n / (n - 1)  # unbiased, as torch.var
    variance += jnp.mean(jax.nn.relu(1.0 - jnp.sqrt(var + eps))) / 2
  return invariance, variance


def make(config, run: RunInfo = RunInfo()) -> Method:
  del run  # no schedule of its own
  kw = config.method_kwargs
  if kw.proj_layers < 0:
    raise ValueError(f"vicreg: proj_layers must be >= 0, got {kw.proj_layers}.")
  nets = build_networks(config, hidden=kw.proj_hidden_dim, out=kw.proj_dim,
                        layers=kw.proj_layers)

  def loss_fn(params, batch_stats, method_state, batch, rng, *, axis_name):
    del rng
    z_a, z_b, new_stats = embed_views(nets, params, batch_stats, batch,
                                      axis_name=bn_axis(config, axis_name),
                                      use_projector=kw.proj_layers > 0)
    loss = losses.vicreg(z_a, z_b, sim_weight=kw.sim_weight, var_weight=kw.var_weight,
                         cov_weight=kw.cov_weight, eps=kw.eps, axis_name=axis_name)
    invariance, variance = _terms(z_a, z_b, kw.eps, axis_name)
    metrics = {"loss": loss, "vicreg_invariance": invariance, "vicreg_variance": variance,
               **method_health(config, batch, z_a, z_b, axis_name=axis_name)}
    if kw.cov_weight:
      rest = jax.lax.stop_gradient(loss) - kw.sim_weight * invariance - kw.var_weight * variance
      metrics["vicreg_covariance"] = rest / kw.cov_weight
    return loss, (metrics, new_stats, method_state)

  return Method(init=plain_init(nets), loss_fn=loss_fn, update=no_update,
                features=encoder_features(nets))


def flops_networks(config) -> FlopsNetworks:
  """What one train step runs, for the FLOPs count (:class:`ssl_jax.methods.FlopsNetworks`):
  encoder and projector on both views."""
  kw = config.method_kwargs
  return FlopsNetworks(build_networks(config, hidden=kw.proj_hidden_dim, out=kw.proj_dim,
                                      layers=kw.proj_layers))
