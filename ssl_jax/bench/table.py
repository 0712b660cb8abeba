"""Markdown tables from benchmark JSON lines, and regenerating ``benchmarks/README.md``.

The README keeps hand-written prose; the tables live between ``<!-- bench:tables:begin -->`` and
``<!-- bench:tables:end -->`` and are rewritten from every ``benchmarks/results/*.jsonl`` file by
``ssl-jax bench --render benchmarks/README.md`` (or ``python benchmarks/render_readme.py``).
"""

from __future__ import annotations

import glob
import json
import os
from typing import Iterable, Sequence

BEGIN, END = "<!-- bench:tables:begin -->", "<!-- bench:tables:end -->"


def read_jsonl(paths: Iterable[str]) -> list[dict]:
  """All records of the given JSON-lines files, each tagged with ``source`` (the file name)."""
  records = []
  for path in paths:
    with open(path, encoding="utf-8") as f:
      for line in f:
        if line.strip():
          rec = json.loads(line)
          rec.setdefault("source", os.path.basename(path))
          records.append(rec)
  return records


def _fmt(x, spec: str = "") -> str:
  if x is None:
    return "-"
  if isinstance(x, float) and spec:
    return format(x, spec)
  return str(x)


def _mem(r: dict) -> str:
  if r.get("peak_memory_bytes"):
    return f"{r['peak_memory_bytes'] / 2**30:.2f} GiB"
  if r.get("xla_temp_bytes") is not None:
    return f"({(r['xla_temp_bytes'] + r.get('xla_argument_bytes', 0)) / 2**30:.2f} GiB)"
  return "-"


def _row(cells: Sequence[str]) -> str:
  return "| " + " | ".join(cells) + " |"


def step_table(records: Sequence[dict]) -> str:
  """One row per train-step record (both frameworks)."""
  head = ["model", "framework", "device", "parallel", "batch", "dtype", "step ms (min-max)",
          "examples/s", "compile s", "model GFLOP", "MFU", "memory", "traces", "load 1m"]
  steps = [r for r in records if r.get("benchmark") == "train_step"]
  extras = [(key, name) for key, name in (("xla_flags", "XLA_FLAGS"),
                                          ("glibc_tunables", "GLIBC_TUNABLES"),
                                          ("cpu_kernels", "cpu_kernels"))
            if any(r.get(key) for r in steps)]
  head += [name for _, name in extras]
  lines = [_row(head), _row(["---"] * len(head))]
  for r in steps:
    extra = [f"`{r[key]}`" if r.get(key) else "-" for key, _ in extras]
    if "error" in r:
      lines.append(_row([r["model"], r.get("framework", "-"), "error: " + r["error"][:80]]
                        + ["-"] * (len(head) - 3)))
      continue
    load = r.get("load_avg_1m_before"), r.get("load_avg_1m_after")
    eps = r["examples_per_s"]
    if r.get("tokens_per_s"):
      eps = f"{eps} ({r['tokens_per_s']:.0f} tok/s)"
    lines.append(_row([
        r["model"], r["framework"], f"{r['device']} x{r.get('num_devices', 1)}"
        + (f" ({r['cpu_threads']} thr)" if r.get("backend") == "cpu" else ""),
        r.get("parallel", "-"), str(r["batch_size"]), r.get("compute_dtype", "-"),
        f"{r['step_ms']:.1f} ({r['step_ms_min']:.1f}-{r['step_ms_max']:.1f})", str(eps),
        _fmt(r.get("compile_s"), ".1f"),
        _fmt(r["model_flops"] / 1e9 if r.get("model_flops") else None, ".2f"),
        _fmt(100 * r["mfu"] if r.get("mfu") is not None else None, ".1f") + (
            "%" if r.get("mfu") is not None else ""),
        _mem(r), _fmt(r.get("traces")),
        "-" if load[0] is None else f"{load[0]:.1f}/{load[1]:.1f}"] + extra))
  return "\n".join(lines)


def ratio_table(records: Sequence[dict]) -> str:
  head = ["model", "device", "batch", "dtype", "baseline", "ssl_jax examples/s",
          "baseline examples/s", "ssl_jax / baseline"]
  lines = [_row(head), _row(["---"] * len(head))]
  for r in records:
    if r.get("benchmark") == "ratio":
      lines.append(_row([r["model"], r["device"], str(r["batch_size"]), str(r["compute_dtype"]),
                         r.get("baseline", "pytorch"), str(r["ssl_jax_examples_per_s"]),
                         str(r["pytorch_examples_per_s"]),
                         f"**{r['ratio']:.2f}**"]))
  return "\n".join(lines)


