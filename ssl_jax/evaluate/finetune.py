"""Fine-tuning a pretrained encoder into a classifier (end-to-end, with the sharded engine).

``finetune_workdir(workdir)`` restores the encoder of the workdir's latest pretraining checkpoint
(``DIR/checkpoints``, Orbax), puts a new linear head on it (``nnx.Linear(D, C)``, Flax's default
init) and trains both on labeled train data with cross-entropy, using the same
:class:`~ssl_jax.train.parallel.Engine` as pretraining (its parallel mode, synced BatchNorm,
non-finite step skipping). Its own run directory is ``DIR/finetune/<name>/`` (``config.json``,
``metrics.jsonl``, ``checkpoints/``, auto-resumed from there); pretraining only ever reads
``DIR/checkpoints``, so it never resumes from a fine-tuning checkpoint. The test accuracy goes to
``eval.json`` under ``"finetune"`` (design notes' schema: ``{"ssl": {budget: acc}, "random_init":
{budget: acc}}``, one fit per source, so no ``_std``).

Recipe (``config.eval.finetune``), as in the MAE fine-tuning recipe (He et al., 2022, "Masked
Autoencoders Are Scalable Vision Learners", appendix A.2 and table 9, https://arxiv.org/abs/2111.06377)
where it applies:

* AdamW, linear warm-up over ``warmup_steps`` then cosine decay to 0, weight decay on weights only
  (:func:`ssl_jax.train.optim.decay_mask`), optional label smoothing. The optimizer is
  :func:`ssl_jax.train.optim.build_optimizer` with parameter groups: the head is the default group
  (the logged ``lr`` is the head's), each encoder layer a group.
* **Frozen-backbone warm-up** (``frozen_steps``): the encoder groups are frozen for the first steps
  (``frozen_until_step``), so only the new head moves (a random head's large early gradients would
  otherwise wreck the pretrained features; Kumar et al., 2022, "Fine-Tuning can Distort Pretrained
  Features", LP-FT). The encoder is exactly unchanged in those steps, no weight decay applies and
  its AdamW moments do not see those steps' gradients (they start fresh at ``frozen_steps``, the
  learning rate follows the global step); its BatchNorm statistics still update (the encoder runs
  in training mode).
* **Layer-wise learning-rate decay** (``layer_decay < 1``, ViT encoders): parameters of layer
  ``i`` (0 = patch embedding, class token and position embedding; ``1..depth`` = the transformer
  blocks; ``depth + 1`` = the final norm) get ``lr * layer_decay ** (depth + 1 - i)`` and the head
  ``lr`` (BEiT/MAE's ``param_groups_lrd``), as groups' ``lr_mult``. Other encoders have a single
  encoder group (a value ``< 1`` is refused there rather than silently ignored).
* Labels: ``budget="all"`` uses the whole train split; ``k`` (per class) or ``"p%"`` the first
  draw (seed 0) of the few-label protocol (:func:`ssl_jax.evaluate.fewshot.label_draws`). The
  global batch is ``batch_size``, lowered to the labeled set's size (a multiple of the devices)
  when smaller.
* Augmentation: ``views`` (an :mod:`ssl_jax.augment` recipe) or, when empty, the run's
  deterministic ``eval_preprocess``; evaluation always uses ``eval_preprocess``, BatchNorm in
  inference mode.
* ``source="random_init"`` trains the same network from the weights pretraining started from:
  the baseline every fine-tuning table carries (same labels, recipe and data order).
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from ssl_jax import config as config_lib
from ssl_jax.data import ArraySource, make_iterator
from ssl_jax.data.budgets import normalize_budget
from ssl_jax.evaluate.fewshot import label_draws
from ssl_jax.evaluate.features import checkpoint_step, eval_arrays, extract_features
from ssl_jax.methods import Method
from ssl_jax.methods.common import build_encoder
from ssl_jax.models.nnx_utils import Bundle, Networks
from ssl_jax.train import optim
from ssl_jax.train.checkpoint import Checkpointer
from ssl_jax.train.logging import MetricsLogger
from ssl_jax.train.loop import resume
from ssl_jax.train.parallel import Engine
from ssl_jax.train.preprocess import make_view_preprocess
from ssl_jax.train.state import TrainState
from ssl_jax.train.workdir import load_run_config, restore_run, write_json_atomic
from ssl_jax.train.xla_options import step_compiler_options

FINETUNE_DIR = "finetune"
SOURCES = ("ssl", "random_init")


def classifier_networks(config, num_classes: int) -> Networks:
  """The run's encoder (``config.encoder``) and a new linear head as one module tree."""

  def build(rngs, bn_axis_name):
    encoder = build_encoder(config, rngs, bn_axis_name)
    head = nnx.Linear(encoder.out_features, num_classes, rngs=rngs)
    return Bundle(encoder=encoder, head=head)

  return Networks(build)


