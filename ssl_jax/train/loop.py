"""Pretraining loop: data -> compiled step -> logs and checkpoints, with auto-resume.

``pretrain(config, workdir)`` writes the workdir layout of the design notes:
``config.json`` (the resolved config), ``metrics.jsonl``, ``tensorboard/``, ``checkpoints/``
(Orbax, auto-resumed from the latest committed step, data position and RNG included).
A workdir whose checkpoint came from a different config is refused unless ``overwrite=True``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time

import jax
import ml_collections
import numpy as np

from ssl_jax import config as config_lib
from ssl_jax import methods, modalities
from ssl_jax.data import make_iterator
from ssl_jax.train.monitors import COLLAPSE_THRESHOLD
from ssl_jax.train import optim, xla_options
from ssl_jax.train.checkpoint import Checkpointer
from ssl_jax.train.logging import MetricsLogger
from ssl_jax.train.parallel import Engine
from ssl_jax.train.preprocess import make_preprocess
from ssl_jax.train.workdir import restore_run, write_json_atomic

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"
# The keys of a run's length: changing only these on a workdir with a checkpoint extends the run.
LENGTH_KEYS = ("total_steps", "epochs")
_RUN_OUTPUTS = (CHECKPOINT_DIR, "metrics.jsonl", "tensorboard", "eval.json", "report", "finetune")


class NonFiniteError(RuntimeError):
  """Too many consecutive steps had a non-finite loss or gradient."""


class Preempted(RuntimeError):
  """SIGTERM or Ctrl-C arrived; a checkpoint of the step reached was saved. Rerun to resume."""

  def __init__(self, step: int, directory: str, signum: int = signal.SIGTERM):
    what = "Interrupted (Ctrl-C)" if signum == signal.SIGINT else "Preempted (SIGTERM)"
    super().__init__(f"{what}: saved a checkpoint at step {step} in {directory}. "
                     "Run the same command again to resume from it.")
    self.step = step
    self.signum = signum


class PreemptionGuard:
  """Turns SIGTERM (the preemption notice of TPU VMs and most schedulers) and a first Ctrl-C
  (SIGINT) into a flag.

  Single process: the handler sets the flag; the loop checks it after every step, saves a
  checkpoint and stops (a signal during the final save lets the save finish). A second Ctrl-C
  aborts at once (``KeyboardInterrupt``), losing the steps since the last checkpoint. Several
  processes (``jax.distributed`` initialized): JAX's preemption service receives SIGTERM and
  ``multihost_utils.reached_preemption_sync_point`` makes every host stop at the same step, so
  their checkpoints agree; Ctrl-C keeps Python's default there.
  """

  def __init__(self):
    self.requested = False
    self.signum = signal.SIGTERM
    self._previous = {}
    self._distributed = jax.process_count() > 1
    if threading.current_thread() is threading.main_thread():
      signums = (signal.SIGINT,) if self._distributed else (signal.SIGTERM, signal.SIGINT)
      self._previous = {s: signal.signal(s, self._handle) for s in signums}

  def _handle(self, signum, frame):
    del frame
    if signum == signal.SIGINT and self.requested:
      raise KeyboardInterrupt  # the second Ctrl-C: abort now
    if signum == signal.SIGINT:
      print("\nCtrl-C: saving a checkpoint of the current step, then stopping (Ctrl-C again to "
            "abort without saving).", flush=True)
    self.requested, self.signum = True, signum

  def reached(self, step: int) -> bool:
    if self._distributed and self.signum != signal.SIGINT:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      return bool(multihost_utils.reached_preemption_sync_point(step))
    return self.requested

  def close(self) -> None:
    for signum, previous in self._previous.items():
      signal.signal(signum, previous)
    self._previous = {}


def check_workdir(config, workdir: str, *, overwrite: bool = False) -> dict | None:
  """Refuses a ``workdir`` holding a checkpoint of a different config; reads only.

  Keys that only change logging, checkpoint cadence or evaluation may differ (a resumed run can
  log more often). With ``overwrite=True`` the earlier run is not looked at (it will be deleted by
  :func:`prepare_workdir`).

  Returns the earlier run's config when only the run's length (:data:`LENGTH_KEYS`) differs: the
  run is being extended, which :func:`pretrain` checks against the checkpoint before it writes
  the new ``config.json`` (:func:`extend_run`); None otherwise.
  """
  path = os.path.join(workdir, CONFIG_FILE)
  if overwrite or not has_checkpoint(workdir):
    return None
  if not os.path.exists(path):
    raise ValueError(f"{workdir} holds checkpoints but no {CONFIG_FILE}; refusing to resume a "
                     "run of unknown config. Pass --overwrite to start over.")
  with open(path, encoding="utf-8") as f:
    old = json.load(f)
  diff = config_lib.state_affecting_diff(old, config_lib.to_dict(config))
  if diff and {d.split(":", 1)[0] for d in diff} <= set(LENGTH_KEYS):
    return old
  if diff:
    raise ValueError(f"{workdir} holds a checkpoint of a different config:\n  "
                     + "\n  ".join(diff) + "\nUse another --workdir, or pass --overwrite to "
                     "delete the earlier run and start over.")
  return None


def has_checkpoint(workdir: str) -> bool:
  """Whether ``workdir`` holds a checkpoint step (a run to resume or extend)."""
  ckpt_dir = os.path.join(workdir, CHECKPOINT_DIR)
  return os.path.isdir(ckpt_dir) and any(name.isdigit() for name in os.listdir(ckpt_dir))


def prepare_workdir(config, workdir: str, *, overwrite: bool = False) -> None:
  """Creates ``workdir`` and writes its ``config.json``, after :func:`check_workdir` and every
  other check of the run passed (a refused run writes nothing). With ``overwrite=True`` the
  earlier run's outputs are deleted first."""
  os.makedirs(workdir, exist_ok=True)
  if jax.process_index() != 0:
    return
  if overwrite:
    for name in _RUN_OUTPUTS:
      target = os.path.join(workdir, name)
      if os.path.isdir(target):
        shutil.rmtree(target)
      elif os.path.exists(target):
        os.remove(target)
  write_json_atomic(os.path.join(workdir, CONFIG_FILE), config_lib.to_dict(config))


