"""Methods: one small module per self-supervised objective.

A method module exposes ``default_config() -> ml_collections.ConfigDict`` (its hyperparameters)
and ``make(config, run: RunInfo = RunInfo()) -> Method`` (``config`` is the whole run config, the
method's hyperparameters under ``config.method_kwargs``; ``run`` says what the engine knows of the
run: its length, epochs, dataset size, global batch and device count, all ``None`` where no
training happens, e.g. evaluation). The registry below maps names to module paths, resolved with
:mod:`importlib` on demand: importing :mod:`ssl_jax.methods` imports no method.

The contract (all functions pure; ``params`` and ``batch_stats`` are plain nested dicts;
``CONTRIBUTING.md`` is the long form):

* ``init(rng, example_batch) -> (params, batch_stats, method_state)``: builds the NNX networks and
  splits them. ``example_batch`` is the preprocessed batch (views already made); only its shapes
  are used. ``method_state`` holds teachers, queues, centers, prototypes (``{}`` when none).
* ``loss_fn(params, batch_stats, method_state, batch, rng, *, axis_name)
  -> (loss, (metrics, new_batch_stats, new_method_state))``: the loss of the whole global batch.
  ``axis_name`` is the data axis under ``shard_map``/``pmap`` (gather negatives, reduce
  statistics, sync BatchNorm over it) and ``None`` under GSPMD or on one device.
* ``update(params, batch_stats, method_state, step) -> method_state``: after the optimizer step
  (EMA teachers, queue pushes). Not called for a step skipped for non-finite values.
* ``features(params, batch_stats, method_state, inputs) -> [N, D]``: what evaluation probes,
  BatchNorm in inference mode: the online encoder before any projector unless the method says
  otherwise (a teacher in ``method_state``, e.g. DINO's). Image methods take images
  ``[N, H, W, C]`` in [0, 1]; language methods (``MODALITY = "text"``, see
  :mod:`ssl_jax.methods.text_common`) take ``{"tokens", "segment_ids", ...}``. ``eval_state``
  names the method-state entries it reads; evaluation restores those from the checkpoint.

Optional fields (defaults: none):

* ``project(params, method_state, step) -> params``: a projection of the parameters after the
  optimizer step, before ``update`` (SwAV's prototype normalization, CLIP's logit-scale clamp);
  held back on a skipped step like everything else.
* ``periodic``: :class:`Periodic` work every N steps or epochs, run by the engine beside the
  compiled step (DeepCluster-v2's k-means over its memory bank).
* ``eval_state``: the top-level ``method_state`` keys ``features`` reads (e.g. ``("teacher",)``);
  evaluation restores them with the networks and passes them in (the rest, such as queues, is
  neither read nor restored; ``{}`` is passed when empty).
* ``param_groups``: optimizer parameter groups the method declares
  (``{name: {"pattern", "lr_mult", "wd_mult", "frozen_until_step", "frozen_until_epoch"}}``, see
  :mod:`ssl_jax.train.optim`); the run's ``config.optimizer.groups`` override them by name.
* ``state_sharding(method_state) -> pytree of bool``: leaves of the method state stored split
  along their leading axis over the data axis instead of replicated (a memory bank of the whole
  dataset): under ``shard_map``/``pmap`` the method's functions see the device's rows, under
  GSPMD the global array.

An image method module may declare ``VIEWS = {"global": g, "local": l}``: how many views of the
largest size (global) and of smaller sizes (local crops) its ``loss_fn`` takes, each an int
(exactly) or a ``(min, max)`` pair (``max=None``: no upper bound); the default is two global views
and no local one. The engine refuses a ``config.views`` that does not provide them before training
(:func:`ssl_jax.methods.common.check_views`).

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

import dataclasses
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


@dataclasses.dataclass(frozen=True)
class RunInfo:
  """What a method learns of the run it is built for (``None`` where there is no run, e.g. a
  method rebuilt for evaluation).

  Attributes:
    total_steps: steps of the whole run.
    steps_per_epoch: steps of one pass over the training examples.
    num_examples: training examples (e.g. the rows of a memory bank of the dataset).
    global_batch_size: examples per step over all devices.
    num_devices: devices of the data axis.
  """

  total_steps: int | None = None
  steps_per_epoch: int | None = None
  num_examples: int | None = None
  global_batch_size: int | None = None
  num_devices: int | None = None

  def require(self, *names: str) -> "RunInfo":
    """``self``, after checking that ``names`` are known; a clear error otherwise (a method that
    schedules by step or epoch cannot be built without a run)."""
    missing = [n for n in names if getattr(self, n) is None]
    if missing:
      raise ValueError(f"This method needs the run's {', '.join(missing)}: build it with "
                       "methods.make(name, config, run=RunInfo(...)) (the engine does).")
    return self

  def epoch_steps(self, epochs: float) -> int:
    """``epochs`` in steps (rounded), e.g. DINO's frozen last layer during the first epoch."""
    return round(epochs * self.require("steps_per_epoch").steps_per_epoch)


class Periodic(NamedTuple):
  """Work a method runs beside the train step, every ``every_steps`` steps or every
  ``every_epochs`` epochs (exactly one of them > 0), after the step that completes the interval
  and before that step's checkpoint, so a resumed run neither repeats nor misses a call.

  ``fn(params, batch_stats, method_state, step, *, axis_name) -> method_state`` is compiled like
  the step (``shard_map``/``pmap`` over the data axis, GSPMD globally); ``step`` is the number of
  steps done. Sharded method-state leaves (``Method.state_sharding``) arrive as the device's rows,
  so work over a dataset-sized memory bank costs each device its share plus the collectives
  ``fn`` itself runs (e.g. a ``psum`` of per-cluster sums).
  """

  fn: Callable[..., PyTree]
  every_steps: int = 0
  every_epochs: int = 0

  def interval(self, steps_per_epoch: int) -> int:
    """The period in steps."""
    if (self.every_steps > 0) == (self.every_epochs > 0):
      raise ValueError(f"Periodic work needs exactly one of every_steps / every_epochs > 0, got "
                       f"{self.every_steps} / {self.every_epochs}.")
    return self.every_steps or self.every_epochs * steps_per_epoch


class Method(NamedTuple):
  """The pure functions of one method (see the module docstring for the contract)."""

  init: Callable[..., tuple[PyTree, PyTree, PyTree]]
  loss_fn: Callable[..., tuple[Any, tuple[dict, PyTree, PyTree]]]
  update: Callable[..., PyTree]
  features: Callable[..., Any]
  project: Callable[..., PyTree] | None = None
  periodic: tuple[Periodic, ...] = ()
  param_groups: dict | None = None
  eval_state: tuple[str, ...] = ()
  state_sharding: Callable[[PyTree], PyTree] | None = None


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
  them; every network of the bundle is trained, ``passes`` forward passes per example (dropout
  masks of a language method; for an image method None means every view, and a number the first
  ``passes`` views in name order, e.g. MoCo v2's asymmetric query); ``teachers``: the networks
  whose momentum (EMA) copy also runs forward (see :func:`ssl_jax.bench.flops.method_step_flops`
  for the views they see); ``heads`` (language methods): ``{part: FlopsHead}`` counted
  beside the encoder's blocks, which run on every token.
  """

  networks: Any
  passes: int | None = None
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


def make(name: str, config, run: RunInfo = RunInfo()) -> Method:
  """Builds the method ``name`` from the full run config and what is known of the run."""
  return get_module(name).make(config, run)