def layer_groups(encoder_params: dict, encoder: str) -> tuple[dict, int]:
  """Layer id of every encoder leaf: ``(tree of ints, number of layers + 1)`` (see module doc).

  ViT: 0 for ``patch_embed``, ``cls_token``, ``pos_embed``; ``i + 1`` for ``blocks[i]``;
  ``depth + 1`` for ``norm``. Other encoders: 0 for every leaf (one group).
  """
  if not encoder.startswith("vit"):
    return jax.tree.map(lambda _: 0, encoder_params), 1
  depth = len(encoder_params["blocks"])

  def layer(path, _):
    name = str(getattr(path[0], "key", path[0]))
    if name == "blocks":
      return int(getattr(path[1], "key", path[1])) + 1
    return depth + 1 if name == "norm" else 0

  return jax.tree_util.tree_map_with_path(layer, encoder_params), depth + 2


def _layer_pattern(layer: int, num_layers: int, vit: bool) -> str:
  """The regular expression of layer ``layer``'s parameter paths (:func:`layer_groups`)."""
  if not vit:
    return "^encoder/"
  if layer == 0:
    return "^encoder/(?!(blocks|norm)(/|$))"
  return "^encoder/norm(/|$)" if layer == num_layers - 1 else f"^encoder/blocks/{layer - 1}/"


def build_optimizer(params: dict, ft, *, encoder: str, total_steps: int):
  """AdamW with one parameter group per encoder layer, the head in the default group (see the
  module docstring), built by :func:`ssl_jax.train.optim.build_optimizer`.

  Returns:
    ``(tx, lr_scales)``: the transformation and ``{group: learning-rate multiplier}``.
  """
  ids, num_layers = layer_groups(params["encoder"], encoder)
  if ft.layer_decay < 1 and num_layers == 1:
    raise ValueError(f"--config.eval.finetune.layer_decay={ft.layer_decay} applies to ViT encoders "
                     f"only; encoder {encoder!r} has no layer structure (use 1.0).")
  groups = {f"encoder_{i:03d}": {
      "pattern": _layer_pattern(i, num_layers, encoder.startswith("vit")),
      "lr_mult": float(ft.layer_decay) ** (num_layers - 1 - i),
      "frozen_until_step": int(ft.frozen_steps)} for i in sorted(set(jax.tree.leaves(ids)))}
  opt = config_lib.base_config().optimizer
  opt.update(name="adamw", lr=ft.lr, lr_scaling="none", weight_decay=ft.weight_decay,
             warmup_steps=ft.warmup_steps, final_lr_fraction=0.0, exclude_bias_and_norm=True,
             schedule="warmup_cosine")
  tx, _ = optim.build_optimizer(opt, batch_size=1, total_steps=total_steps, steps_per_epoch=1,
                                param_groups=groups)
  scales = {optim.DEFAULT_GROUP: 1.0, **{g: spec["lr_mult"] for g, spec in groups.items()}}
  return tx, scales


def make_classifier_method(nets: Networks, start: dict, *, label_smoothing: float,
                           num_classes: int, sync_bn: bool) -> Method:
  """A :class:`~ssl_jax.methods.Method` whose ``init`` returns ``start`` (the restored encoder
  and the new head, as given) and whose loss is the classification cross-entropy of view ``x``."""

  def init(rng, example_batch):
    del rng, example_batch  # the weights are given: restored encoder, head drawn once
    return (jax.tree.map(jnp.array, start["params"]),
            jax.tree.map(jnp.array, start["batch_stats"]), {})

  def loss_fn(params, batch_stats, method_state, batch, rng, *, axis_name):
    del rng
    model = nets.bind(params, batch_stats, axis_name=axis_name if sync_bn else None)
    logits = model.head(model.encoder(batch["views"]["x"], train=True)).astype(jnp.float32)
    labels = batch["label"]
    targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes), label_smoothing)
    total = jnp.sum(optax.softmax_cross_entropy(logits, targets))
    correct = jnp.sum(jnp.argmax(logits, -1) == labels).astype(jnp.float32)
    count = jnp.asarray(labels.shape[0], jnp.float32)
    if axis_name is not None:
      total, correct, count = (jax.lax.psum(v, axis_name) for v in (total, correct, count))
    loss = total / count
    metrics = {"loss": loss, "train_acc": jax.lax.stop_gradient(correct / count)}
    return loss, (metrics, nets.batch_stats(model), method_state)

  def features(params, batch_stats, method_state, images):
    del method_state
    model = nets.bind(params, batch_stats)
    return model.head(model.encoder(images, train=False))

  return Method(init=init, loss_fn=loss_fn, update=lambda p, s, m, step: m, features=features)


