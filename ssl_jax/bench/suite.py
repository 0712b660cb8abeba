"""The benchmark suites of ``ssl-jax bench`` (see :mod:`ssl_jax.bench`)."""

from __future__ import annotations

import datetime
import json
import sys
from typing import Callable, Sequence

import jax

from ssl_jax.bench import PARALLEL_MODES, SUITES, harness
from ssl_jax.bench import peak as peak_lib


def run_suite(suite: str, out: str, *, batch_sizes: Sequence[int] = (64,),
              parallel: Sequence[str] = ("shard_map",), dtype: str = "float32",
              steps: int = 10, repeats: int = 5, warmup: int = 2, data: str = "auto",
              encoder: str | None = None, methods: Sequence[str] | None = None,
              models: Sequence[str] | None = None, config=None, pytorch: bool = True,
              pipeline: bool = True, xla_cost: bool = True, note: str = "",
              torch_compile: bool = False, workers: int | None = None,
              log: Callable[[str], None] | None = None) -> list[dict]:
  """Runs one suite, appending JSON lines to ``out``; returns the records.

  Args:
    suite: ``"vs-pytorch"`` (ResNet-18 SimCLR and ViT-Tiny/4 MoCo v3 at 32x32, the small BERT MLM
      of ``experiments/mlm_pydoc.py``, each also in PyTorch when it is installed, and their
      throughput ratios), ``"methods"`` (every registered
      method on its CIFAR-10 recipe), or ``"config"`` (``config`` as given).
    out: JSON-lines file (appended to).
    batch_sizes: global batch sizes to run.
    parallel: parallel modes (``shard_map``, ``pmap``, ``gspmd``).
    dtype: compute dtype (``float32`` or ``bfloat16``); the PyTorch side uses the same.
    steps, repeats, warmup: timing windows (see :func:`ssl_jax.bench.harness.measure_step`).
    data: ``auto`` | ``real`` | ``synthetic`` pixels.
    encoder: ``methods`` suite: override every recipe's encoder (e.g. ``resnet_tiny`` on CPU).
    methods: ``methods`` suite: a subset of the registered methods.
    models: ``vs-pytorch`` suite: a subset of the models.
    config: ``config`` suite: the run config.
    pytorch: run the PyTorch reference where torch is installed.
    pipeline: also measure the input pipeline (for the first model/method).
    xla_cost: compile each step ahead of time for XLA's FLOPs and memory analysis.
    note: free text stored in the run record (e.g. "2 cores pinned with taskset").
    torch_compile: also time the PyTorch step under ``torch.compile`` (framework
      ``pytorch_compile``).
    workers: Grain worker processes for the input-pipeline benchmark (default: the config's).
    log: progress messages (default: stderr).
  """
  if suite not in SUITES:
    raise ValueError(f"Unknown suite {suite!r}; valid: {', '.join(SUITES)}.")
  bad = sorted(set(parallel) - set(PARALLEL_MODES))
  if bad:
    raise ValueError(f"Unknown parallel mode(s) {bad}; valid: {', '.join(PARALLEL_MODES)}.")
  if suite == "config" and config is None:
    raise ValueError("suite 'config' needs a config (--config FILE).")
  log = log or (lambda m: print(m, file=sys.stderr, flush=True))
  records: list[dict] = []

  def emit(rec: dict) -> None:
    records.append(rec)
    with open(out, "a", encoding="utf-8") as f:
      f.write(json.dumps(rec, sort_keys=True) + "\n")

  torch_version = None
  if suite == "vs-pytorch" and pytorch and harness.torch_available():
    import importlib.metadata  # pylint: disable=import-outside-toplevel
    torch_version = importlib.metadata.version("torch")
  emit({"benchmark": "run", "suite": suite, "date": datetime.datetime.now(
      datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "device": jax.devices()[0].device_kind,
        "num_devices": jax.device_count(), "jax": jax.__version__, "torch": torch_version,
        "note": note, "argv": sys.argv[1:]})
  peak = peak_lib.device_peak()
  emit({"benchmark": "peak", **peak})
  log(f"peak: {peak['peak_source']}")

  jobs = []  # (name, config, torch spec or None)
  for b in batch_sizes:
    if suite == "vs-pytorch":
      for name, (c, spec) in harness.vs_pytorch_configs(batch_size=b, dtype=dtype).items():
        if not models or name in models:
          jobs.append((name, c, spec))
    elif suite == "methods":
      for name, c in harness.methods_configs(batch_size=b, dtype=dtype, encoder=encoder,
                                             names=methods).items():
        jobs.append((f"{name}/{c.encoder}", c, None))
    else:
      c = config.copy_and_resolve_references()
      c.batch_size = b
      jobs.append((f"{c.method}/{c.encoder}", c, None))

  step_records = []
  for i, (name, c, spec) in enumerate(jobs):
    for mode in parallel:
      c.parallel = mode
      log(f"[{i + 1}/{len(jobs)}] {name} batch {c.batch_size} {mode} {c.compute_dtype}")
      rec = harness.measure_step(c, steps=steps, repeats=repeats, warmup=warmup, data=data,
                                 peak=peak, xla_cost=xla_cost, model=name)
      emit(rec)
      step_records.append(rec)
      log(f"  {rec['step_ms']:.1f} ms/step, {rec['examples_per_s']} ex/s, MFU {rec['mfu']}, "
          f"compile {rec['compile_s']} s, traces {rec['traces']}")
    if spec is not None and pytorch:
      if not harness.torch_available():
        log("  torch is not installed: PyTorch reference skipped (pip install ssl-jax[bench])")
      else:
        device = "cuda" if jax.default_backend() == "gpu" else "cpu"
        variants = [spec] + ([dict(spec, compile=True)] if torch_compile else [])
        torch_records = [rec for v in variants for rec in harness.run_torch_reference(
            v, steps=steps, repeats=repeats, warmup=warmup, device=device,
            threads=peak_lib.cpu_threads(), config=c)]
        for rec in torch_records:
          rec.setdefault("batch_size", c.batch_size)
          rec.setdefault("compute_dtype", dtype)
          if rec.get("model_flops") is None:
            rec["model_flops"] = step_records[-1]["model_flops"]
          if rec.get("step_ms"):
            rec["peak_flops_per_s"] = peak["peak_flops_per_s"]
            rec["mfu"] = harness.round_or_none(peak_lib.mfu(
                rec["model_flops"], rec["step_ms"] / 1e3, peak["peak_flops_per_s"]))
          emit(rec)
          step_records.append(rec)
          log(f"  {rec.get('framework')}: {rec.get('step_ms')} ms/step, "
              f"{rec.get('examples_per_s')} ex/s "
              f"{rec.get('error', '')}")
    if pipeline and i == 0:
      c.parallel = parallel[0]
      log(f"  input pipeline of {name}")
      emit(harness.measure_pipeline(c, steps=steps, repeats=max(2, repeats // 2), data=data,
                                    model=name, worker_count=workers))
  for rec in harness.ratio_records(step_records):
    emit(rec)
    log(f"ratio {rec['model']}: ssl_jax/pytorch = {rec['ratio']}")
  return records
