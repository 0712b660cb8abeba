"""Configs: Python files whose ``get_config()`` returns an ``ml_collections.ConfigDict``.

Every config starts from :func:`base_config` (all keys, generic defaults) or :func:`default_config`
(the default run: SimCLR on ``digits``), so every run has the same keys, and command-line overrides (``--config.optimizer.lr=0.3``) can only set keys
that exist, with values of the existing type. ``config.method`` selects a method; its
hyperparameters live under ``config.method_kwargs``, which are the method module's
``default_config()`` updated with what the config file sets. Switching the method from the command
line (``--config.method=byol``) starts from the new method's defaults: the file's
``method_kwargs`` belonged to the old method and are dropped.

``config.views`` maps view names to recipes (:mod:`ssl_jax.augment`), one array per view, in
sorted name order; it is the one block whose keys the command line may add to:
``--config.views.c='random_resized_crop(size=6, scale=(0.2, 0.5))|normalize(0.5, 0.5)'`` adds a
view ``c``. Views of the largest size are the global views, smaller ones local crops (multi-crop:
2 global + N local at a lower resolution); a method's ``VIEWS`` says how many of each it takes
(:mod:`ssl_jax.methods.common`) and a recipe that does not provide them is refused before training.

A config file may take one argument after a colon, as in big_vision:
``experiments/simclr_cifar10.py:runlocal`` calls ``get_config("runlocal")``, which shrinks the run
for a quick local check.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import json
import os
from typing import Iterable, Sequence

import ml_collections
from ml_collections import config_dict

PARALLEL_MODES = ("shard_map", "pmap", "gspmd")
COMPUTE_DTYPES = ("float32", "bfloat16", "float16")

# Keys that change how a run is observed or saved, not what it computes: a workdir's checkpoint can be
# resumed with different values (everything else must match, see `state_affecting_diff`).
# `cpu_kernels` picks which libraries run the products (the same sums, rounded differently), so it
# may change on resume too.
RUN_CONTROL_KEYS = ("log", "checkpoint", "eval", "quiet", "data.worker_count", "debug",
                    "max_consecutive_skips", "cpu_kernels")

def base_config() -> ml_collections.ConfigDict:
  """Every key a run has, with generic defaults; experiments start from here (or from
  :func:`default_config`) and set what their recipe needs."""
  c = ml_collections.ConfigDict()
  c.method = "simclr"
  c.method_kwargs = ml_collections.ConfigDict()  # over the method's default_config()

  c.dataset = "digits"
  c.data_dir = ""  # TFDS data_dir ("" = TFDS default)
  c.train_split = "train"
  c.test_split = "test"  # used by evaluation
  # color: "auto" (stored channels, one decision for all splits), "rgb" or "grayscale" (forced).
  # holdout: a `folder:` dataset without train/ and test/ (or val/) sub-folders holds out this
  # fraction of its images, stratified and seeded, as its `test` split (ssl_jax.data.sources);
  # 0 = none.
  c.data = ml_collections.ConfigDict(dict(worker_count=0, shuffle=True, image_size=0,
                                          on_corrupt="error", color="auto", holdout=0.2))

  c.encoder = "resnet18"
  c.encoder_kwargs = ml_collections.ConfigDict()
  # Language methods (mlm, clm, nsp, simcse): the tokenizer ("bytes", "bpe:<vocab>",
  # "wordpiece:<vocab>" trained on the train split, "file:<path>") and the row length in tokens.
  c.text = ml_collections.ConfigDict(dict(tokenizer="bytes", seq_len=128))
  # A pretraining workdir whose encoder (latest checkpoint) initializes this run's encoder, e.g.
  # SimCSE from a masked-LM run as the paper starts from BERT ("" = random init).
  c.init_from = ""
  c.compute_dtype = "float32"
  c.sync_bn = True

  # Views made on device from each example (recipes of ssl_jax.augment); one entry per view, any
  # number, any output size; --config.views.<new name>='<recipe>' adds one (see module docstring).
  c.views = ml_collections.ConfigDict(dict(a="", b=""))
  # Deterministic preprocessing for feature extraction (evaluation).
  c.eval_preprocess = ""

  c.batch_size = 256  # global
  c.total_steps = config_dict.placeholder(int)  # when set, overrides epochs
  c.epochs = 100
  c.seed = 0
  c.parallel = "shard_map"
  c.fsdp = False  # gspmd only: shard parameters and optimizer state over the data axis
  c.fsdp_min_size = 2**14  # leaves with fewer elements stay replicated
  # Which libraries run the train step's convolutions and matrix products on the CPU backend
  # (ssl_jax.train.xla_options): "eigen_convs" (XLA's own convolutions instead of YNNPACK's,
  # 4x faster for ResNet-18 on an AVX2 CPU), "onednn_dots" (also the products in oneDNN, checked:
  # faster for small Transformers) or "xla_default". No effect on other backends.
  c.cpu_kernels = "eigen_convs"

  # Optimizer (ssl_jax.train.optim). schedule: "warmup_cosine", "constant" (after warmup),
  # "linear" (to final_lr_fraction * peak) or "tri_stage" (wav2vec 2.0: warmup, hold, exponential
  # decay to final_lr_fraction * peak, which must then be in (0, 1); stage lengths are the
  # fractions `tri_stage` of the run, warmup_* unused). weight_decay_end: None = constant weight
  # decay, else a cosine from weight_decay to it over the run (DINO: 0.04 -> 0.4).
  # groups: parameter groups, {name: {pattern, lr_mult, wd_mult, frozen_until_step,
  # frozen_until_epoch}}, e.g. --config.optimizer.groups.head.pattern='^projector/'
  # --config.optimizer.groups.head.lr_mult=10; `pattern` is a regex searched in the '/'-joined
  # parameter path; unmatched parameters form the default group; a frozen group does not move
  # (and its optimizer state does not change) before the given step / epoch.
  c.optimizer = ml_collections.ConfigDict(dict(
      name="lars", lr=0.3, lr_scaling="linear", base_batch=256, weight_decay=1e-6,
      momentum=0.9, nesterov=False, b1=0.9, b2=0.999, eps=1e-8, trust_coefficient=0.001,
      warmup_steps=-1, warmup_epochs=10.0, final_lr_fraction=0.0, clip_norm=0.0,
      exclude_bias_and_norm=True, schedule="warmup_cosine", tri_stage=(0.1, 0.4, 0.5),
      weight_decay_end=config_dict.placeholder(float), groups=ml_collections.ConfigDict()))

  # on_corrupt: "error" refuses a checkpoint failing its SHA-256 manifest; "previous" resumes from
  # the newest older step that verifies.
  c.checkpoint = ml_collections.ConfigDict(dict(every_steps=1000, max_to_keep=3, async_save=True,
                                                on_corrupt="error"))
  # health_every: RankMe, alignment and uniformity (ssl_jax.train.monitors) every N steps
  # (1: every step, 0: never); embedding_std (the collapse warning) is logged every step.
  c.log = ml_collections.ConfigDict(dict(every_steps=10, tensorboard=True, health_every=10))
  c.quiet = False
  c.max_consecutive_skips = 10

  c.eval = ml_collections.ConfigDict(dict(
      at_end=True, budgets=(1, 5, 10, "all"), num_draws=5, protocols=("linear", "knn"),
      knn_k=20, knn_temperature=0.07, batch_size=512,
      # The visual report (ssl_jax.evaluate.report) written after the evaluation at the end.
      report=True, report_projection="pca", report_max_points=2000,
      # Online linear probe during pretraining (ssl_jax.train.online_probe): "auto" = on when
      # the dataset has class labels, "on", "off"; its own Adam optimizer at online_probe_lr.
      online_probe="auto", online_probe_lr=1e-2,
      # Fine-tuning (ssl_jax.evaluate.finetune): DIR/finetune/<name>/, the pretrained encoder and a
      # new linear head trained on the labels of `budget` ("all", or k per class / "p%"),
      # `frozen_steps` of head-only warm-up first; layer_decay < 1 scales ViT block i's lr by
      # layer_decay ** (depth + 1 - i) (MAE). views: the training augmentation ("" = none).
      finetune=ml_collections.ConfigDict(dict(
          name="default", steps=300, batch_size=128, lr=1e-3, weight_decay=1e-4,
          warmup_steps=30, frozen_steps=0, layer_decay=1.0, budget="all", views="",
          label_smoothing=0.0, checkpoint_every=100))))
  # Debug: make the loss NaN for `nan_num_steps` steps from `nan_at_step` (tests the skip logic).
  c.debug = ml_collections.ConfigDict(dict(nan_at_step=config_dict.placeholder(int),
                                           nan_num_steps=1))
  return c


# The digits recipe, tuned on a validation split of the digits train set (never the test split):
# small affine warps + pixel noise + random erasing; no crops or flips (they change a digit's
# identity at 8x8).
DIGITS_VIEW = ("random_affine(degrees=15, translate=0.1, scale=(0.9, 1.1), shear=10)"
               "|gaussian_noise(std=0.1)|random_erasing(p=0.5, scale=(0.02, 0.2))"
               "|normalize(mean=0.5, std=0.5)")


def default_config() -> ml_collections.ConfigDict:
  """The main job: SimCLR on ``digits`` (the default of ``ssl-jax pretrain``).

  ``cnn_digits`` encoder (3x3 convs 32-64-128, a max-pool, a 128-wide fully connected layer),
  NT-Xent at temperature 0.5 on the encoder's features (no projector), batch 256, AdamW at 2e-3
  with weight decay 1e-4, 60 warmup steps then cosine, 600 steps (~120 epochs of the 1257 train
  images).
  """
  c = base_config()
  c.method_kwargs = ml_collections.ConfigDict(dict(temperature=0.5, proj_layers=0))
  c.encoder = "cnn_digits"
  c.views = ml_collections.ConfigDict(dict(a=DIGITS_VIEW, b=DIGITS_VIEW))
  c.eval_preprocess = "normalize(mean=0.5, std=0.5)"
  c.batch_size = 256
  c.total_steps = 600
  c.optimizer.update(name="adamw", lr=2e-3, lr_scaling="none", weight_decay=1e-4,
                     warmup_steps=60)
  c.checkpoint.every_steps = 200
  c.log.every_steps = 1
  return c


def method_defaults(name: str) -> ml_collections.ConfigDict:
  from ssl_jax import methods  # local: config is imported by the lowest layers' users
  return methods.get_module(name).default_config()


def _load_file(path: str) -> ml_collections.ConfigDict:
  path, _, arg = path.partition(":")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"Config file {path!r} not found.")
  spec = importlib.util.spec_from_file_location("_ssl_jax_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ValueError(f"Config file {path!r} defines no get_config().")
  takes_arg = bool(inspect.signature(module.get_config).parameters)
  if arg and not takes_arg:
    raise ValueError(f"{path}: get_config() takes no argument, got {arg!r}.")
  return module.get_config(arg) if takes_arg else module.get_config()


def parse_overrides(argv: Iterable[str]) -> list[tuple[str, str]]:
  """``["--config.a.b=1", "--config.c", "x"]`` -> ``[("a.b", "1"), ("c", "x")]``."""
  out, args = [], list(argv)
  i = 0
  while i < len(args):
    arg = args[i]
    if not arg.startswith("--config."):
      raise ValueError(f"Unrecognized argument {arg!r}; overrides look like --config.key=value.")
    key = arg[len("--config."):]
    if "=" in key:
      key, value = key.split("=", 1)
    elif i + 1 < len(args):
      i += 1
      value = args[i]
    else:
      raise ValueError(f"Override {arg!r} has no value.")
    out.append((key, value))
    i += 1
  return out


def _parse_value(text: str, current):
  if isinstance(current, str) and not text.strip().startswith(("'", '"')):
    return text
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    if current is None or isinstance(current, str):
      return text
    raise ValueError(f"cannot parse {text!r} as a {type(current).__name__}") from None


# The keys of one parameter group of config.optimizer.groups (ssl_jax.train.optim).
OPTIMIZER_GROUP = dict(pattern="", lr_mult=1.0, wd_mult=1.0, frozen_until_step=0,
                       frozen_until_epoch=0.0)


def _set(config: ml_collections.ConfigDict, key: str, text: str) -> None:
  *parents, leaf = key.split(".")
  if parents[:2] == ["optimizer", "groups"] and len(parents) == 3:  # a new group on the fly
    groups = config.optimizer.groups
    if parents[2] not in groups:
      groups[parents[2]] = ml_collections.ConfigDict(OPTIMIZER_GROUP)
  node = config
  for i, part in enumerate(parents):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      raise ValueError(_unknown(".".join(parents[:i + 1]), node))
    node = node[part]
  if parents == ["views"] and isinstance(node, ml_collections.ConfigDict) and leaf not in node:
    node[leaf] = ""  # a new view (multi-crop); its recipe is parsed below as a string
  if parents == ["encoder_kwargs"] and leaf not in node:  # checked against the encoder later
    with node.ignore_type():
      node[leaf] = _parse_value(text, None)
    return
  if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
    raise ValueError(_unknown(key, node))
  current = node[leaf]
  try:
    value = _parse_value(text, current)
    if isinstance(current, tuple) and isinstance(value, list):
      value = tuple(value)
    node[leaf] = value
  except (TypeError, ValueError) as e:
    raise ValueError(f"Bad value for config.{key}: {text!r} ({e}).") from None


def apply_overrides(config: ml_collections.ConfigDict,
                    overrides: Sequence[tuple[str, str]]) -> None:
  """Sets each ``(dotted key, text)`` of :func:`parse_overrides` on ``config`` in place, parsed
  as :func:`load_config` parses them (an unknown key is refused with the valid keys there)."""
  for key, text in overrides:
    _set(config, key, text)


def _unknown(key: str, node) -> str:
  valid = ", ".join(sorted(node.keys())) if isinstance(node, ml_collections.ConfigDict) else "-"
  return f"Unknown config key {key!r}. Valid keys here: {valid}."


def load_config(path: str | None = None,
                overrides: Sequence[tuple[str, str]] = ()) -> ml_collections.ConfigDict:
  """Loads a config file (default: the SimCLR-on-digits default), applies overrides, validates.

  Raises:
    ValueError: unknown keys, values of the wrong type, invalid choices (naming the valid ones).
  """
  config = _load_file(path) if path else default_config()
  _check_keys(config, base_config(), "")
  file_method = config.method
  overrides = list(overrides)
  method_overrides = [v for k, v in overrides if k == "method"]
  if method_overrides:
    config.method = _parse_value(method_overrides[-1], "")
  _check_choice("method", config.method, _method_names())
  defaults = method_defaults(config.method)
  if config.method == file_method:
    for key, value in config.method_kwargs.items():
      if key not in defaults:
        raise ValueError(f"--config.method_kwargs.{key} is not a hyperparameter of "
                         f"{config.method}; valid: {', '.join(sorted(defaults.keys()))}.")
      defaults[key] = value
  with config.ignore_type():
    config.method_kwargs = defaults
  for key, text in overrides:
    if key != "method":
      _set(config, key, text)
  validate(config)
  config.lock()
  return config


def _method_names():
  from ssl_jax import methods
  return sorted(methods.METHODS)


def _check_keys(config, reference, prefix: str) -> None:
  for key in config.keys():
    if key not in reference:
      raise ValueError(_unknown(prefix + key, reference))
    if key in ("method_kwargs", "encoder_kwargs", "views", "groups"):
      continue  # free-form: checked by the method / encoder registry / augment parser / optim
    if isinstance(reference[key], ml_collections.ConfigDict):
      _check_keys(config[key], reference[key], prefix + key + ".")


def _check_choice(key: str, value, valid: Sequence[str]) -> None:
  if value not in valid:
    raise ValueError(f"--config.{key}={value!r} is not valid; choose one of: {', '.join(valid)}.")


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks values that a type alone cannot (choices, ranges); names the key and valid values."""
  from ssl_jax.train import optim, xla_options

  _check_choice("method", config.method, _method_names())
  _check_choice("parallel", config.parallel, PARALLEL_MODES)
  _check_choice("compute_dtype", config.compute_dtype, COMPUTE_DTYPES)
  _check_choice("cpu_kernels", config.cpu_kernels, xla_options.CPU_KERNELS)
  _check_choice("optimizer.name", config.optimizer.name, optim.OPTIMIZERS)
  _check_choice("optimizer.lr_scaling", config.optimizer.lr_scaling, optim.LR_SCALINGS)
  validate_data(config.data)
  _validate_encoder_kwargs(config)
  _check_choice("checkpoint.on_corrupt", config.checkpoint.on_corrupt, ("error", "previous"))
  for key in ("batch_size", "epochs"):
    if not isinstance(config[key], int) or config[key] <= 0:
      raise ValueError(f"--config.{key} must be a positive integer, got {config[key]!r}.")
  if config.total_steps is not None and config.total_steps <= 0:
    raise ValueError(f"--config.total_steps must be positive (or None), got {config.total_steps}.")
  if config.optimizer.lr <= 0:
    raise ValueError(f"--config.optimizer.lr must be > 0, got {config.optimizer.lr}.")
  _validate_optimizer(config.optimizer)
  if config.checkpoint.every_steps < 0 or config.checkpoint.max_to_keep < 1:
    raise ValueError("--config.checkpoint.every_steps must be >= 0 and max_to_keep >= 1.")
  if config.log.every_steps < 1:
    raise ValueError(f"--config.log.every_steps must be >= 1, got {config.log.every_steps}.")
  if not isinstance(config.log.health_every, int) or config.log.health_every < 0:
    raise ValueError("--config.log.health_every must be an integer >= 0 (0: off), got "
                     f"{config.log.health_every!r}.")
  if not config.views or not all(isinstance(v, str) for v in config.views.values()):
    raise ValueError("--config.views must map view names to augmentation recipe strings.")
  if config.fsdp and config.parallel != "gspmd":
    raise ValueError("--config.fsdp=True needs --config.parallel=gspmd.")
  if not isinstance(config.text.seq_len, int) or config.text.seq_len < 2:
    raise ValueError(f"--config.text.seq_len must be an integer >= 2, got {config.text.seq_len!r}.")
  if config.max_consecutive_skips < 1:
    raise ValueError("--config.max_consecutive_skips must be >= 1.")
  validate_eval(config.eval)


