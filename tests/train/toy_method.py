"""A toy two-view method that uses every optional part of the method contract, for
tests/train/test_contract.py (registered there under the name ``toy``; not part of the package).

* **Run information**: the prototype temperature follows a linear schedule over
  ``run.total_steps``; the head is frozen for ``frozen_epochs`` epochs (``run.steps_per_epoch``);
  the memory bank has a row per training example (``run.num_examples``), rounded up to a multiple
  of ``run.num_devices``.
* **Parameter groups**: ``param_groups`` freezes the ``head`` for the first epoch.
* **Projection**: the prototype rows are L2-normalized after every optimizer step.
* **Periodic work**: every ``every_steps`` steps, the step number is recorded in
  ``method_state["calls"]`` and the mean of the bank's rows is computed over the data axis.
* **Sharded method state**: the bank is split over the data axis (``state_sharding``); each
  device writes the rows it owns from the gathered global batch.
* **Evaluation on method state**: ``features`` is the head's output centred by the bank's mean
  (``eval_state = ("centroid",)``), so evaluation must restore that entry.

Networks are plain arrays: ``encoder`` (a ``[in, width]`` matrix and ``tanh``), ``head``
(``[width, dim]``) and ``prototypes`` (``[K, dim]``). The loss is NT-Xent of the two views' head
outputs plus a swapped prediction over the prototypes (SwAV-like, with the scheduled
temperature); both span the global batch.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections

from ssl_jax import losses
from ssl_jax.losses.utils import l2_normalize
from ssl_jax.methods import Method, Periodic, RunInfo, no_update
from ssl_jax.methods.common import gather_global, two_views

MAX_CALLS = 8


def default_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(width=16, dim=8, prototypes=4, t_start=0.2, t_end=0.1,
                                        every_steps=4, frozen_epochs=1))


def temperature(step, total_steps: int, kw):
  """The prototype temperature at ``step``: linear from ``t_start`` to ``t_end``."""
  return kw.t_start + (kw.t_end - kw.t_start) * jnp.asarray(step, jnp.float32) / total_steps


def bank_rows(run: RunInfo) -> int:
  """Rows of the memory bank: the training examples, rounded up to a multiple of the devices
  (none where there is no run)."""
  if run.num_examples is None:
    return 0
  return math.ceil(run.num_examples / run.num_devices) * run.num_devices


def make(config, run: RunInfo = RunInfo()) -> Method:
  kw = config.method_kwargs

  def init(rng, example_batch):
    in_dim = math.prod(example_batch["image"].shape[1:])
    k_enc, k_head, k_proto = jax.random.split(rng, 3)
    params = {"encoder": {"w": jax.random.normal(k_enc, (in_dim, kw.width)) / math.sqrt(in_dim)},
              "head": {"w": jax.random.normal(k_head, (kw.width, kw.dim)) / math.sqrt(kw.width)},
              "prototypes": jax.random.normal(k_proto, (kw.prototypes, kw.dim))}
    state = {"bank": jnp.zeros((bank_rows(run), kw.dim)),
             "calls": jnp.full((MAX_CALLS,), -1, jnp.int32), "ncalls": jnp.zeros((), jnp.int32),
             "centroid": jnp.zeros((kw.dim,))}
    return params, {}, state

  def embed(params, x):
    return jnp.tanh(x.reshape(len(x), -1) @ params["encoder"]["w"])

  def loss_fn(params, batch_stats, method_state, batch, rng, *, axis_name):
    del rng
    x_a, x_b = two_views(batch)
    z_a, z_b = (l2_normalize(embed(params, x) @ params["head"]["w"]) for x in (x_a, x_b))
    t = temperature(batch["step"], run.require("total_steps").total_steps, kw)
    s_a, s_b = (z @ params["prototypes"].T / t for z in (z_a, z_b))
    swapped = -jnp.mean(jnp.sum(jax.lax.stop_gradient(jax.nn.softmax(s_b)) *
                                jax.nn.log_softmax(s_a), -1))
    if axis_name is not None:  # equal shards: the mean of the local means is the global mean
      swapped = jax.lax.pmean(swapped, axis_name)
    loss = losses.ntxent(z_a, z_b, temperature=0.5, axis_name=axis_name) + swapped
    bank = write_rows(method_state["bank"], gather_global(z_a, axis_name),
                      gather_global(batch["index"], axis_name), axis_name)
    return loss, ({"temperature": t}, batch_stats, {**method_state, "bank": bank})

  def project(params, method_state, step):
    del method_state, step
    return {**params, "prototypes": l2_normalize(params["prototypes"])}

  def record(params, batch_stats, method_state, step, *, axis_name):
    del params, batch_stats
    total = jnp.sum(method_state["bank"], 0)
    if axis_name is not None:
      total = jax.lax.psum(total, axis_name)
    n = method_state["ncalls"]
    return {**method_state, "calls": method_state["calls"].at[n].set(step), "ncalls": n + 1,
            "centroid": total / run.num_examples}

  def features(params, batch_stats, method_state, images):
    del batch_stats
    return embed(params, images) @ params["head"]["w"] - method_state["centroid"]

  return Method(
      init=init, loss_fn=loss_fn, update=no_update, features=features, project=project,
      periodic=(Periodic(record, every_steps=kw.every_steps),),
      param_groups={"head": {"pattern": "^head/", "frozen_until_epoch": kw.frozen_epochs}},
      eval_state=("centroid",),
      state_sharding=lambda state: {k: k == "bank" for k in state})


def write_rows(bank, rows, index, axis_name):
  """``bank`` with the rows ``index`` of the global batch set to ``rows``: under an axis, each
  device holds ``len(bank)`` consecutive rows of the global bank and writes those it owns."""
  local = index
  if axis_name is not None:
    local = index - jax.lax.axis_index(axis_name) * len(bank)
  owned = (local >= 0) & (local < len(bank))
  return bank.at[jnp.where(owned, local, len(bank))].set(rows, mode="drop")