def extend_run(config, previous: dict, workdir: str, run: methods.RunInfo,
               num_examples: int) -> str:
  """Checks that ``config`` (the same run as ``previous`` but for its length) continues the
  checkpoint in ``workdir``, writes the new ``config.json`` and returns the line that says how
  the schedules change. Raises ValueError, writing nothing, when the checkpoint is already at or
  past the new length."""
  ckpt_dir = os.path.join(workdir, CHECKPOINT_DIR)
  latest = max(int(name) for name in os.listdir(ckpt_dir) if name.isdigit())
  if latest >= run.total_steps:
    raise ValueError(f"{workdir} holds a checkpoint at step {latest}, so a run of "
                     f"{run.total_steps} steps does not extend it: pass a larger "
                     "--config.total_steps (or --config.epochs), or --overwrite to start over.")
  old = ml_collections.ConfigDict(previous)
  _, old_total = steps_for(old, num_examples)

  def lr(cfg, total):
    _, schedule = optim.build_optimizer(cfg.optimizer, batch_size=cfg.batch_size,
                                        total_steps=total, steps_per_epoch=run.steps_per_epoch)
    return float(schedule(latest))

  if jax.process_index() == 0:
    write_json_atomic(os.path.join(workdir, CONFIG_FILE), config_lib.to_dict(config))
  return (f"Extending the run from {old_total} to {run.total_steps} steps ({CONFIG_FILE} "
          f"updated): the learning-rate schedule and the method's schedules now span "
          f"{run.total_steps} steps; at step {latest} the learning rate goes from "
          f"{lr(old, old_total):.4g} to {lr(config, run.total_steps):.4g}.")


def steps_for(config, num_examples: int) -> tuple[int, int]:
  """``(steps_per_epoch, total_steps)``; ``config.total_steps`` overrides ``epochs``."""
  steps_per_epoch = num_examples // config.batch_size
  if steps_per_epoch == 0:
    raise ValueError(f"batch_size={config.batch_size} is larger than the dataset "
                     f"{config.dataset!r} ({num_examples} examples).")
  total = config.total_steps if config.total_steps else config.epochs * steps_per_epoch
  return steps_per_epoch, total


def run_info(config, num_examples: int, *, devices=None) -> methods.RunInfo:
  """What a method learns of the run (:class:`ssl_jax.methods.RunInfo`): the run's length and
  epochs (:func:`steps_for`), the dataset size, the global batch and the device count."""
  steps_per_epoch, total_steps = steps_for(config, num_examples)
  return methods.RunInfo(
      total_steps=total_steps, steps_per_epoch=steps_per_epoch, num_examples=num_examples,
      global_batch_size=config.batch_size,
      num_devices=len(devices) if devices is not None else jax.device_count())