def _validate_encoder_kwargs(config: ml_collections.ConfigDict) -> None:
  """Refuses ``encoder_kwargs`` keys that an image encoder of the registry does not take."""
  from ssl_jax import models

  if config.encoder not in models.encoder_names():
    return  # a text encoder: checked where the method builds it
  valid = models.encoder_kwargs(config.encoder)
  unknown = sorted(set(config.encoder_kwargs.keys()) - set(valid))
  if unknown:
    raise ValueError(f"--config.encoder_kwargs.{unknown[0]} is not an argument of encoder "
                     f"{config.encoder!r}; valid keys: {', '.join(valid)}.")


def _validate_optimizer(opt: ml_collections.ConfigDict) -> None:
  """Checks the schedule, weight-decay schedule and parameter-group keys of config.optimizer."""
  from ssl_jax.train import optim

  _check_choice("optimizer.schedule", opt.schedule, optim.SCHEDULES)
  if not 0 <= opt.final_lr_fraction <= 1:
    raise ValueError("--config.optimizer.final_lr_fraction must be in [0, 1], got "
                     f"{opt.final_lr_fraction}.")
  phases = tuple(opt.tri_stage)
  if len(phases) != 3 or min(phases) < 0 or sum(phases) > 1 + 1e-9:
    raise ValueError("--config.optimizer.tri_stage must be three fractions (warmup, hold, decay) "
                     f">= 0 summing to at most 1, got {opt.tri_stage}.")
  if opt.schedule == "tri_stage" and not 0 < opt.final_lr_fraction < 1:
    raise ValueError("--config.optimizer.schedule='tri_stage' decays exponentially to "
                     "final_lr_fraction * peak: set --config.optimizer.final_lr_fraction in "
                     f"(0, 1), got {opt.final_lr_fraction}.")
  if opt.weight_decay < 0 or (opt.weight_decay_end is not None and opt.weight_decay_end < 0):
    raise ValueError("--config.optimizer.weight_decay and weight_decay_end must be >= 0.")
  optim.resolve_groups(opt.groups, steps_per_epoch=1)  # keys, patterns and values


