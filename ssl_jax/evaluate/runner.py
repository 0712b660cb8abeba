"""Evaluate a pretraining workdir: frozen features -> few-label kNN and linear probe -> eval.json.

``evaluate_workdir(workdir)`` rebuilds the method from ``DIR/config.json`` (a JSON file: no config
code is ever loaded from a workdir), restores the encoder from the latest committed checkpoint
and compares three feature sources with the same label draws:

* ``ssl``: the pretrained encoder's features (before any projector), BatchNorm in inference mode;
* ``random_init``: the same architecture with the weights pretraining started from (the run's own
  initialization, BatchNorm in inference mode with its initial statistics);
* ``raw``: the input pixels in [0, 1], flattened.

Images are read with the run's data settings (:func:`ssl_jax.evaluate.features.eval_arrays`) and
go through ``config.eval_preprocess`` (deterministic ops) before the encoders. Results are written
to ``DIR/eval.json`` (``DIR/eval_<dataset>.json`` for another dataset) in the schema of the design
notes and returned with a printable table.

Overrides at evaluation time (``ssl-jax eval`` / ``ssl-jax report`` take ``--config.KEY=VALUE``
as ``pretrain`` does; :func:`eval_config`) apply over the run's ``config.json`` for the keys of
:data:`EVAL_KEYS` only: how the run is evaluated (``eval.*``, ``eval_preprocess``, ``log.*``,
``cpu_kernels``) and where and how its data are read (``data.*``, e.g. ``data.image_size`` for a
transfer dataset of another size, ``data_dir``, ``train_split``, ``test_split``). Every other key
(method, encoder, optimizer, views, ...) shaped the pretrained weights, so changing it at
evaluation time is refused: pretrain another run instead.
"""

from __future__ import annotations

import copy
import json
import os
import re
from typing import Sequence

import jax
import numpy as np

from ssl_jax import config as config_lib
from ssl_jax import modalities
from ssl_jax.evaluate.features import checkpoint_step, eval_arrays, extract_features
from ssl_jax.evaluate.fewshot import evaluate_features
from ssl_jax.evaluate.table import format_table
from ssl_jax.train.workdir import load_run_config, restore_run, write_json_atomic


CLI_PROTOCOLS = ("knn", "linear", "fewshot", "finetune", "all")
#: Config keys (and key prefixes) an evaluation may set differently from pretraining.
EVAL_KEYS = ("eval.*", "eval_preprocess", "log.*", "cpu_kernels", "data.*", "data_dir",
             "train_split", "test_split")


def eval_config(workdir: str, overrides: Sequence[tuple[str, str]] = ()):
  """The run config of ``workdir`` (its ``config.json``) with ``overrides`` (``(key, text)``
  pairs of :func:`ssl_jax.config.parse_overrides`) applied; only :data:`EVAL_KEYS` may change.

  Raises:
    ValueError: an unknown key ("Unknown config key ..."), a pretraining key, a bad value.
  """
  config = load_run_config(workdir)
  for key, text in overrides:
    if not any(key == k or k.endswith(".*") and key.startswith(k[:-1]) for k in EVAL_KEYS):
      config_lib.apply_overrides(copy.deepcopy(config), [(key, text)])  # refuses unknown keys
      hint = (" (evaluate on another dataset with --dataset NAME)" if key == "dataset" else "")
      raise ValueError(f"--config.{key} is a pretraining key: it shaped the weights in {workdir}, "
                       f"so evaluation keeps the run's value{hint}. Keys evaluation may change: "
                       f"{', '.join(EVAL_KEYS)}.")
  config_lib.apply_overrides(config, overrides)
  if overrides:
    base = config_lib.base_config()
    with base.ignore_type():
      base.eval.update(config.eval.to_dict())
    config_lib.validate_eval(base.eval)
    config_lib.validate_data(config.data)
  return config


def plan_protocols(protocols, config) -> tuple[tuple[str, ...], tuple, bool]:
  """``(probe protocols, budgets, fine-tune?)`` for ``protocols``: None (the config's probes),
  one of :data:`CLI_PROTOCOLS` (``fewshot``: both probes at the few-label budgets only; ``all``:
  both probes and fine-tuning), or a sequence of probe names."""
  budgets = tuple(config.eval.budgets)
  if protocols is None:
    return tuple(config.eval.protocols), budgets, False
  if isinstance(protocols, str):
    if protocols not in CLI_PROTOCOLS:
      raise ValueError(f"protocol={protocols!r}; valid: {', '.join(CLI_PROTOCOLS)}.")
    if protocols == "all":
      return ("linear", "knn"), budgets, True
    if protocols == "finetune":
      return (), budgets, True
    if protocols == "fewshot":
      few = tuple(b for b in budgets if str(b) != "all")
      if not few:
        raise ValueError("protocol 'fewshot': config.eval.budgets has no few-label budget.")
      return ("linear", "knn"), few, False
    return (protocols,), budgets, False
  return tuple(protocols), budgets, False


