"""Modalities: one small module per kind of input (images, text), the one place that says how a
method's data are read, shaped, preprocessed, evaluated, reported, counted and timed.

A method module declares ``MODALITY = "text"`` (default ``"image"``); :func:`of` gives the module
of a run's method, :func:`get` the module registered under a name. The registry maps names to
module paths resolved with :mod:`importlib` on demand (as :data:`ssl_jax.methods.METHODS`):
importing :mod:`ssl_jax.modalities` imports no modality.

A modality module exposes:

* ``load_source(config, split=None)``: the run's training data source for ``split`` (default
  ``config.train_split``);
* ``check_evaluable(config)``: refuses, before training writes anything, a run whose evaluation
  would fail on its data (a missing evaluation split, too few examples for a label budget);
* ``example_batch(config, source)``: the shapes (``jax.ShapeDtypeStruct``) of one global raw
  batch of ``source``, for initialization;
* ``make_preprocess(config) -> preprocess(batch, key) -> batch``: the on-device preprocessing
  inside the step;
* ``view_sizes(config, host_batch)``: the height and width of each view the encoder sees (``None``
  where there are none), for FLOPs;
* ``throughput(config, examples_per_s) -> dict``: the rates beside examples/s in logs and
  benchmark records (``tokens_per_s`` for text; none for images);
* ``SYNTHETIC_BENCH_DATA``: whether a benchmark may stand in synthetic inputs of the right shape
  when the real data do not load;
* ``NO_EMBEDDING_FIGURE``: ``None`` where the report draws the 2-D embedding of test features,
  else the note ``summary.md`` gives instead;
* hooks read by the layers above, as ``"module:function"`` strings (resolved with
  :func:`resolve`): ``EVALUATE`` (``ssl_jax.evaluate``: ``(workdir, config, *, dataset, step,
  protocols, print_table) -> (results, info)``, the modality's features, scores and baselines),
  ``STEP_FLOPS`` (``ssl_jax.bench.flops``: ``(config, view_sizes, batch) -> dict``) and
  ``BENCH_CONFIG`` (``ssl_jax.bench.harness``: ``(method, encoder) -> config``, the experiment a
  benchmark of every method runs).

Layering (no import cycle, not even through an import inside a function; the import-graph test
checks it): a modality module imports only what lies below the training loop (data sources,
augmentation, the method registry and ``methods.text_common``), none of which imports it, so
``train/`` calls it directly. What belongs to a layer above (evaluation, FLOPs formulas,
benchmark configs) lives in that layer, and the modality names it by a string that only that
layer resolves (as :data:`ssl_jax.methods.METHODS` names method modules): the modality still owns
the choice (a new modality is one module here plus its functions in those layers), and no import
points up. ``tests/test_modalities.py`` checks that every hook resolves to a public function of
the layer that reads it.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Callable

from ssl_jax import methods

MODALITIES: dict[str, str] = {
    "image": "ssl_jax.modalities.image",
    "text": "ssl_jax.modalities.text",
}

# The hooks above the train layer, and the package each must resolve into.
HOOKS: dict[str, str] = {
    "EVALUATE": "ssl_jax.evaluate",
    "STEP_FLOPS": "ssl_jax.bench",
    "BENCH_CONFIG": "ssl_jax.bench",
}


def get(name: str) -> ModuleType:
  """The modality module registered under ``name``; a clear error for unknown names."""
  if name not in MODALITIES:
    raise ValueError(f"Unknown modality {name!r} (a method module's MODALITY). Valid modalities: "
                     f"{', '.join(sorted(MODALITIES))}.")
  return importlib.import_module(MODALITIES[name])


def of(config) -> ModuleType:
  """The modality module of ``config.method`` (its module's ``MODALITY``)."""
  return get(methods.modality(config.method))


def resolve(ref: str) -> Callable:
  """The function a ``"package.module:function"`` hook names."""
  module, _, name = ref.partition(":")
  if not name:
    raise ValueError(f"Modality hook {ref!r} is not of the form 'package.module:function'.")
  return getattr(importlib.import_module(module), name)


def hook(modality: ModuleType, name: str) -> Callable:
  """``modality``'s hook ``name`` (one of :data:`HOOKS`), resolved."""
  if name not in HOOKS:
    raise ValueError(f"Unknown modality hook {name!r}; valid: {', '.join(HOOKS)}.")
  return resolve(getattr(modality, name))
