"""MoCo v2 (Chen, Fan, Girshick & He, 2020, "Improved Baselines with Momentum Contrastive
Learning", https://arxiv.org/abs/2003.04297; MoCo: He et al., 2020, "Momentum Contrast for
Unsupervised Visual Representation Learning", https://arxiv.org/abs/1911.05722).

A query network (encoder + MLP head) is trained with InfoNCE to pick the key of the same image,
given by a *key* (momentum) network, out of a queue of keys of earlier batches:

* ``loss = infonce(q, stop_gradient(k), stop_gradient(queue), temperature=T)``
  (:func:`ssl_jax.losses.infonce`, MoCo's eq. 1) with ``q = query_net(view a)`` and
  ``k = key_net(view b)``; one direction, as ``MoCo.forward`` in ``moco/builder.py`` of
  facebookresearch/moco. ``symmetric=True`` gives the symmetrized loss of that repository's
  CIFAR-10 demo notebook: ``infonce(q_a, k_b) + infonce(q_b, k_a)`` (a sum), both key sets pushed.
* Key network ``<- m * key_net + (1 - m) * query_net`` after every optimizer step with a constant
  ``m`` (0.999, MoCo section 3.2 eq. 2); it starts as a copy of the query network.
* The queue holds the ``K`` most recent L2-normalized keys ``[K, D]`` and a pointer to its oldest
  row: after each step the keys of the whole *global* batch (all-gathered over the data axis, in
  global-batch order, so the queue is identical on every device and independent of the device
  count) overwrite the oldest rows, wrapping around (``K`` need not be a multiple of the batch;
  the official code asserts it is). It starts as random unit vectors, as the official code. The
  push is part of the state ``loss_fn`` returns, so a step skipped for a non-finite loss pushes
  nothing (the engine holds the whole method state back), and the queue is in the train state:
  checkpointed and resumed exactly.
* Head (MoCo v2 section 2): ``Linear(hidden) - ReLU - Linear(128)`` without BatchNorm, as the
  official ``--mlp`` head (``hidden`` = the encoder width there: 2048 for a ResNet-50).
  ``proj_layers=1`` is MoCo v1's linear head and ``proj_layers=0`` applies the loss to the
  encoder's features (the digits recipe).

**BatchNorm and the information leak.** With BatchNorm computed per device, a query and its
positive key are normalized with statistics of the same small subset of the batch (that device's
samples), which the queued negatives do not share: the model can find its positive from that
signature instead of from the image ("cheating", MoCo section 3.3). The official code breaks the
link by *shuffling* the samples among GPUs for the key encoder (shuffle BN). Here BatchNorm is
instead **synced over the global batch** (``config.sync_bn=True``, the default; the engine builds
BatchNorm with the data axis): all queries of a step share one set of statistics and all keys
another, each computed over the whole global batch, so nothing in a query's normalization is
specific to the subset its positive came from, and the result does not depend on how the batch
is split over devices (MoCo v3 uses synced BN too; the official CIFAR-10 demo calls its 1-split
BatchNorm "analogous to SyncBatchNorm"). What remains, that the positive was normalized with this
step's statistics and the queued negatives with earlier steps', is there under shuffle BN as well,
and is weaker here since statistics of the global batch vary less from step to step than those of
one device's shard. With ``sync_bn=False`` on several devices the per-device leak is back: this
module does not implement shuffle BN.

As in the official code the key network runs in training mode (batch statistics); it keeps its own
BatchNorm running averages in ``method_state["key"]["batch_stats"]`` (never used; kept so the key
network is complete).

``method_state = {"key": {"params", "batch_stats"}, "queue": [K, D] float32, "queue_ptr": int32}``.
``features`` is the query encoder (before the head), as the paper evaluates. Health monitors
(:func:`ssl_jax.train.monitors.health_metrics`) are taken on the queries ``q_a``; alignment and
``teacher_agreement`` on the positive pairs the loss uses, query ``q_a`` and key ``k_b``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from ssl_jax import losses
from ssl_jax.train.monitors import method_health
from ssl_jax.losses.utils import l2_normalize
from ssl_jax.methods import FlopsNetworks, Method, RunInfo
from ssl_jax.methods.common import (bn_axis, build_encoder, encoder_features, encoder_width,
                                   gather_global, push, teacher_after_forward, teacher_init,
                                   teacher_update, two_views)
from ssl_jax.models.heads import MLPHead
from ssl_jax.models.nnx_utils import Bundle, Networks

QUEUE_KWARG = "queue_size"  # holds keys of past batches
DISPLAY_NAME = "MoCo v2"

# A fold_in constant for the initial queue's key, far from the counts nnx.Rngs folds into ``rng``.
_QUEUE_STREAM = 0x6D6F636F


def default_config() -> ml_collections.ConfigDict:
  """The ImageNet hyperparameters of MoCo v2 (section 2 and table 1; official ``main_moco.py``)."""
  return ml_collections.ConfigDict(dict(
      temperature=0.2,  # MoCo v2 section 2 (v1: 0.07)
      queue_size=65536,  # K, MoCo v1 section 4 / official --moco-k
      momentum=0.999,  # m, MoCo v1 section 4.1 (constant)
      proj_hidden_dim=2048,  # the encoder width for a ResNet-50 (official --mlp)
      proj_dim=128,
      proj_layers=2,  # 2: MoCo v2's MLP head; 1: MoCo v1's linear head; 0: no head
      symmetric=False,  # the symmetrized loss of the official CIFAR-10 demo
  ))


def build_networks(config) -> Networks:
  """Encoder + head (none when ``proj_layers == 0``) as one NNX module tree."""
  kw = config.method_kwargs
  dtype = jnp.dtype(config.compute_dtype)

  def build(rngs, bn_axis_name):
    encoder = build_encoder(config, rngs, bn_axis_name)
    if kw.proj_layers == 0:
      return Bundle(encoder=encoder)
    projector = MLPHead(encoder.out_features, kw.proj_hidden_dim, kw.proj_dim,
                        num_layers=kw.proj_layers, hidden_norm=None, output_norm=None,
                        bn_axis_name=bn_axis_name, dtype=dtype, rngs=rngs)
    return Bundle(encoder=encoder, projector=projector)

  return Networks(build)


def make(config, run: RunInfo = RunInfo()) -> Method:
  del run  # constant momentum: no schedule
  kw = config.method_kwargs
  pushed = config.batch_size * (2 if kw.symmetric else 1)
  if pushed > kw.queue_size:
    raise ValueError(f"moco_v2: queue_size={kw.queue_size} is smaller than the {pushed} keys a "
                     f"step pushes (batch_size={config.batch_size}"
                     f"{', symmetric' if kw.symmetric else ''}).")
  nets = build_networks(config)

  def init(rng, example_batch):
    del example_batch  # the networks' shapes do not depend on the image size
    # The networks take ``rng`` itself, so the evaluation's random-init baseline (which calls
    # init again with the same key) sees the weights pretraining started from.
    params, batch_stats = nets.init(rng)
    dim = kw.proj_dim if kw.proj_layers else encoder_width(config)
    queue_key = jax.random.fold_in(rng, _QUEUE_STREAM)
    queue = l2_normalize(jax.random.normal(queue_key, (kw.queue_size, dim)))
    # The key network is a momentum teacher of the whole query network (encoder and head).
    return params, batch_stats, {"key": teacher_init(params, batch_stats, tuple(params)),
                                 "queue": queue, "queue_ptr": jnp.zeros((), jnp.int32)}

  def loss_fn(params, batch_stats, method_state, batch, rng, *, axis_name):
    del rng
    query_net = nets.bind(params, batch_stats, axis_name=bn_axis(config, axis_name))
    key_net = nets.bind(method_state["key"]["params"], method_state["key"]["batch_stats"],
                        axis_name=bn_axis(config, axis_name))

    def embed(net, x):
      z = net.encoder(x, train=True)
      return net.projector(z, train=True) if kw.proj_layers else z

    x_a, x_b = two_views(batch)
    queue = jax.lax.stop_gradient(method_state["queue"])
    q_a = embed(query_net, x_a)
    k_b = jax.lax.stop_gradient(embed(key_net, x_b))
    loss = losses.infonce(q_a, k_b, queue, temperature=kw.temperature, axis_name=axis_name)
    new_keys = [k_b]
    if kw.symmetric:
      q_b = embed(query_net, x_b)
      k_a = jax.lax.stop_gradient(embed(key_net, x_a))
      loss = loss + losses.infonce(q_b, k_a, queue, temperature=kw.temperature,
                                   axis_name=axis_name)
      new_keys = [k_a, k_b]  # as the demo's torch.cat([k1, k2])

    keys = jnp.concatenate([gather_global(l2_normalize(k), axis_name) for k in new_keys])
    new_queue, new_ptr = push(method_state["queue"], method_state["queue_ptr"], keys)
    new_state = {"key": teacher_after_forward(method_state["key"], nets.batch_stats(key_net),
                                              axis_name=axis_name, sync_bn=config.sync_bn),
                 "queue": new_queue, "queue_ptr": new_ptr}
    positive = jnp.mean(jnp.sum(l2_normalize(q_a) * l2_normalize(k_b), axis=1))
    metrics = {"loss": loss, "positive_cosine": jax.lax.stop_gradient(positive),
               **method_health(config, batch, q_a, k_b, axis_name=axis_name, student=q_a,
                               teacher=k_b)}
    return loss, (metrics, nets.batch_stats(query_net), new_state)

  def update(params, batch_stats, method_state, step):
    del batch_stats, step  # the key network keeps its own BatchNorm statistics; constant m
    return {**method_state, "key": teacher_update(method_state["key"], params, kw.momentum)}

  return Method(init=init, loss_fn=loss_fn, update=update, features=encoder_features(nets))


def flops_networks(config) -> FlopsNetworks:
  """What one train step runs, for the FLOPs count (:class:`ssl_jax.methods.FlopsNetworks`):
  the query networks and their momentum copies, on one view each (both with ``symmetric``)."""
  passes = None if config.method_kwargs.symmetric else 1  # None: every view
  return FlopsNetworks(build_networks(config), passes=passes, teachers=("encoder", "projector"))
