"""Methods: one small module per self-supervised objective.

A method module exposes ``default_config() -> ml_collections.ConfigDict`` (its hyperparameters)
and ``make(config, *, total_steps=None) -> Method`` (``config`` is the whole run config, the
method's hyperparameters under ``config.method_kwargs``; ``total_steps`` is the run's length, for
schedules such as BYOL's momentum, and may be None where no training happens, e.g. evaluation). The registry below maps names to module paths, resolved with
:mod:`importlib` on demand: importing :mod:`ssl_jax.methods` imports no method.

The contract (all functions pure; ``params`` and ``batch_stats`` are plain nested dicts):

* ``init(rng, example_batch) -> (params, batch_stats, method_state)``: builds the NNX networks and
  splits them. ``example_batch`` is the preprocessed batch (views already made); only its shapes
  are used. ``method_state`` holds teachers, queues, centers, prototypes (``{}`` when none).
* ``loss_fn(params, batch_stats, method_state, batch, rng, *, axis_name)
  -> (loss, (metrics, new_batch_stats, new_method_state))``: the loss of the whole global batch.
  ``axis_name`` is the data axis under ``shard_map``/``pmap`` (gather negatives, reduce
  statistics, sync BatchNorm over it) and ``None`` under GSPMD or on one device.
* ``update(params, batch_stats, method_state, step) -> method_state``: after the optimizer step
  (EMA teachers, queue pushes). Not called for a step skipped for non-finite values.
* ``features(params, batch_stats, images) -> [N, D]``: what evaluation probes: the encoder output
  before any projector, BatchNorm in inference mode. Language methods (``MODALITY = "text"``,
  see :mod:`ssl_jax.methods.text_common`) take ``{"tokens", "segment_ids", ...}`` instead of
  images.

A method module also declares ``DISPLAY_NAME`` (how tables and the README name it, e.g.
``"MoCo v2"``; :func:`display_name`), ``MODALITY`` (default ``"image"``; see
:mod:`ssl_jax.modalities`) and ``flops_networks(config) -> FlopsNetworks`` (what one train step
runs, for :mod:`ssl_jax.bench.flops`); optionally ``QUEUE_KWARG``, the ``method_kwargs`` key of a
queue that must hold at least one global batch (benchmarks at other batch sizes grow it).

``batch_stats`` is a separate argument (not part of ``method_state``) because the engine owns it
generically: it is the BatchNorm running statistics of the trained networks, updated by the
forward pass, held back on skipped steps, and needed by ``features``.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any, Callable, NamedTuple

PyTree = Any

METHODS: dict[str, str] = {
    "simclr": "ssl_jax.methods.simclr",
    "moco_v2": "ssl_jax.methods.moco_v2",
    "moco_v3": "ssl_jax.methods.moco_v3",
    "byol": "ssl_jax.methods.byol",
    "simsiam": "ssl_jax.methods.simsiam",
    "barlow_twins": "ssl_jax.methods.barlow_twins",
    "vicreg": "ssl_jax.methods.vicreg",
    "nnclr": "ssl_jax.methods.nnclr",
    # Language (MODALITY = "text"): rows of token ids instead of image views.
    "mlm": "ssl_jax.methods.mlm",
    "clm": "ssl_jax.methods.clm",
    "nsp": "ssl_jax.methods.nsp",
    "simcse": "ssl_jax.methods.simcse",
}


class Method(NamedTuple):
  """The pure functions of one method (see the module docstring for the contract)."""

  init: Callable[..., tuple[PyTree, PyTree, PyTree]]
  loss_fn: Callable[..., tuple[Any, tuple[dict, PyTree, PyTree]]]
  update: Callable[..., PyTree]
  features: Callable[..., Any]


class FlopsHead(NamedTuple):
  """A head of a language method in the FLOPs count: the dense layers of the bundle's
  ``network`` (a dotted attribute path; None for none) applied at ``positions`` positions per
  row, plus the tied vocabulary projection (``2 * width * vocab`` per position) when
  ``vocab_projection``."""

  network: str | None
  positions: int
  vocab_projection: bool = False


class FlopsNetworks(NamedTuple):
  """What one train step of a method runs, for :mod:`ssl_jax.bench.flops`.

  ``networks``: the method's :class:`~ssl_jax.models.nnx_utils.Networks` as the step builds
  them; every network of the bundle is trained, ``passes`` forward passes per example (views, or
  dropout masks); ``teachers``: the networks whose momentum (EMA) copy also runs forward, as many
  passes (those the bundle has); ``heads`` (language methods): ``{part: FlopsHead}`` counted
  beside the encoder's blocks, which run on every token.
  """

  networks: Any
  passes: int = 2
  teachers: tuple[str, ...] = ()
  heads: dict[str, FlopsHead] = {}


def no_update(params, batch_stats, method_state, step):
  """``Method.update`` for methods without teachers or queues."""
  del params, batch_stats, step
  return method_state


def get_module(name: str) -> ModuleType:
  """The method module registered under ``name``; a clear error for unknown names."""
  if name not in METHODS:
    raise ValueError(f"Unknown method {name!r}. Valid methods: {', '.join(sorted(METHODS))}.")
  return importlib.import_module(METHODS[name])


def modality(name: str) -> str:
  """``"image"`` or ``"text"``: what the method's batches hold (a module's ``MODALITY``)."""
  return getattr(get_module(name), "MODALITY", "image")


def display_name(name: str) -> str:
  """How tables name the method ``name`` (its module's ``DISPLAY_NAME``)."""
  return get_module(name).DISPLAY_NAME


def make(name: str, config, *, total_steps: int | None = None) -> Method:
  """Builds the method ``name`` from the full run config."""
  return get_module(name).make(config, total_steps=total_steps)