def validate_data(data: ml_collections.ConfigDict) -> None:
  """Checks the config.data block's choices (also where evaluation overrides them)."""
  _check_choice("data.on_corrupt", data.on_corrupt, ("error", "skip"))
  _check_choice("data.color", data.color, ("auto", "rgb", "grayscale"))


def validate_eval(ev: ml_collections.ConfigDict) -> None:
  """Checks the config.eval block (see base_config for the meaning of each key)."""
  _check_choice("eval.report_projection", ev.report_projection, ("pca", "tsne"))
  _check_choice("eval.online_probe", ev.online_probe, ("auto", "on", "off"))
  unknown = set(ev.protocols) - {"linear", "knn"}
  if unknown:
    raise ValueError(f"--config.eval.protocols has unknown entries {sorted(unknown)}; valid: "
                     "linear, knn (fine-tuning runs with `ssl-jax eval --protocol finetune`).")
  for key in ("num_draws", "knn_k", "batch_size", "report_max_points"):
    if not isinstance(ev[key], int) or ev[key] < (2 if key == "report_max_points" else 1):
      raise ValueError(f"--config.eval.{key} must be a positive integer, got {ev[key]!r}.")
  for key in ("knn_temperature", "online_probe_lr"):
    if not ev[key] > 0:
      raise ValueError(f"--config.eval.{key} must be > 0, got {ev[key]!r}.")
  ft = ev.finetune
  if not ft.name or not all(c.isalnum() or c in "-_." for c in ft.name) or ft.name[0] == ".":
    raise ValueError(f"--config.eval.finetune.name={ft.name!r} must be a plain directory name "
                     "(letters, digits, '-', '_', '.').")
  for key in ("steps", "batch_size", "checkpoint_every"):
    if not isinstance(ft[key], int) or ft[key] < 1:
      raise ValueError(f"--config.eval.finetune.{key} must be a positive integer, got {ft[key]!r}.")
  if not ft.lr > 0 or ft.weight_decay < 0:
    raise ValueError("--config.eval.finetune.lr must be > 0 and weight_decay >= 0.")
  if not 0 <= ft.frozen_steps <= ft.steps or ft.warmup_steps < 0:
    raise ValueError(f"--config.eval.finetune.frozen_steps must be in [0, steps={ft.steps}] and "
                     "warmup_steps >= 0.")
  if not 0 < ft.layer_decay <= 1:
    raise ValueError(f"--config.eval.finetune.layer_decay must be in (0, 1], got {ft.layer_decay}.")
  if not 0 <= ft.label_smoothing < 1:
    raise ValueError("--config.eval.finetune.label_smoothing must be in [0, 1).")
  budget = str(ft.budget)
  if not (budget == "all" or budget.isdigit() and int(budget) > 0
          or budget.endswith("%") and _is_percent(budget[:-1])):
    raise ValueError(f"--config.eval.finetune.budget={ft.budget!r}; valid: 'all', a number of "
                     "labels per class, or 'p%' with 0 < p <= 100.")


