"""Measuring a train step, the input pipeline, and the PyTorch reference, as JSON records.

:func:`measure_step` times ``Engine.step`` of a run config exactly as pretraining runs it (same
build, donated state, on-device augmentation inside the step) on a batch staged on the devices
once: the first call (compilation included) is reported apart as ``compile_s``; then ``warmup``
untimed steps, then ``repeats`` timed windows of ``steps`` steps each, every window closed by
``block_until_ready``; ``step_ms`` is the median window's time per step, ``step_ms_min`` /
``step_ms_max`` the spread. It also records the trace count (1: no recompilation), warnings about
donated buffers that could not be used (0 expected), peak device memory where the backend reports
it (``device.memory_stats()``; XLA:CPU does not, so the compiled program's own temp/argument sizes
from ``memory_analysis()`` are recorded too), analytic model FLOPs (:mod:`ssl_jax.bench.flops`)
next to XLA's ``cost_analysis()`` FLOPs, MFU against :mod:`ssl_jax.bench.peak`, and the 1-minute
load average before and after (on a shared machine it says how much the numbers can be trusted).

:func:`measure_pipeline` times the Grain reader alone, the on-device augmentation alone, and the
loop of pretraining (read, put, step) against the staged-batch step: ``input_bound_ratio`` is
end-to-end step time / staged step time (1.0: the input pipeline is hidden behind the step).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
import warnings
from typing import Any, Iterable, Sequence

import jax
import numpy as np

from ssl_jax import config as config_lib
from ssl_jax import modalities
from ssl_jax.bench import flops as flops_lib
from ssl_jax.bench import peak as peak_lib
from ssl_jax.data import make_iterator
from ssl_jax.data.sources import ArraySource
from ssl_jax.hugepages import process_glibc_tunables
from ssl_jax.train.online_probe import probe_classes
from ssl_jax.train import xla_options
from ssl_jax.train.loop import build_for_pretraining, example_batch_for, load_train_source
from ssl_jax.train.preprocess import make_preprocess

DONATION_WARNING = "donated buffers were not usable"
# Image shape of a dataset when the benchmark uses synthetic pixels (throughput does not depend
# on pixel values; CIFAR-10 and ImageNet are not downloadable everywhere).
SYNTHETIC_SHAPES = {"cifar10": (32, 32, 3), "cifar100": (32, 32, 3), "stl10": (96, 96, 3),
                    "imagenet2012": (224, 224, 3)}


def repo_root() -> str:
  """The checkout holding ``experiments/`` and ``benchmarks/`` (ssl_jax is installed editable)."""
  return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_avg() -> float | None:
  try:
    return round(os.getloadavg()[0], 2)
  except OSError:
    return None


def synthetic_source(image_shape: Sequence[int], num_examples: int, *, seed: int = 0,
                     num_classes: int = 10) -> ArraySource:
  """Random uint8 images as a Grain-compatible source (same reading path as a real dataset)."""
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (num_examples, *image_shape), dtype=np.uint8)
  labels = rng.integers(0, num_classes, (num_examples,), dtype=np.int32)
  return ArraySource(images, labels, name="synthetic", split="train", num_classes=num_classes)


def bench_source(config, *, data: str = "auto", min_examples: int = 0):
  """``(source, kind)``: the run's training source, or synthetic pixels of its shape.

  Args:
    config: the run config.
    data: ``"real"`` (the config's dataset; raises if unavailable), ``"synthetic"``, or ``"auto"``
      (real when it loads, else synthetic).
    min_examples: the synthetic source has at least this many examples.
  """
  if data not in ("auto", "real", "synthetic"):
    raise ValueError(f"data={data!r}; valid: auto, real, synthetic.")
  if not modalities.of(config).SYNTHETIC_BENCH_DATA:
    return load_train_source(config), "real"
  if data != "synthetic":
    try:
      return load_train_source(config), "real"
    except (FileNotFoundError, ValueError, ImportError, OSError, KeyError):
      if data == "real":
        raise
  name = config.dataset.split(":")[1] if ":" in config.dataset else config.dataset
  shape = SYNTHETIC_SHAPES.get(name)
  if config.data.image_size:
    shape = (config.data.image_size, config.data.image_size, 3)
  if shape is None:
    raise ValueError(f"No synthetic image shape for dataset {config.dataset!r}; set "
                     "config.data.image_size.")
  n = max(min_examples, 4 * config.batch_size)
  return synthetic_source(shape, n, seed=config.seed), "synthetic"


def _memory_stats() -> dict:
  try:
    stats = jax.devices()[0].memory_stats()
  except Exception:  # pylint: disable=broad-except
    return {}
  return stats or {}


def config_summary(config) -> dict:
  """The config keys that define the benchmarked step."""
  return {"method": config.method, "encoder": config.encoder,
          "encoder_kwargs": config.encoder_kwargs.to_dict(), "dataset": config.dataset,
          "views": config.views.to_dict(), "optimizer": config.optimizer.name,
          "method_kwargs": config.method_kwargs.to_dict(), "sync_bn": config.sync_bn,
          "online_probe": config.eval.online_probe}


def measure_step(config, *, steps: int = 10, repeats: int = 5, warmup: int = 2,
                 data: str = "auto", devices=None, peak: dict | None = None,
                 xla_cost: bool = True, model: str | None = None) -> dict:
  """One benchmark record of ``config``'s train step (see the module docstring).

  Args:
    config: the run config (``batch_size``, ``parallel``, ``compute_dtype`` are taken from it).
    steps: steps per timed window.
    repeats: timed windows (``step_ms`` is their median).
    warmup: untimed steps after the first (compiling) one.
    data: see :func:`bench_source`.
    devices: devices to run on (default all).
    peak: :func:`ssl_jax.bench.peak.device_peak` output (measured/looked up here if None).
    xla_cost: also compile the step ahead of time for ``cost_analysis``/``memory_analysis``.
    model: a name for the record (default ``"<method>/<encoder>"``).
  """
  if steps < 1 or repeats < 1 or warmup < 0:
    raise ValueError(f"need steps >= 1, repeats >= 1, warmup >= 0; got {steps}, {repeats}, "
                     f"{warmup}.")
  peak = peak_lib.device_peak() if peak is None else peak
  source, data_kind = bench_source(config, data=data)
  _, engine, _ = build_for_pretraining(config, source, devices=devices)
  state = engine.init_state(jax.random.key(config.seed), example_batch_for(config, source))
  iterator = make_iterator(source, global_batch_size=config.batch_size, seed=0)
  try:
    host_batch = next(iterator)
  finally:
    iterator.close()
  batch = engine.put_batch(host_batch)
  load_before = load_avg()
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    t0 = time.perf_counter()
    state, metrics = engine.step(state, batch)
    jax.block_until_ready((state, metrics))
    first_s = time.perf_counter() - t0
    for _ in range(warmup):
      state, metrics = engine.step(state, batch)
    jax.block_until_ready((state, metrics))
    windows = []
    for _ in range(repeats):
      t0 = time.perf_counter()
      for _ in range(steps):
        state, metrics = engine.step(state, batch)
      jax.block_until_ready((state, metrics))
      windows.append((time.perf_counter() - t0) / steps)
  load_after = load_avg()
  traces = engine.trace_count
  donation = sum(DONATION_WARNING in str(w.message) for w in caught)
  median = statistics.median(windows)
  mem = _memory_stats()
  model_flops = _model_flops(config, host_batch)
  record: dict[str, Any] = {
      "benchmark": "train_step", "framework": "ssl_jax",
      "model": model or f"{config.method}/{config.encoder}",
      "device": peak["device"], "backend": peak["backend"], "num_devices": engine.num_devices,
      "jax": jax.__version__, "method": config.method, "encoder": config.encoder,
      "batch_size": config.batch_size, "parallel": config.parallel,
      "compute_dtype": config.compute_dtype, "data": data_kind,
      "compile_s": round(max(first_s - median, 0.0), 3), "first_step_s": round(first_s, 3),
      "step_ms": round(1e3 * median, 3), "step_ms_min": round(1e3 * min(windows), 3),
      "step_ms_max": round(1e3 * max(windows), 3),
      "step_ms_iqr": round(1e3 * _iqr(windows), 3),
      "examples_per_s": round(config.batch_size / median, 2),
      "steps_per_window": steps, "windows": repeats, "warmup_steps": warmup,
      "traces": traces, "donation_warnings": donation,
      "peak_memory_bytes": mem.get("peak_bytes_in_use"),
      "model_flops": model_flops["model_flops"],
      "model_flops_detail": model_flops,
      "peak_flops_per_s": peak["peak_flops_per_s"], "peak_source": peak["peak_source"],
      "peak_scope": peak.get("peak_scope"),
      "mfu": round_or_none(peak_lib.mfu(model_flops["model_flops"], median,
                                        peak["peak_flops_per_s"],
                                        peak_lib.peak_units(peak, engine.num_devices))),
      "load_avg_1m_before": load_before, "load_avg_1m_after": load_after,
      "cpu_threads": peak_lib.cpu_threads(), "xla_flags": os.environ.get("XLA_FLAGS", ""),
      "glibc_tunables": process_glibc_tunables(), "config": config_summary(config),
      "online_probe_classes": probe_classes(config, source),
  }
  if peak["backend"] == "cpu":  # which libraries ran the step (after the engine's checks)
    ran = xla_options.kernels_name(engine.compiler_options)
    record["cpu_kernels"] = ran if ran == config.cpu_kernels else f"{ran} (fallback)"
  record.update({k: round(v, 1) for k, v in  # tokens/s for text (the modality's units)
                 modalities.of(config).throughput(config, config.batch_size / median).items()})
  if xla_cost:
    record.update(_xla_cost(engine, state, batch))
    if record.get("xla_flops_per_device") is not None:
      record["xla_flops"] = record["xla_flops_per_device"] * engine.num_devices
  record["traces_after_aot"] = engine.trace_count
  record["params"] = flops_lib.param_count(engine.global_state(state).params)
  return record


def _model_flops(config, host_batch) -> dict:
  """Analytic model FLOPs of the step (view sizes from the modality: the config's view recipes
  applied to the batch's images)."""
  sizes = modalities.of(config).view_sizes(config, host_batch)
  try:
    return flops_lib.method_step_flops(config, sizes)
  except (ValueError, AttributeError, KeyError) as e:
    return {"model_flops": None, "error": str(e)}


def _xla_cost(engine, state, batch) -> dict:
  """XLA's own account of the compiled step: FLOPs and memory of one device's program."""
  out: dict[str, Any] = {"xla_flops_per_device": None}
  try:
    jitted = engine._step  # pylint: disable=protected-access
    compiled = jitted.lower(state, batch).compile()
  except Exception as e:  # pylint: disable=broad-except
    out["xla_cost_error"] = f"{type(e).__name__}: {e}"[:200]
    return out
  out["xla_flops_per_device"] = flops_lib.xla_flops(compiled)
  try:
    mem = compiled.memory_analysis()
    out["xla_temp_bytes"] = int(mem.temp_size_in_bytes)
    out["xla_argument_bytes"] = int(mem.argument_size_in_bytes)
    out["xla_output_bytes"] = int(mem.output_size_in_bytes)
  except Exception:  # pylint: disable=broad-except
    pass
  return out


def _iqr(xs: Sequence[float]) -> float:
  if len(xs) < 2:
    return 0.0
  q = statistics.quantiles(xs, n=4)
  return q[2] - q[0]


def round_or_none(x: float | None, n: int = 6) -> float | None:
  """``round(x, n)``, None for None (a measurement that does not exist on this device)."""
  return None if x is None else round(x, n)


# -- input pipeline --------------------------------------------------------------------------


def measure_pipeline(config, *, steps: int = 10, repeats: int = 3, data: str = "auto",
                     worker_count: int | None = None, devices=None,
                     model: str | None = None) -> dict:
  """Input pipeline throughput apart and end to end (see the module docstring)."""
  source, data_kind = bench_source(config, data=data,
                                   min_examples=(steps * repeats + 4) * config.batch_size)
  workers = config.data.worker_count if worker_count is None else worker_count
  _, engine, _ = build_for_pretraining(config, source, devices=devices)
  state = engine.init_state(jax.random.key(config.seed), example_batch_for(config, source))
  load_before = load_avg()
  iterator = make_iterator(source, global_batch_size=config.batch_size, seed=0,
                           worker_count=workers)
  try:
    next(iterator)
    t0 = time.perf_counter()
    for _ in range(steps * repeats):
      host_batch = next(iterator)
    read_s = (time.perf_counter() - t0) / (steps * repeats)

    # On-device augmentation alone (the step's preprocessing, jitted by itself).
    preprocess = make_preprocess(config)  # image views; identity for text (masking is in the loss)
    augment = jax.jit(preprocess)
    staged = jax.device_put(host_batch)
    key = jax.random.key(0)
    jax.block_until_ready(augment(staged, key))
    aug = []
    for _ in range(repeats):
      t0 = time.perf_counter()
      for _ in range(steps):
        out = augment(staged, key)
      jax.block_until_ready(out)
      aug.append((time.perf_counter() - t0) / steps)

    batch = engine.put_batch(host_batch)
    state, metrics = engine.step(state, batch)  # compile
    jax.block_until_ready(metrics)
    staged_t, e2e_t = [], []
    for _ in range(repeats):  # interleaved, so load changes hit both alike
      t0 = time.perf_counter()
      for _ in range(steps):
        state, metrics = engine.step(state, batch)
      jax.block_until_ready((state, metrics))
      staged_t.append((time.perf_counter() - t0) / steps)
      t0 = time.perf_counter()
      for _ in range(steps):
        state, metrics = engine.step(state, engine.put_batch(next(iterator)))
      jax.block_until_ready((state, metrics))
      e2e_t.append((time.perf_counter() - t0) / steps)
  finally:
    iterator.close()
  b = config.batch_size
  staged_s, e2e_s, aug_s = (statistics.median(x) for x in (staged_t, e2e_t, aug))
  return {
      "benchmark": "input_pipeline", "framework": "ssl_jax",
      "model": model or f"{config.method}/{config.encoder}", "device": jax.devices()[0].device_kind,
      "backend": jax.default_backend(), "num_devices": engine.num_devices,
      "jax": jax.__version__, "batch_size": b, "data": data_kind, "worker_count": workers,
      "example_shapes": {k: list(v) for k, v in (getattr(source, "example_shapes", None) or {
          "image": source.image_shape}).items()},
      "read_examples_per_s": round(b / read_s, 1),
      "augment_examples_per_s": round(b / aug_s, 1),
      "step_ms_staged": round(1e3 * staged_s, 3), "step_ms_end_to_end": round(1e3 * e2e_s, 3),
      "examples_per_s_staged": round(b / staged_s, 2),
      "examples_per_s_end_to_end": round(b / e2e_s, 2),
      "input_bound_ratio": round(e2e_s / staged_s, 3),
      "load_avg_1m_before": load_before, "load_avg_1m_after": load_avg(),
      "cpu_threads": peak_lib.cpu_threads(), "traces": engine.trace_count,
  }


# -- suites ----------------------------------------------------------------------------------


def _experiment(name: str, arg: str | None = None, overrides=()):
  path = os.path.join(repo_root(), "experiments", f"{name}.py")
  return config_lib.load_config(f"{path}:{arg}" if arg else path, list(overrides))


def vs_pytorch_configs(*, batch_size: int, dtype: str, text: bool = True) -> dict:
  """``{model name: (config, torch spec)}`` of the side-by-side models.

  Both frameworks run the same architecture, loss, optimizer, views (a random horizontal flip and
  the CIFAR normalization, computed inside the step from uint8 pixels) and batch; with ``text``
  also the small BERT MLM of ``experiments/mlm_pydoc.py`` (the same rows, masking and head).
  """
  from ssl_jax import recipes  # pylint: disable=import-outside-toplevel
  view = f"flip_lr(p=0.5)|{recipes.CIFAR_NORMALIZE}"
  out = {}

  c = _experiment("simclr_cifar10")
  c.batch_size, c.compute_dtype = batch_size, dtype
  c.views.a = c.views.b = view
  c.optimizer.update(name="sgd", lr=0.1, lr_scaling="none", momentum=0.9, weight_decay=1e-6,
                     warmup_epochs=0.0)
  kw = c.method_kwargs
  out["resnet18_simclr"] = (c, {
      "model": "resnet18_simclr", "encoder": "resnet18", "stem": "cifar",
      "proj": [kw.proj_hidden_dim, kw.proj_dim, kw.proj_layers, kw.proj_output_norm],
      "temperature": kw.temperature, "optimizer": "sgd", "lr": 0.1, "momentum": 0.9,
      "weight_decay": 1e-6})

  c = _experiment("moco_v3_cifar10")
  c.batch_size, c.compute_dtype = batch_size, dtype
  c.encoder = "vit_tiny"
  c.encoder_kwargs = config_lib.ml_collections.ConfigDict(dict(patch_size=4, image_size=32))
  c.method_kwargs.update(dict(temperature=0.2, proj_layers=3, pred_layers=2))
  c.views.a = c.views.b = view
  c.optimizer.update(name="adamw", lr=1.5e-4, lr_scaling="linear", weight_decay=0.1,
                     warmup_epochs=0.0, clip_norm=0.0)
  kw = c.method_kwargs
  out["vit_tiny4_moco_v3"] = (c, {
      "model": "vit_tiny4_moco_v3", "encoder": "vit_tiny", "patch_size": 4, "dim": 192,
      "depth": 12, "heads": 3, "pos_embed": "learned",
      "proj": [kw.proj_hidden_dim, kw.proj_dim, kw.proj_layers, "bn_noaffine"],
      "pred": [kw.pred_hidden_dim, kw.proj_dim, kw.pred_layers],
      "temperature": kw.temperature, "momentum": kw.base_momentum, "optimizer": "adamw",
      "lr": 1.5e-4, "weight_decay": 0.1})
  for name, (c, spec) in out.items():
    config_lib.validate(c)
    spec.update(batch_size=batch_size, dtype=dtype, image_size=32,
                normalize=[list(recipes.CIFAR_MEAN), list(recipes.CIFAR_STD)])
  if text:
    out["bert_tiny_mlm"] = _mlm_config(batch_size=batch_size, dtype=dtype)
  for c, _ in out.values():
    c.eval.online_probe = "off"  # the PyTorch reference trains no online probe
  return out


def _mlm_config(*, batch_size: int, dtype: str):
  """The small BERT MLM of ``experiments/mlm_pydoc.py`` (rows of 128 byte tokens)."""
  # pylint: disable=import-outside-toplevel
  from ssl_jax.methods import mlm, text_common
  from ssl_jax.models.text import TEXT_ENCODERS
  c = _experiment("mlm_pydoc")
  c.batch_size, c.compute_dtype = batch_size, dtype
  config_lib.validate(c)
  tok = text_common.tokenizer_for(c)
  arch = {**TEXT_ENCODERS[c.encoder], **c.encoder_kwargs.to_dict()}
  kw, opt = c.method_kwargs, c.optimizer
  spec = {"model": "bert_tiny_mlm", "encoder": c.encoder, "text": True,
          "vocab_size": int(tok.vocab_size), "max_len": arch["max_len"], "width": arch["width"],
          "depth": arch["depth"], "heads": arch["num_heads"], "mlp_dim": arch["mlp_dim"],
          "type_vocab": arch.get("type_vocab", 0), "positions": arch.get("positions", "learned"),
          "seq_len": c.text.seq_len,
          "max_predictions": mlm.max_predictions(c), "mask_rate": kw.mask_rate,
          "mask_prob": kw.mask_prob, "random_prob": kw.random_prob,
          "special_ids": [int(i) for i in tok.special_ids], "mask_id": int(tok.mask_id),
          "lr": opt.lr, "b1": opt.b1, "b2": opt.b2, "eps": opt.eps,
          "weight_decay": opt.weight_decay, "clip_norm": opt.clip_norm,
          "batch_size": batch_size, "dtype": dtype}
  if arch.get("dropout", 0.0) and c.encoder_kwargs.get("dropout", 0.1):
    raise ValueError("the PyTorch MLM reference has no dropout; the config must set it to 0.")
  return c, spec


def write_text_batch(config, path: str) -> str:
  """Saves the first global batch of ``config``'s text rows (``tokens``, ``segment_ids``,
  ``positions``) to ``path`` (``.npz``), for the PyTorch side to train on the same rows."""
  source = load_train_source(config)
  iterator = make_iterator(source, global_batch_size=config.batch_size, seed=0)
  try:
    batch = next(iterator)
  finally:
    iterator.close()
  np.savez(path, **{k: np.asarray(batch[k]) for k in ("tokens", "segment_ids", "positions")})
  return path


def methods_configs(*, batch_size: int, dtype: str, encoder: str | None,
                    names: Iterable[str] | None = None) -> dict:
  """``{method: config}``: each registered method's benchmark experiment, as its modality's
  ``BENCH_CONFIG`` hook gives it (:func:`image_bench_config`, :func:`text_bench_config`), at
  ``batch_size`` and ``dtype``. A method module's ``QUEUE_KWARG`` names a queue of
  ``method_kwargs`` that must hold at least one global batch: it is grown to two batches."""
  from ssl_jax import methods  # pylint: disable=import-outside-toplevel
  out = {}
  for name in (names or methods.METHODS):
    module = methods.get_module(name)  # a clear error for an unknown name
    bench_config = modalities.hook(modalities.get(methods.modality(name)), "BENCH_CONFIG")
    c = bench_config(name, encoder)
    c.batch_size, c.compute_dtype = batch_size, dtype
    queue = getattr(module, "QUEUE_KWARG", None)
    if queue:
      c.method_kwargs[queue] = max(c.method_kwargs[queue], 2 * batch_size)
    config_lib.validate(c)
    out[name] = c
  return out


def image_bench_config(method: str, encoder: str | None):
  """The CIFAR-10 experiment of an image ``method`` (``experiments/<method>_cifar10.py``: its
  views, heads and optimizer), its encoder replaced by ``encoder`` when given."""
  c = _experiment(f"{method}_cifar10")
  if encoder:
    c.encoder = encoder
  return c


def text_bench_config(method: str, encoder: str | None):
  """The CPU-corpus experiment of a language ``method`` (``experiments/<method>_pydoc.py`` or
  ``_pystdlib.py``; a method without one, ``nsp``, runs the ``mlm_pydoc`` recipe switched to it,
  as the README runs it). ``encoder`` is ignored: the image encoders do not apply."""
  del encoder
  found = [f"{method}_{corpus}" for corpus in ("pydoc", "pystdlib") if os.path.exists(
      os.path.join(repo_root(), "experiments", f"{method}_{corpus}.py"))]
  return (_experiment(found[0]) if found
          else _experiment("mlm_pydoc", overrides=[("method", method)]))


def run_torch_reference(spec: dict, *, steps: int, repeats: int, warmup: int,
                        device: str, threads: int, script: str | None = None,
                        timeout_s: int = 3000, config=None) -> list[dict]:
  """Runs ``benchmarks/pytorch_reference.py`` on ``spec`` in a subprocess; its JSON records.

  A subprocess keeps the two frameworks' thread pools apart. Returns ``[]`` (with a warning
  record) when torch is not installed.
  """
  script = script or os.path.join(repo_root(), "benchmarks", "pytorch_reference.py")
  if spec.get("text"):  # the same rows as the JAX side
    if config is None:
      raise ValueError("a text spec needs its config (for the batch of rows).")
    import tempfile  # pylint: disable=import-outside-toplevel
    tmp = tempfile.mkdtemp(prefix="ssl_jax_bench_")
    spec = dict(spec, batch_npz=write_text_batch(config, os.path.join(tmp, "batch.npz")))
  cmd = [sys.executable, script, "--spec", json.dumps(spec), "--steps", str(steps),
         "--repeats", str(repeats), "--warmup", str(warmup), "--device", device,
         "--threads", str(threads)]
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
  records = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
  for r in records:  # the environment it ran in (ssl-jax's own tunable is not passed on)
    r.setdefault("glibc_tunables", os.environ.get("GLIBC_TUNABLES", ""))
  if proc.returncode != 0 and not records:
    return [{"benchmark": "train_step", "framework": "pytorch", "model": spec["model"],
             "error": (proc.stderr.strip().splitlines() or ["failed"])[-1][:300]}]
  return records


def torch_available() -> bool:
  import importlib.util  # pylint: disable=import-outside-toplevel
  return importlib.util.find_spec("torch") is not None


def ratio_records(records: Sequence[dict]) -> list[dict]:
  """``ssl_jax / baseline`` throughput ratio for each model measured by both (same batch and
  dtype); one per baseline framework (``pytorch``, ``pytorch_compile``)."""
  out = []
  by_key: dict = {}
  for r in records:
    if r.get("benchmark") == "train_step" and r.get("examples_per_s"):
      by_key.setdefault((r["model"], r["batch_size"], r.get("compute_dtype")), {})[
          r["framework"]] = r
  for (model, batch, dtype), runs in by_key.items():
    for baseline in sorted(set(runs) - {"ssl_jax"}):
      if "ssl_jax" not in runs:
        continue
      ours, theirs = runs["ssl_jax"], runs[baseline]
      out.append({"benchmark": "ratio", "model": model, "batch_size": batch,
                  "compute_dtype": dtype, "device": ours["device"], "baseline": baseline,
                  "ssl_jax_examples_per_s": ours["examples_per_s"],
                  "pytorch_examples_per_s": theirs["examples_per_s"],
                  "ratio": round(ours["examples_per_s"] / theirs["examples_per_s"], 3)})
  return out