def periodic_due(method, run: methods.RunInfo, done: int) -> list[int]:
  """Indices of ``method.periodic`` due after step ``done`` (steps done so far, >= 1)."""
  return [i for i, work in enumerate(method.periodic)
          if done % work.interval(run.steps_per_epoch) == 0]


def example_batch(batch_size: int, image_shape) -> dict:
  """Shapes of a raw batch of ``batch_size`` images of ``image_shape``."""
  return modalities.get("image").raw_batch(batch_size, image_shape)


def example_batch_for(config, source) -> dict:
  """Shapes of one global batch of ``source``, for initialization (the run's modality's)."""
  return modalities.of(config).example_batch(config, source)


def load_train_source(config, split: str | None = None):
  """The run's data source for ``split`` (default ``config.train_split``), as its modality reads
  it (:mod:`ssl_jax.modalities`): images by dataset name, or, for a language method, the
  corpus's rows in the run's tokenization."""
  return modalities.of(config).load_source(config, split)


def build(config, num_examples: int, *, devices=None, online_probe_classes: int | None = None):
  """``(method, engine, run)`` of a run (shared by pretraining and benchmarks): the method built
  with the run's :class:`~ssl_jax.methods.RunInfo`, and the engine with its optimizer; with
  ``online_probe_classes`` the method carries an online linear probe
  (:func:`ssl_jax.train.online_probe.with_online_probe`)."""
  run = run_info(config, num_examples, devices=devices)
  method = methods.make(config.method, config, run)
  if online_probe_classes:
    from ssl_jax.train.online_probe import with_online_probe  # pylint: disable=g-import-not-at-top
    method = with_online_probe(method, num_classes=online_probe_classes,
                               learning_rate=config.eval.online_probe_lr)
  tx, _ = optim.build_optimizer(config.optimizer, batch_size=config.batch_size,
                                total_steps=run.total_steps, steps_per_epoch=run.steps_per_epoch,
                                param_groups=method.param_groups)
  engine = Engine(method, tx, make_preprocess(config), mode=config.parallel,
                  global_batch_size=config.batch_size, devices=devices, sync_bn=config.sync_bn,
                  clip_norm=config.optimizer.clip_norm,
                  fsdp=config.fsdp, fsdp_min_size=config.fsdp_min_size,
                  nan_at_step=config.debug.nan_at_step, nan_num_steps=config.debug.nan_num_steps,
                  compiler_options=xla_options.step_compiler_options(config.cpu_kernels))
  return method, engine, run


def build_for_pretraining(config, source, *, devices=None):
  """:func:`build` as :func:`pretrain` runs it on ``source``: the online probe's class count is
  worked out from the config and the data (:func:`ssl_jax.train.online_probe.probe_classes`).
  Benchmarks use it too, so that they time the same step."""
  from ssl_jax.train.online_probe import probe_classes  # pylint: disable=g-import-not-at-top
  return build(config, len(source), devices=devices,
               online_probe_classes=probe_classes(config, source))