def _is_percent(text: str) -> bool:
  try:
    return 0 < float(text) <= 100
  except ValueError:
    return False


def to_dict(config: ml_collections.ConfigDict) -> dict:
  """A JSON-ready plain dict (tuples become lists)."""
  return json.loads(config.to_json())


def state_affecting_diff(old: dict, new: dict) -> list[str]:
  """Dotted keys whose values differ between two resolved configs, ignoring run-control keys.

  A key that ``old`` lacks (a config recorded before ssl_jax added the key) counts as equal when
  ``new`` holds the key's default (:func:`base_config`): new keys default to the old behaviour.
  """

  def flat(d, prefix=""):
    out = {}
    for k, v in d.items():
      key = prefix + k
      if isinstance(v, dict) and v:
        out.update(flat(v, key + "."))
      else:
        out[key] = v
    return out

  a, b = flat(old), flat(new)
  defaults = flat(json.loads(base_config().to_json()))
  for key, value in defaults.items():
    if key not in a and b.get(key, "<missing>") == value:
      a[key] = value
  diff = []
  for key in sorted(set(a) | set(b)):
    if any(key == c or key.startswith(c + ".") for c in RUN_CONTROL_KEYS):
      continue
    if a.get(key, "<missing>") != b.get(key, "<missing>"):
      diff.append(f"{key}: {a.get(key, '<missing>')!r} -> {b.get(key, '<missing>')!r}")
  return diff