def merge_results(old: dict, new: dict) -> dict:
  """``new`` over ``old`` entry by entry (protocol -> source -> budget), so evaluating one
  protocol or some budgets keeps the others' earlier results."""
  out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in old.items()}
  for protocol, by_source in new.items():
    if not isinstance(by_source, dict) or not isinstance(out.get(protocol), dict):
      out[protocol] = by_source
      continue
    for source, row in by_source.items():
      out[protocol][source] = {**out[protocol].get(source, {}), **row}
  return out


def evaluate_workdir(workdir: str, *, dataset: str | None = None, step: int | None = None,
                     protocols=None, print_table: bool = True, return_info: bool = False,
                     overrides: Sequence[tuple[str, str]] = ()):
  """Evaluates the latest (or ``step``) checkpoint of ``workdir`` as its modality does
  (:mod:`ssl_jax.modalities`: :func:`evaluate_images` for images,
  :func:`ssl_jax.evaluate.text.evaluate_text` for text), with the run's config and
  ``overrides`` (:func:`eval_config`); writes and returns the results (and, with
  ``return_info``, the per-draw details of :func:`ssl_jax.evaluate.fewshot.evaluate_features`).
  """
  workdir = os.path.abspath(workdir)
  config = eval_config(workdir, overrides)
  evaluate = modalities.hook(modalities.of(config), "EVALUATE")
  results, info = evaluate(workdir, config, dataset=dataset, step=step, protocols=protocols,
                           print_table=print_table)
  return (results, info) if return_info else results


def evaluate_images(workdir: str, config, *, dataset: str | None, step: int | None, protocols,
                    print_table: bool) -> tuple[dict, dict]:
  """``(results, per-draw details)`` of an image run (the module docstring's three feature
  sources, the few-label probes of ``protocols``: see :func:`plan_protocols`). The results are
  merged into an existing ``eval.json`` (:func:`merge_results`): entries computed now replace
  the same entries, others are kept. Fine-tuning (:mod:`ssl_jax.evaluate.finetune`) runs on the
  pretraining dataset only."""

  dataset = dataset or config.dataset
  probes, budgets, do_finetune = plan_protocols(protocols, config)
  if do_finetune and dataset != config.dataset:
    raise ValueError(f"fine-tuning evaluates on the pretraining dataset {config.dataset!r}; "
                     f"for {dataset!r} use --protocol knn, linear or fewshot.")
  step = checkpoint_step(workdir, step)  # before reading any data
  train_x, train_y = eval_arrays(config, config.train_split, dataset=dataset)
  test_x, test_y = eval_arrays(config, config.test_split, dataset=dataset)
  num_classes = int(max(train_y.max(), test_y.max())) + 1
  run = restore_run(workdir, train_x.shape[1:], step=step, config=config)
  used_step = run.step
  sources = {}
  for name, which in (("ssl", "trained"), ("random_init", "initial")) if probes else ():
    sources[name] = tuple(
        extract_features(run.features_fn(which), x, batch_size=config.eval.batch_size,
                         preprocess=config.eval_preprocess) for x in (train_x, test_x))
  if probes:
    sources["raw"] = tuple(x.reshape(len(x), -1).astype(np.float32) / 255
                           for x in (train_x, test_x))

  results, info = {}, {}
  if probes:
    results, info = evaluate_features(
        sources, train_y, test_y, num_classes=num_classes, budgets=budgets, protocols=probes,
        num_draws=config.eval.num_draws, knn_k=config.eval.knn_k,
        knn_temperature=config.eval.knn_temperature, return_info=True)
  if do_finetune:
    from ssl_jax.evaluate.finetune import finetune_workdir  # pylint: disable=g-import-not-at-top
    results["finetune"] = finetune_workdir(workdir, step=used_step, quiet=not print_table,
                                           config=config)
  name = "eval.json" if dataset == config.dataset else f"eval_{_slug(dataset)}.json"
  path = os.path.join(workdir, name)
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      results = merge_results(json.load(f), results)
  if jax.process_index() == 0:
    write_json_atomic(path, results)
  if print_table:
    print(f"Evaluation of {workdir} (step {used_step}) on {dataset}: train {len(train_y)} / "
          f"test {len(test_y)} examples, {num_classes} classes")
    print(format_table(results))
    print(f"Wrote {os.path.join(workdir, name)}")
  return results, info


def _slug(name: str) -> str:
  return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")