def pretrain(config, workdir: str, *, overwrite: bool = False, devices=None) -> dict:
  """Runs (or resumes) pretraining; returns the last logged metrics.

  Raises:
    NonFiniteError: after ``config.max_consecutive_skips`` consecutive non-finite steps (the
      checkpoints on disk all hold finite values: skipped steps never change the state).
  """
  workdir = os.path.abspath(workdir)
  modalities.of(config).check_evaluable(config)  # what evaluation needs, before any file
  previous = check_workdir(config, workdir, overwrite=overwrite)
  source = load_train_source(config)
  method, engine, run = build_for_pretraining(config, source, devices=devices)
  total_steps = run.total_steps
  extension = None if previous is None else extend_run(config, previous, workdir, run, len(source))
  state = engine.init_state(jax.random.key(config.seed), example_batch_for(config, source))
  iterator = make_iterator(source, global_batch_size=config.batch_size, seed=config.seed,
                                shuffle=config.data.shuffle, worker_count=config.data.worker_count)
  init_from = config.init_from and (overwrite or not has_checkpoint(workdir))  # a new run
  if init_from:  # a mismatch is refused before anything is written
    state = _init_encoder_from(config, engine, state, getattr(source, "image_shape", None))
  if previous is None:  # Every check passed: only now is anything written (extend_run writes
    prepare_workdir(config, workdir, overwrite=overwrite)  # an extended run's config.json).
  logger = MetricsLogger(workdir, total_steps=total_steps, tensorboard=config.log.tensorboard,
                         quiet=config.quiet)
  ckpt = Checkpointer(os.path.join(workdir, CHECKPOINT_DIR),
                      max_to_keep=config.checkpoint.max_to_keep,
                      every_steps=config.checkpoint.every_steps,
                      async_save=config.checkpoint.async_save,
                      on_corrupt=config.checkpoint.on_corrupt, log=logger.message)
  if init_from:
    logger.message(f"Encoder initialized from {config.init_from}")
  if extension:
    logger.message(extension)
  if ckpt.latest_step() is not None:
    state = resume(ckpt, engine, state, iterator)
    logger.message(f"Resumed from step {int(engine.global_state(state).step)} in {ckpt.directory}")

  start = int(jax.device_get(engine.global_state(state).step))
  logger.message(f"Pretraining {config.method} on {config.dataset}: {total_steps} steps of "
                 f"{config.batch_size} examples on {engine.num_devices} {jax.default_backend()} "
                 f"device(s), parallel={config.parallel}; workdir {workdir}")
  last: dict = {}
  pending = None  # (step, metrics) of the previous step, fetched while the current one runs
  t_prev = time.perf_counter()

  def flush():
    nonlocal pending, last, t_prev
    if pending is not None:
      done, metrics = pending
      pending = None
      last, t_prev = _report(logger, config, done, metrics, t_prev, first=done == start + 1,
                             final=done == total_steps, saved_note=lambda: checkpoints_note(ckpt))

  preemption = PreemptionGuard()
  try:
    for step in range(start, total_steps):
      batch = engine.put_batch(next(iterator))
      state, metrics = engine.step(state, batch)
      for index in periodic_due(method, run, step + 1):  # before this step's checkpoint
        state = engine.run_periodic(state, index)
      flush()
      pending = (step + 1, metrics)
      preempted = preemption.reached(step + 1)
      if ckpt.should_save(step + 1) or (preempted and step + 1 < total_steps):
        flush()  # log the step first: metrics.jsonl never lags behind what a resume starts from
        ckpt.save(step + 1, engine.global_state(state), iterator.get_state())
        if not preempted:
          _log_samples(config, source, engine.global_state(state), step + 1, logger)
      if preempted and step + 1 < total_steps:
        ckpt.wait()
        name = "Ctrl-C" if preemption.signum == signal.SIGINT else "SIGTERM"
        logger.message(f"{name} received: checkpoint of step {step + 1} committed; stopping.")
        raise Preempted(step + 1, ckpt.directory, preemption.signum)
    flush()
    if ckpt.should_save(total_steps, final=True):
      ckpt.save(total_steps, engine.global_state(state), iterator.get_state())
      _log_samples(config, source, engine.global_state(state), total_steps, logger)
    ckpt.wait()
  finally:
    preemption.close()
    ckpt.close()
    iterator.close()
    logger.close()
  return last


def resume(ckpt: Checkpointer, engine: Engine, state, iterator):
  """``state`` restored from ``ckpt``'s latest step into the engine's placement, and the data
  ``iterator`` moved to the position saved with it (pretraining and fine-tuning runs)."""
  restored, data_state = ckpt.restore(engine.global_state(state))
  state = engine.place_state(restored) if engine.mode == "pmap" else restored
  if data_state is not None:
    iterator.set_state(data_state)
  return state