def labeled_subset(labels: np.ndarray, budget, num_classes: int, draw: int = 0) -> np.ndarray:
  """Indices of the train examples fine-tuning may use: all, or draw ``draw`` (seed ``draw``) of
  a few-label budget, the same draw the probes use."""
  budget = normalize_budget(budget)
  if budget == "all":
    return np.arange(len(labels))
  draws = label_draws(labels, budget, num_draws=draw + 1, num_classes=num_classes)
  return np.sort(draws[draw])


def _run_config(config, ft, source: str, step: int, budget, draw: int) -> dict:
  return {"source": source, "pretrain_step": step, "budget": str(budget), "draw": draw,
          "finetune": ft.to_dict(), "encoder": config.encoder,
          "encoder_kwargs": config.encoder_kwargs.to_dict(), "seed": config.seed}


def finetune_run(workdir: str, *, source: str = "ssl", step: int | None = None,
                 overrides: dict | None = None, devices=None, quiet: bool = True,
                 draw: int = 0, return_state: bool = False, config=None):
  """Fine-tunes ``workdir``'s encoder (``source="ssl"``) or its initial weights
  (``"random_init"``); returns the test accuracy (and the engine's initial and final states with
  ``return_state``).

  Args:
    workdir: a pretraining workdir.
    source: ``"ssl"`` or ``"random_init"``.
    step: pretraining checkpoint step (default: the latest).
    overrides: values over ``config.eval.finetune`` (e.g. ``{"steps": 50}``).
    devices: devices for the engine (default: all).
    quiet: no progress bar.
    draw: which label draw of a few-label budget (seed; 0 by default).
    return_state: also return ``(state_before_first_step, final_state, engine)``.
    config: the run config (default: ``DIR/config.json``; ``ssl-jax eval`` passes it with its
      ``--config.*`` overrides, :func:`ssl_jax.evaluate.runner.eval_config`).

  The run directory is ``DIR/finetune/<name>`` for ``ssl`` and ``DIR/finetune/<name>_random_init``
  for the baseline.
  """
  if source not in SOURCES:
    raise ValueError(f"source={source!r}; valid: {SOURCES}.")
  workdir = os.path.abspath(workdir)
  config = config if config is not None else load_run_config(workdir)
  ft = _finetune_config(config, overrides)
  step = checkpoint_step(workdir, step)  # before reading any data
  train_x, train_y = eval_arrays(config, config.train_split)
  test_x, test_y = eval_arrays(config, config.test_split)
  num_classes = int(max(train_y.max(), test_y.max())) + 1
  run = restore_run(workdir, train_x.shape[1:], step=step, config=config)
  weights = run.trained if source == "ssl" else run.initial

  nets = classifier_networks(config, num_classes)
  params, stats = nets.init(jax.random.fold_in(jax.random.key(config.seed), 7))
  params["encoder"] = weights["params"]["encoder"]
  if "encoder" in stats:
    stats["encoder"] = weights["batch_stats"]["encoder"]

  subset = labeled_subset(train_y, ft.budget, num_classes, draw)
  n_dev = len(devices) if devices is not None else jax.device_count()
  batch_size = min(ft.batch_size, len(subset) // n_dev * n_dev)
  if batch_size < n_dev:
    raise ValueError(f"fine-tuning budget {ft.budget!r} gives {len(subset)} labeled examples, "
                     f"fewer than the {n_dev} devices.")
  data = ArraySource(train_x[subset], train_y[subset], name=config.dataset, split="finetune",
                     num_classes=num_classes)
  tx, _ = build_optimizer(params, ft, encoder=config.encoder, total_steps=ft.steps)
  method = make_classifier_method(nets, {"params": params, "batch_stats": stats},
                                  label_smoothing=ft.label_smoothing, num_classes=num_classes,
                                  sync_bn=config.sync_bn)
  recipe = ft.views or config.eval_preprocess
  engine = Engine(method, tx, make_view_preprocess({"x": recipe}), mode=config.parallel,
                  global_batch_size=batch_size, devices=devices, sync_bn=config.sync_bn,
                  clip_norm=config.optimizer.clip_norm,
                  compiler_options=step_compiler_options(
                      config.get("cpu_kernels", "eigen_convs")))
  # The state is assembled from the restored arrays and placed (not built by a jitted init, which
  # would bake the weights into the program as constants).
  params, stats, method_state = method.init(None, None)
  state = engine.place_state(TrainState(
      step=jnp.zeros((), jnp.int32), params=params, batch_stats=stats,
      opt_state=tx.init(params), method_state=method_state,
      rng=jax.random.fold_in(jax.random.key(config.seed), 1),
      skips=jnp.zeros((), jnp.int32), total_skips=jnp.zeros((), jnp.int32)))
  initial = jax.device_get(engine.global_state(state)) if return_state else None

  name = ft.name if source == "ssl" else f"{ft.name}_random_init"
  run_dir = os.path.join(workdir, FINETUNE_DIR, name)
  _prepare_run_dir(run_dir, _run_config(config, ft, source, run.step, ft.budget, draw))
  iterator = make_iterator(data, global_batch_size=batch_size, seed=config.seed, shuffle=True)
  logger = MetricsLogger(run_dir, total_steps=ft.steps, tensorboard=config.log.tensorboard,
                         quiet=quiet)
  ckpt = Checkpointer(os.path.join(run_dir, "checkpoints"), max_to_keep=1,
                      every_steps=ft.checkpoint_every, async_save=False)
  try:
    if ckpt.latest_step() is not None:
      state = resume(ckpt, engine, state, iterator)
      logger.message(f"Fine-tuning resumed from step {ckpt.latest_step()} in {ckpt.directory}")
    start = int(jax.device_get(engine.global_state(state).step))
    for i in range(start, ft.steps):
      state, metrics = engine.step(state, engine.put_batch(next(iterator)))
      if (i + 1) % config.log.every_steps == 0 or i + 1 == ft.steps:
        logger.write(i + 1, {k: float(v) for k, v in jax.device_get(metrics).items()})
      if ckpt.should_save(i + 1, final=i + 1 == ft.steps):
        ckpt.save(i + 1, engine.global_state(state), iterator.get_state())
    ckpt.wait()
  finally:
    ckpt.close()
    iterator.close()
    logger.close()
  final = engine.global_state(state)
  logits = extract_features(lambda x: method.features(final.params, final.batch_stats, final.method_state, x), test_x,
                            batch_size=config.eval.batch_size, preprocess=config.eval_preprocess)
  accuracy = float(np.mean(np.argmax(logits, -1) == test_y))
  if return_state:
    return accuracy, (initial, jax.device_get(final), engine)
  return accuracy


def _finetune_config(config, overrides: dict | None) -> ml_collections.ConfigDict:
  """``config.eval.finetune`` (defaults for workdirs written before it existed) with
  ``overrides``, validated."""
  ft = config_lib.base_config().eval.finetune
  if "finetune" in config.eval:
    ft.update(config.eval.finetune.to_dict())
  for key, value in (overrides or {}).items():
    if key not in ft:
      raise ValueError(f"Unknown fine-tuning key {key!r}; valid: {', '.join(sorted(ft))}.")
    with ft.ignore_type():
      ft[key] = value
  probe = config_lib.base_config()
  probe.eval.finetune = ft
  config_lib.validate_eval(probe.eval)
  return ft


def _prepare_run_dir(run_dir: str, resolved: dict) -> None:
  """Creates ``run_dir``; refuses one whose checkpoints came from another fine-tuning config."""
  os.makedirs(run_dir, exist_ok=True)
  path = os.path.join(run_dir, "config.json")
  ckpt_dir = os.path.join(run_dir, "checkpoints")
  if os.path.exists(path) and os.path.isdir(ckpt_dir) and any(
      n.isdigit() for n in os.listdir(ckpt_dir)):
    with open(path, encoding="utf-8") as f:
      old = json.load(f)
    diff = config_lib.state_affecting_diff(old, resolved)
    if diff:
      raise ValueError(f"{run_dir} holds a fine-tuning checkpoint of another config:\n  "
                       + "\n  ".join(diff) + "\nChoose another config.eval.finetune.name.")
  if jax.process_index() == 0:
    write_json_atomic(path, resolved)


def finetune_workdir(workdir: str, *, step: int | None = None, sources=SOURCES,
                     overrides: dict | None = None, devices=None, quiet: bool = True,
                     config=None) -> dict:
  """Fine-tunes every source of ``sources``; returns ``{"ssl": {budget: acc}, ...}`` (the
  ``"finetune"`` entry of eval.json). ``config``: as :func:`finetune_run`'s."""
  config = config if config is not None else load_run_config(workdir)
  budget = str(_finetune_config(config, overrides).budget)
  out: dict[str, Any] = {}
  for source in sources:
    acc = finetune_run(workdir, source=source, step=step, overrides=overrides, devices=devices,
                       quiet=quiet, config=config)
    out[source] = {budget: acc}
  return out
