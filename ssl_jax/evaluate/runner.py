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
import jax.numpy as jnp
import ml_collections
import numpy as np

from ssl_jax import augment, methods
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

  n = len(images)
  batch_size = min(batch_size, n)
  out = []
  for start in range(0, n, batch_size):
    chunk = images[start:start + batch_size]
    pad = batch_size - len(chunk)
    if pad:
      chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)])
    out.append(np.asarray(run(chunk))[:batch_size - pad])
  return np.concatenate(out)


def evaluate_workdir(workdir: str, *, dataset: str | None = None, step: int | None = None,
                     protocols=None, print_table: bool = True, return_info: bool = False):
  """Evaluates the latest (or ``step``) checkpoint of ``workdir``; writes and returns the results
  (and, with ``return_info``, the per-draw details of
  :func:`ssl_jax.evaluate.fewshot.evaluate_features`)."""
  from ssl_jax.train.checkpoint import Checkpointer  # pylint: disable=g-import-not-at-top
  from ssl_jax.train.loop import write_json_atomic  # pylint: disable=g-import-not-at-top
  from ssl_jax.train.state import init_key  # pylint: disable=g-import-not-at-top

  workdir = os.path.abspath(workdir)
  config = load_run_config(workdir)
  dataset = dataset or config.dataset
  method = methods.make(config.method, config)
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"))
  try:
    used_step = step if step is not None else ckpt.latest_step()
    if used_step is None:  # Before reading any data.
      raise FileNotFoundError(f"No committed checkpoint in {ckpt.directory}.")
    kwargs = dict(data_dir=config.data_dir or None, image_size=config.data.image_size or None)
    train_x, train_y = load_arrays(dataset, config.train_split, **kwargs)
    test_x, test_y = load_arrays(dataset, config.test_split, **kwargs)
    num_classes = int(max(train_y.max(), test_y.max())) + 1

    example = {"image": jax.ShapeDtypeStruct((1, *train_x.shape[1:]), jnp.uint8)}
    init_params, init_stats, _ = method.init(init_key(jax.random.key(config.seed)), example)
    # Restored into the network's own structure: the stored one has string keys only ("0" for
    # the layer-list key 0).
    trained = ckpt.restore_tree(step=used_step,
                                target={"params": init_params, "batch_stats": init_stats})
  finally:
    ckpt.close()
  sources = {}
  for name, (params, stats) in (("ssl", (trained["params"], trained["batch_stats"])),
                                ("random_init", (init_params, init_stats))):
    fn = lambda x, p=params, s=stats: method.features(p, s, x)
    sources[name] = tuple(
        extract_features(fn, x, batch_size=config.eval.batch_size,
                         preprocess=config.eval_preprocess) for x in (train_x, test_x))
  sources["raw"] = tuple(x.reshape(len(x), -1).astype(np.float32) / 255 for x in (train_x, test_x))

  results = evaluate_features(
      sources, train_y, test_y, num_classes=num_classes, budgets=tuple(config.eval.budgets),
      protocols=tuple(protocols or config.eval.protocols), num_draws=config.eval.num_draws,
      knn_k=config.eval.knn_k, knn_temperature=config.eval.knn_temperature, return_info=True)
  results, info = results
  name = "eval.json" if dataset == config.dataset else f"eval_{_slug(dataset)}.json"
  if jax.process_index() == 0:
    write_json_atomic(os.path.join(workdir, name), results)
  if print_table:
    print(f"Evaluation of {workdir} (step {used_step}) on {dataset}: train {len(train_y)} / "
          f"test {len(test_y)} examples, {num_classes} classes")
    print(format_table(results))
    print(f"Wrote {os.path.join(workdir, name)}")
  return (results, info) if return_info else results


def _slug(name: str) -> str:
  return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")
