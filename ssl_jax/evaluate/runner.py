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
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ssl_jax import augment, methods, modalities
from ssl_jax.data import load_arrays
from ssl_jax.evaluate.fewshot import evaluate_features
from ssl_jax.evaluate.table import format_table


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found: is {workdir!r} a pretraining workdir?")
  with open(path, encoding="utf-8") as f:
    return ml_collections.ConfigDict(json.load(f))


def extract_features(features_fn, images: np.ndarray, *, batch_size: int,
                     preprocess: str = "") -> np.ndarray:
  """Runs ``features_fn(images) -> [B, D]`` over uint8 ``images`` [N, H, W, C] in fixed-size
  batches (the last one padded, so one compilation serves all), after ``preprocess``."""
  recipe = augment.parse_recipe(preprocess)
  key = jax.random.key(0)  # eval preprocessing is deterministic; the key is unused by its ops

  @jax.jit
  def run(batch):
    x = jax.vmap(lambda im: recipe(key, im))(augment.to_float(batch))
    return features_fn(x).astype(jnp.float32)

  return map_in_batches(run, images, batch_size=min(batch_size, len(images)))


def fixed_size_batches(tree, batch_size: int):
  """Yields ``(chunk, real)``: consecutive ``batch_size`` rows of every array of ``tree`` (all
  with the same leading size), the last chunk padded with zeros, and its number of real rows."""
  n = len(jax.tree.leaves(tree)[0])
  for start in range(0, n, batch_size):
    chunk = jax.tree.map(lambda x: x[start:start + batch_size], tree)
    real = min(batch_size, n - start)
    if real < batch_size:
      chunk = jax.tree.map(
          lambda x: np.concatenate([x, np.zeros((batch_size - real, *x.shape[1:]), x.dtype)]),
          chunk)
    yield chunk, real


def map_in_batches(fn, tree, *, batch_size: int) -> np.ndarray:
  """``fn(batch) -> [batch_size, ...]`` over every row of ``tree`` in fixed-size batches (so one
  compilation serves all), concatenated without the padding rows."""
  return np.concatenate([np.asarray(fn(chunk))[:real]
                         for chunk, real in fixed_size_batches(tree, batch_size)])


class Restored(NamedTuple):
  """A workdir's pretrained networks (see :func:`restore_run`)."""
  config: ml_collections.ConfigDict
  method: Any
  step: int
  trained: dict  # {"params", "batch_stats", "method_state"} restored from the checkpoint
  initial: dict  # the same the run started from (the random-init baseline)

  def features_fn(self, which: str = "trained"):
    """``inputs -> features`` of the ``trained`` or ``initial`` networks (``Method.features``
    with the restored method-state entries it reads)."""
    tree = getattr(self, which)
    return lambda x: self.method.features(tree["params"], tree["batch_stats"],
                                          tree["method_state"], x)


def restore_run(workdir: str, image_shape, *, step: int | None = None,
                config: ml_collections.ConfigDict | None = None) -> Restored:
  """Rebuilds the method of ``workdir`` from its ``config.json`` and restores the networks of
  its latest (or ``step``) committed pretraining checkpoint into their own structure.

  Args:
    workdir: a pretraining workdir.
    image_shape: ``(H, W, C)`` of the images the networks will see (None for text methods).
    step: checkpoint step (default: the latest).
    config: the run config (default: read from the workdir).

  Raises:
    FileNotFoundError: no ``config.json`` or no committed checkpoint.
  """
  from ssl_jax.train.checkpoint import Checkpointer  # pylint: disable=g-import-not-at-top
  from ssl_jax.train.state import init_key  # pylint: disable=g-import-not-at-top

  config = config if config is not None else load_run_config(workdir)
  method = methods.make(config.method, config)
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"))
  try:
    used_step = step if step is not None else ckpt.latest_step()
    if used_step is None:
      raise FileNotFoundError(f"No committed checkpoint in {ckpt.directory}.")
    example = (None if image_shape is None  # text methods build their networks from the config
               else {"image": jax.ShapeDtypeStruct((1, *image_shape), jnp.uint8)})
    init_params, init_stats, init_ms = method.init(init_key(jax.random.key(config.seed)), example)
    initial = {"params": init_params, "batch_stats": init_stats,
               "method_state": {k: init_ms[k] for k in method.eval_state}}
    # Restored into the network's own structure: the stored one has string keys only ("0" for
    # the layer-list key 0).
    trained = ckpt.restore_tree(step=used_step, target=initial,
                                method_state_keys=method.eval_state)
    trained.setdefault("method_state", {})
  finally:
    ckpt.close()
  return Restored(config, method, int(used_step), trained, initial)


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
  from ssl_jax.train.checkpoint import Checkpointer  # pylint: disable=g-import-not-at-top
  from ssl_jax.train.loop import write_json_atomic  # pylint: disable=g-import-not-at-top

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