def pipeline_table(records: Sequence[dict]) -> str:
  head = ["model", "device", "batch", "Grain read ex/s", "augment ex/s", "step ms staged",
          "step ms end-to-end", "end-to-end / staged", "load 1m"]
  lines = [_row(head), _row(["---"] * len(head))]
  for r in records:
    if r.get("benchmark") == "input_pipeline":
      lines.append(_row([
          r["model"], f"{r['device']} x{r['num_devices']}", str(r["batch_size"]),
          str(r["read_examples_per_s"]), str(r["augment_examples_per_s"]),
          f"{r['step_ms_staged']:.1f}", f"{r['step_ms_end_to_end']:.1f}",
          f"**{r['input_bound_ratio']:.2f}**",
          f"{r['load_avg_1m_before']:.1f}/{r['load_avg_1m_after']:.1f}"
          if r.get("load_avg_1m_before") is not None else "-"]))
  return "\n".join(lines)


def peak_table(records: Sequence[dict]) -> str:
  head = ["device", "peak GFLOP/s", "source"]
  lines = [_row(head), _row(["---"] * len(head))]
  for r in records:
    if r.get("benchmark") == "peak":
      lines.append(_row([r["device"] + (f" ({r['cpu_threads']} thr)" if r.get("cpu_threads")
                                        else ""),
                         _fmt(r["peak_flops_per_s"] / 1e9 if r.get("peak_flops_per_s")
                              else None, ".1f"), r["peak_source"]]))
  return "\n".join(lines)


def probe_table(records: Sequence[dict]) -> str:
  """Records of ``benchmarks/cpu_probe.py`` (encoder alone, forward and forward + backward)."""
  head = ["model", "framework", "XLA_FLAGS", "devices", "batch", "fwd ms", "fwd GFLOP/s",
          "fwd+bwd ms", "fwd+bwd GFLOP/s", "fwd+bwd / fwd", "fwd+bwd MFU", "load 1m"]
  lines = [_row(head), _row(["---"] * len(head))]
  for r in records:
    if "fwd_bwd_ms" in r:
      lines.append(_row([r["model"], r["framework"], f"`{r['xla_flags']}`" if r["xla_flags"]
                         else "-", str(r.get("devices", 1)), str(r["batch"]),
                         f"{r['fwd_ms']:.0f}", str(r["fwd_gflops"]),
                         f"{r['fwd_bwd_ms']:.0f}", str(r["fwd_bwd_gflops"]),
                         f"{r['bwd_over_fwd']:.2f}", f"{100 * r['fwd_bwd_mfu']:.0f}%",
                         f"{r['load_1m']:.1f}"]))
  return "\n".join(lines)


def markdown(records: Sequence[dict]) -> str:
  """All tables for one set of records (sections without records are left out)."""
  parts = []
  kinds = {r.get("benchmark") for r in records}
  if "peak" in kinds:
    parts.append("Peak (MFU denominator):\n\n" + peak_table(records))
  if "ratio" in kinds:
    parts.append("Side by side:\n\n" + ratio_table(records))
  if "train_step" in kinds:
    parts.append("Train steps:\n\n" + step_table(records))
  if "input_pipeline" in kinds:
    parts.append("Input pipeline:\n\n" + pipeline_table(records))
  if any("fwd_bwd_ms" in r for r in records):
    parts.append("Encoder alone (benchmarks/cpu_probe.py):\n\n" + probe_table(records))
  return "\n\n".join(parts) + "\n"


def render_results(results_dir: str) -> str:
  """One section per JSONL file of ``results_dir`` (sorted by name), with its run's metadata."""
  sections = []
  for path in sorted(glob.glob(os.path.join(results_dir, "*.jsonl"))):
    records = read_jsonl([path])
    runs = [r for r in records if r.get("benchmark") == "run"]
    if not runs and records:  # e.g. cpu_probe.py lines
      runs = [{"jax": records[0].get("jax"), "note": "XLA_FLAGS per row"}]
    title = f"### `{os.path.basename(path)}`"
    info = "\n".join("- " + ", ".join(f"{k}: {meta[k]}" for k in (
        "date", "device", "jax", "torch", "suite", "note") if meta.get(k)) for meta in runs)
    sections.append(title + ("\n\n" + info if info else "") + "\n\n" + markdown(records))
  return "\n".join(sections)


def update_readme(readme: str, results_dir: str | None = None) -> str:
  """Rewrites the generated part of ``readme`` from ``results_dir`` (default: ``results/`` next to
  it); returns the new text. Raises ``ValueError`` if the markers are missing."""
  results_dir = results_dir or os.path.join(os.path.dirname(os.path.abspath(readme)), "results")
  with open(readme, encoding="utf-8") as f:
    text = f.read()
  if BEGIN not in text or END not in text:
    raise ValueError(f"{readme} has no {BEGIN} ... {END} markers.")
  head, rest = text.split(BEGIN, 1)
  _, tail = rest.split(END, 1)
  new = (head + BEGIN + "\n<!-- generated by `ssl-jax bench --render`; do not edit -->\n\n"
         + render_results(results_dir) + "\n" + END + tail)
  with open(readme, "w", encoding="utf-8") as f:
    f.write(new)
  return new
