"""Evaluate a pretraining workdir: frozen features -> few-label kNN and linear probe -> eval.json.

``evaluate_workdir(workdir)`` rebuilds the method from ``DIR/config.json`` (a JSON file: no config
code is ever loaded from a workdir), restores the encoder from the latest committed checkpoint
and compares three feature sources with the same label draws:

* ``ssl``: the pretrained encoder's features (before any projector), BatchNorm in inference mode;
* ``random_init``: the same architecture with the weights pretraining started from (the run's own
  initialization, BatchNorm in inference mode with its initial statistics);
* ``raw``: the input pixels in [0, 1], flattened.

Images go through ``config.eval_preprocess`` (deterministic ops) before the encoders. Results are
written to ``DIR/eval.json`` (``DIR/eval_<dataset>.json`` for another dataset) in the schema of the
design notes and returned with a printable table.
"""

from __future__ import annotations

import json
import os
import re

import jax
import numpy as np

from ssl_jax import methods, modalities
from ssl_jax.data import load_arrays
from ssl_jax.evaluate.features import extract_features
from ssl_jax.evaluate.fewshot import evaluate_features
from ssl_jax.evaluate.table import format_table
from ssl_jax.train.checkpoint import Checkpointer
from ssl_jax.train.workdir import load_run_config, restore_run, write_json_atomic


CLI_PROTOCOLS = ("knn", "linear", "fewshot", "finetune", "all")


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
                     protocols=None, print_table: bool = True, return_info: bool = False):
  """Evaluates the latest (or ``step``) checkpoint of ``workdir`` as its modality does
  (:mod:`ssl_jax.modalities`: :func:`evaluate_images` for images,
  :func:`ssl_jax.evaluate.text.evaluate_text` for text); writes and returns the results (and,
  with ``return_info``, the per-draw details of :func:`ssl_jax.evaluate.fewshot.evaluate_features`).
  """
  workdir = os.path.abspath(workdir)
  config = load_run_config(workdir)
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
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"))
  try:
    if (step if step is not None else ckpt.latest_step()) is None:  # Before reading any data.
      raise FileNotFoundError(f"No committed checkpoint in {ckpt.directory}.")
  finally:
    ckpt.close()
  kwargs = dict(data_dir=config.data_dir or None, image_size=config.data.image_size or None)
  train_x, train_y = load_arrays(dataset, config.train_split, **kwargs)
  test_x, test_y = load_arrays(dataset, config.test_split, **kwargs)
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
    results["finetune"] = finetune_workdir(workdir, step=used_step, quiet=not print_table)
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