def _init_encoder_from(config, engine, state, image_shape):
  """The state with its encoder (and a teacher's copy of it) taken from the latest checkpoint of
  the pretraining workdir ``config.init_from``; the rest (heads, optimizer) stays as built."""
  other = restore_run(config.init_from, image_shape)
  host = jax.device_get(engine.global_state(state))
  source = {k: other.trained[k].get("encoder") for k in ("params", "batch_stats")}
  if source["params"] is None or "encoder" not in host.params:
    raise ValueError(f"--config.init_from={config.init_from!r}: both runs need an 'encoder' "
                     f"network (found {sorted(other.trained['params'])} there, "
                     f"{sorted(host.params)} here).")

  def take(target, theirs):
    """``theirs`` in ``target``'s structure and dtypes; every path and shape must match."""
    paths, treedef = jax.tree.flatten_with_path(target)
    found = {jax.tree_util.keystr(p): x for p, x in jax.tree.flatten_with_path(theirs)[0]}
    shape = lambda p: getattr(found.get(jax.tree_util.keystr(p)), "shape", "missing")
    bad = [f"{jax.tree_util.keystr(p)}: {x.shape} here, {shape(p)} there"
           for p, x in paths if shape(p) != x.shape]
    if bad or len(found) != len(paths):
      raise ValueError(f"--config.init_from={config.init_from!r}: its encoder does not match this "
                       f"run's ({len(found)} vs {len(paths)} arrays):\n  " + "\n  ".join(bad))
    return jax.tree.unflatten(treedef, [np.asarray(found[jax.tree_util.keystr(p)], x.dtype)
                                        for p, x in paths])

  params = {**host.params, "encoder": take(host.params["encoder"], source["params"])}
  stats = host.batch_stats
  if stats.get("encoder"):
    stats = {**stats, "encoder": take(stats["encoder"], source["batch_stats"] or {})}
  method_state = host.method_state
  if isinstance(method_state, dict):  # EMA teachers (methods.common.teacher_init) copy it too
    method_state = dict(method_state)
    for key, teacher in method_state.items():
      if isinstance(teacher, dict) and "encoder" in teacher.get("params", {}):
        teacher = {**teacher, "params": {**teacher["params"], "encoder": params["encoder"]}}
        if "encoder" in teacher.get("batch_stats", {}):
          teacher["batch_stats"] = {**teacher["batch_stats"], "encoder": stats["encoder"]}
        method_state[key] = teacher
  new = host.replace(params=params, batch_stats=stats, method_state=method_state)
  return engine.place_state(new)


def _log_samples(config, source, state, step: int, logger) -> None:
  """Logs text generated by the current model, for methods that generate (``samples``)."""
  module = methods.get_module(config.method)
  if not hasattr(module, "samples") or not config.method_kwargs.get("sample_tokens", 0):
    return
  for text in module.samples(config, state.params, state.batch_stats, module.prompts_of(source)):
    logger.message(f"step {step} sample: {text!r}")


def _report(logger, config, step, metrics, t_prev, *, first, final, saved_note):
  metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
  now = time.perf_counter()
  elapsed = now - t_prev
  if first:
    metrics["first_step_s"] = elapsed  # includes compilation
  else:
    metrics["step_time_s"] = elapsed
    metrics["examples_per_s"] = config.batch_size / max(elapsed, 1e-9)
    metrics.update(modalities.of(config).throughput(config, metrics["examples_per_s"]))
  warning = ""
  ratio = metrics.get("embedding_std_ratio")
  if ratio is not None and ratio < COLLAPSE_THRESHOLD:
    warning = f"collapse? embedding std ratio {ratio:.3f}"
    if not logger.collapse_warned:
      logger.message(f"step {step}: WARNING: representation collapse suspected: the per-dimension "
                     f"std of normalized embeddings is {ratio:.3f} of a healthy spread "
                     f"(threshold {COLLAPSE_THRESHOLD}).")
    logger.collapse_warned = True
  elif ratio is not None:
    logger.collapse_warned = False
  if metrics["skipped"]:
    warning = f"skipped non-finite step ({int(metrics['skips'])} in a row)"
    logger.message(f"step {step}: loss or gradient not finite; step skipped, state unchanged "
                   f"({int(metrics['skips'])} consecutive, {int(metrics['total_skips'])} total).")
  if step % config.log.every_steps == 0 or first or final or metrics["skipped"]:
    logger.write(step, metrics)
  logger.progress(step, metrics, warning)
  if metrics["skips"] >= config.max_consecutive_skips:
    raise NonFiniteError(
        f"{int(metrics['skips'])} consecutive steps had a non-finite loss or gradient (limit "
        f"--config.max_consecutive_skips={config.max_consecutive_skips}); stopping at step "
        f"{step}. {saved_note()} Lower the learning rate (--config.optimizer.lr=...) or clip "
        "gradients (--config.optimizer.clip_norm=1.0).")
  return metrics, now


def checkpoints_note(ckpt: Checkpointer) -> str:
  """What a stopped run leaves to resume from: the committed checkpoint steps (all finite: skipped
  steps never change the state), or that there are none."""
  ckpt.wait()
  steps = ckpt.all_steps()
  if not steps:
    due = (f"the first is due at step {ckpt.every_steps}" if ckpt.every_steps
           else "only the final step is saved")
    return (f"No checkpoint was saved ({due}: --config.checkpoint.every_steps="
            f"{ckpt.every_steps}), so there is nothing to resume from.")
  return (f"Checkpoints of steps {', '.join(map(str, steps))} in {ckpt.directory} hold finite "
          f"states (skipped steps never change the state); a rerun resumes from step {steps[-1]}.")
