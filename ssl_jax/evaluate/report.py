"""The visual report of a workdir: PNG figures and a Markdown summary in ``DIR/report/``.

``write_report(workdir)`` reads what the run left (``config.json``, ``metrics.jsonl``,
``eval.json`` / ``eval_<dataset>.json``, the latest checkpoint) and writes, for whatever is there:

* ``training.png``: the loss and the learning rate over steps;
* ``health.png``: the health monitors over steps (:mod:`ssl_jax.train.monitors`: embedding
  std ratio with the collapse threshold, RankMe, alignment, uniformity, teacher agreement) and the
  online probe's accuracy when the run had one;
* ``fewshot.png``: accuracy against labels per class (1 / 5 / 10 / ... / all) for each protocol,
  the pretrained features beside the random-init and raw-input baselines, error bars one
  standard deviation over the label draws (the ``<budget>_std`` entries of eval.json);
* ``embedding.png``: a 2-D projection of the pretrained encoder's test-set features (at most
  ``max_points`` examples, a fixed random subset), coloured by class; PCA (scikit-learn) by
  default, t-SNE (scikit-learn's ``TSNE``, Barnes-Hut) with ``projection="tsne"``. Features are L2-normalized first,
  as the kNN and linear probes see them;
* ``summary.md``: the run (method, dataset, encoder, steps), the last logged metrics, a warning if
  the run ended collapsed, the evaluation tables (accuracy in percent, ``mean ± std``) and the
  figures.

Figures are drawn with Matplotlib's object-oriented API on the Agg canvas (no pyplot, no global
backend switch, no display needed).
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Mapping, Sequence

import numpy as np

from ssl_jax import modalities
from ssl_jax.evaluate.fewshot import budget_sort_key
from ssl_jax.train.monitors import COLLAPSE_THRESHOLD

REPORT_DIR = "report"
PROJECTIONS = ("pca", "tsne")
SOURCE_LABELS = {"ssl": "pretrained (SSL)", "random_init": "same network, random init",
                 "raw": "raw input"}
SOURCE_COLORS = {"ssl": "tab:blue", "random_init": "tab:orange", "raw": "tab:gray"}
PROTOCOL_TITLES = {"linear": "Linear probe", "knn": "Weighted kNN (cosine)",
                   "docstring_task": "Docstring task, linear probe",
                   "docstring_task_knn": "Docstring task, weighted kNN",
                   "finetune": "Fine-tuning"}


def _ordered(keys, preferred) -> list:
  """``keys`` with those of ``preferred`` first, in its order, then the others as given."""
  keys = list(keys)
  return [k for k in preferred if k in keys] + [k for k in keys if k not in preferred]
# (metric key, panel title, y label)
HEALTH_PANELS = (
    ("embedding_std_ratio", "Collapse monitor (1 healthy, 0 collapsed)", "embedding std × √d"),
    ("rankme", "Effective rank (RankMe)", "RankMe"),
    ("alignment", "Alignment of positives (lower: closer)", "E ||f(x) − f(y)||²"),
    ("uniformity", "Uniformity (lower: more uniform)", "log E exp(−2||f(x) − f(y)||²)"),
    ("teacher_agreement", "Teacher–student agreement", "mean cosine"),
    ("online_probe_acc", "Online linear probe (train views)", "accuracy"),
)


def read_metrics(path: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """``metrics.jsonl`` -> ``{metric: (steps, values)}``, one value per step (the last logged one:
  a resumed run logs again the steps after its checkpoint), ``null`` values dropped."""
  by_step: dict[int, dict] = {}
  with open(path, encoding="utf-8") as f:
    for line in f:
      line = line.strip()
      if not line:
        continue
      try:
        row = json.loads(line)
      except json.JSONDecodeError:
        continue  # a line cut short by a crash
      if "step" in row:
        by_step.setdefault(int(row["step"]), {}).update(row)
  series: dict[str, list] = {}
  for step in sorted(by_step):
    for key, value in by_step[step].items():
      if key in ("step", "time") or not isinstance(value, (int, float)):
        continue
      series.setdefault(key, []).append((step, float(value)))
  return {k: (np.array([s for s, _ in v]), np.array([x for _, x in v])) for k, v in series.items()}


def _figure(nrows: int, ncols: int, *, width: float = 5.0, height: float = 3.6):
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  fig = Figure(figsize=(width * ncols, height * nrows), dpi=100, layout="constrained")
  FigureCanvasAgg(fig)
  axes = fig.subplots(nrows, ncols, squeeze=False)
  return fig, axes


def _save(fig, path: str) -> str:
  fig.savefig(path, format="png")
  return path


def _smooth(y: np.ndarray, frac: float = 0.02) -> np.ndarray:
  """Trailing exponential moving average (for readability of noisy per-step curves)."""
  alpha = min(1.0, max(frac, 1.0 / max(len(y), 1)) * 5)
  out = np.empty_like(y)
  acc = y[0]
  for i, v in enumerate(y):
    acc = alpha * v + (1 - alpha) * acc
    out[i] = acc
  return out


def plot_training(series, path: str, title: str) -> str | None:
  """Loss and learning rate against step."""
  if "loss" not in series:
    return None
  fig, axes = _figure(1, 2)
  ax = axes[0, 0]
  steps, loss = series["loss"]
  ax.plot(steps, loss, color="tab:blue", alpha=0.35 if len(loss) > 50 else 1.0, label="per step")
  if len(loss) > 50:
    ax.plot(steps, _smooth(loss), color="tab:blue", label="moving average")
  ax.set(title="Training loss", xlabel="step", ylabel="loss")
  ax.legend()
  ax = axes[0, 1]
  if "lr" in series:
    ax.plot(*series["lr"], color="tab:green", label="learning rate")
    ax.legend()
  ax.set(title="Learning rate", xlabel="step", ylabel="learning rate")
  fig.suptitle(title)
  return _save(fig, path)


def plot_health(series, path: str, title: str) -> str | None:
  """One panel per health monitor present in the metrics."""
  panels = [p for p in HEALTH_PANELS if p[0] in series]
  if not panels:
    return None
  ncols = min(3, len(panels))
  nrows = math.ceil(len(panels) / ncols)
  fig, axes = _figure(nrows, ncols, width=4.6, height=3.3)
  for i, (key, panel_title, ylabel) in enumerate(panels):
    ax = axes[i // ncols, i % ncols]
    steps, values = series[key]
    ax.plot(steps, values, color="tab:purple", label=key)
    if key == "embedding_std_ratio":
      ax.axhline(COLLAPSE_THRESHOLD, color="tab:red", linestyle="--",
                 label=f"collapse warning ({COLLAPSE_THRESHOLD})")
      ax.set_ylim(bottom=0)
    ax.set(title=panel_title, xlabel="step", ylabel=ylabel)
    ax.legend(fontsize="small")
  for j in range(len(panels), nrows * ncols):
    axes[j // ncols, j % ncols].set_axis_off()
  fig.suptitle(title)
  return _save(fig, path)


def _budgets(results: Mapping[str, Any]) -> list[str]:
  keys = {k for rows in results.values() if isinstance(rows, Mapping)
          for row in rows.values() if isinstance(row, Mapping)
          for k in row if not k.endswith("_std")}
  return sorted(keys, key=budget_sort_key)


def plot_fewshot(results: Mapping[str, Any], path: str, title: str) -> str | None:
  """Grouped bars: accuracy per label budget, one group per budget and a bar per feature source,
  one panel per protocol; error bars are one standard deviation over label draws."""
  protocols = _ordered((p for p, rows in results.items() if isinstance(rows, Mapping) and rows),
                       PROTOCOL_TITLES)
  if not protocols:
    return None
  fig, axes = _figure(1, len(protocols), width=5.4, height=3.8)
  for ax, protocol in zip(axes[0], protocols):
    rows = results[protocol]
    budgets = _budgets({protocol: rows})
    sources = _ordered(rows, SOURCE_LABELS)
    width = 0.8 / len(sources)
    x = np.arange(len(budgets))
    for i, source in enumerate(sources):
      row = rows[source]
      means = [100 * float(row.get(b, np.nan)) for b in budgets]
      stds = [100 * float(row.get(f"{b}_std", 0.0)) for b in budgets]
      bars = ax.bar(x + (i - (len(sources) - 1) / 2) * width, means, width, yerr=stds,
                    capsize=3, label=SOURCE_LABELS.get(source, source),
                    color=SOURCE_COLORS.get(source))
      ax.bar_label(bars, fmt="%.0f", fontsize=7, padding=2)
    ax.set_xticks(x, [b if b in ("all",) or b.endswith("%") else f"{b}/class" for b in budgets])
    ax.set(title=PROTOCOL_TITLES.get(protocol, protocol), xlabel="labels", ylabel="test accuracy (%)", ylim=(0, 108))
    ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3)
  fig.suptitle(title)
  return _save(fig, path)


def project_2d(feats: np.ndarray, *, method: str = "pca", seed: int = 0) -> np.ndarray:
  """``[N, D]`` features -> ``[N, 2]`` (L2-normalized first; PCA or t-SNE from scikit-learn)."""
  if method not in PROJECTIONS:
    raise ValueError(f"projection={method!r}; choose one of {PROJECTIONS}.")
  x = np.asarray(feats, np.float64)
  x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
  if method == "pca":
    from sklearn.decomposition import PCA  # pylint: disable=g-import-not-at-top
    return PCA(n_components=2, random_state=seed).fit_transform(x)
  from sklearn.manifold import TSNE  # pylint: disable=g-import-not-at-top
  return TSNE(n_components=2, init="pca", random_state=seed,
              perplexity=float(min(30, max(2, len(x) - 1) / 3))).fit_transform(x)


def plot_embedding(points: np.ndarray, labels: np.ndarray, path: str, title: str, *,
                   class_names: Sequence[str] | None = None, projection: str = "pca") -> str:
  """Scatter of 2-D points coloured by class (a legend up to 20 classes)."""
  fig, axes = _figure(1, 1, width=6.4, height=5.6)
  ax = axes[0, 0]
  classes = np.unique(labels)
  cmap = "tab10" if len(classes) <= 10 else ("tab20" if len(classes) <= 20 else "viridis")
  import matplotlib  # pylint: disable=g-import-not-at-top
  colors = matplotlib.colormaps[cmap]
  for i, c in enumerate(classes):
    sel = labels == c
    name = class_names[c] if class_names is not None and c < len(class_names) else str(c)
    color = colors(i % colors.N) if cmap != "viridis" else colors(i / max(len(classes) - 1, 1))
    ax.scatter(points[sel, 0], points[sel, 1], s=8, color=color, label=name, alpha=0.8)
  if len(classes) <= 20:
    ax.legend(title="class", fontsize="small", markerscale=2, loc="center left",
              bbox_to_anchor=(1.0, 0.5))
  axis = "PC" if projection == "pca" else "t-SNE "
  ax.set(title=title, xlabel=f"{axis}1", ylabel=f"{axis}2")
  return _save(fig, path)


def embed_test_split(workdir: str, config, *, max_points: int, seed: int = 0):
  """The pretrained encoder's features of (a fixed subset of) the test split: ``(feats, labels,
  class_names, step)``."""
  from ssl_jax.evaluate.features import (  # pylint: disable=g-import-not-at-top
      checkpoint_step, eval_source, extract_features)
  from ssl_jax.train.workdir import restore_run  # pylint: disable=g-import-not-at-top
  step = checkpoint_step(workdir)  # before reading any data
  source = eval_source(config, config.test_split)
  n = len(source)
  idx = np.arange(n)
  if n > max_points:
    idx = np.sort(np.random.default_rng(seed).choice(n, max_points, replace=False))
  examples = source.__getitems__([int(i) for i in idx])
  images = np.stack([ex["image"] for ex in examples])
  labels = np.array([int(ex["label"]) for ex in examples])
  run = restore_run(workdir, images.shape[1:], step=step, config=config)
  feats = extract_features(run.features_fn(), images,
                           batch_size=config.eval.batch_size, preprocess=config.eval_preprocess)
  return feats, labels, getattr(source, "class_names", None), run.step


def results_markdown(results: Mapping[str, Any]) -> str:
  """A Markdown table of an eval.json dict: one row per (protocol, source), one column per
  budget, accuracy in percent as ``mean ± std``; scalar metrics listed below."""
  from ssl_jax.evaluate.table import format_cell  # pylint: disable=g-import-not-at-top
  budgets = _budgets(results)
  lines = []
  protocols = _ordered((p for p, by in results.items() if isinstance(by, Mapping)),
                       PROTOCOL_TITLES)
  rows = [(p, s, results[p][s]) for p in protocols for s in _ordered(results[p], SOURCE_LABELS)
          if isinstance(results[p][s], Mapping)]
  if rows:
    lines.append("| protocol | features | " + " | ".join(budgets) + " |")
    lines.append("|---" * (len(budgets) + 2) + "|")
    for p, s, row in rows:
      lines.append(f"| {p} | {SOURCE_LABELS.get(s, s)} | "
                   + " | ".join(format_cell(row, b) for b in budgets) + " |")
  for key, value in results.items():
    if not isinstance(value, Mapping):
      lines.append(f"- {key}: {value:.4g}" if isinstance(value, (int, float))
                   else f"- {key}: {value}")
  return "\n".join(lines)


def write_report(workdir: str, *, projection: str = "pca", max_points: int = 2000,
                 embedding: bool = True, config=None) -> str:
  """Writes ``DIR/report/`` (figures and ``summary.md``) from what ``workdir`` holds.

  Args:
    workdir: a pretraining workdir (must hold ``config.json``).
    projection: ``"pca"`` or ``"tsne"`` for the embedding figure.
    max_points: at most this many test examples in the embedding figure.
    embedding: draw the embedding figure (needs a committed checkpoint; skipped with a note in the
      summary when there is none).
    config: the run config (default: ``DIR/config.json``; ``ssl-jax report`` passes it with its
      ``--config.*`` overrides, :func:`ssl_jax.evaluate.runner.eval_config`).

  Returns:
    The path of ``summary.md``.

  Raises:
    FileNotFoundError: ``workdir`` is not a directory or has no ``config.json``.
    ValueError: an unknown ``projection`` or a non-positive ``max_points``.
  """
  from ssl_jax.train.workdir import load_run_config  # pylint: disable=g-import-not-at-top
  if projection not in PROJECTIONS:
    raise ValueError(f"projection={projection!r}; choose one of {PROJECTIONS}.")
  if max_points < 2:
    raise ValueError(f"max_points must be >= 2, got {max_points}.")
  workdir = os.path.abspath(workdir)
  if not os.path.isdir(workdir):
    raise FileNotFoundError(f"{workdir} is not a directory: give a pretraining workdir.")
  config = config if config is not None else load_run_config(workdir)
  out = os.path.join(workdir, REPORT_DIR)
  os.makedirs(out, exist_ok=True)
  run_name = f"{config.method} on {config.dataset}"
  figures: list[tuple[str, str]] = []
  notes: list[str] = []

  metrics_path = os.path.join(workdir, "metrics.jsonl")
  series = read_metrics(metrics_path) if os.path.exists(metrics_path) else {}
  if not series:
    notes.append("No metrics.jsonl: no training curves.")
  for name, fn, caption in (("training.png", plot_training, "Loss and learning rate"),
                            ("health.png", plot_health, "Health monitors")):
    if fn(series, os.path.join(out, name), f"{caption}: {run_name}"):
      figures.append((caption, name))

  evals = {}
  for fname in sorted(os.listdir(workdir)):
    if fname == "eval.json" or (fname.startswith("eval_") and fname.endswith(".json")):
      with open(os.path.join(workdir, fname), encoding="utf-8") as f:
        evals[fname] = json.load(f)
  if "eval.json" in evals and plot_fewshot(
      evals["eval.json"], os.path.join(out, "fewshot.png"),
      f"Few-label accuracy on {config.dataset} (test split): {config.method}"):
    figures.append(("Few-label accuracy", "fewshot.png"))
  if not evals:
    notes.append("No eval.json: run `ssl-jax eval --workdir DIR` for the accuracy chart.")

  no_embedding = modalities.of(config).NO_EMBEDDING_FIGURE
  if embedding and no_embedding:
    embedding = False
    notes.append(no_embedding)
  if embedding:
    try:
      feats, labels, names, step = embed_test_split(workdir, config, max_points=max_points)
    except FileNotFoundError as e:
      notes.append(f"No embedding figure: {e}")
    else:
      points = project_2d(feats, method=projection)
      plot_embedding(points, labels, os.path.join(out, "embedding.png"),
                     f"{projection.upper() if projection == 'pca' else 't-SNE'} of test features "
                     f"({len(labels)} examples): {run_name}, step {step}",
                     class_names=names, projection=projection)
      figures.append((f"Test-set features ({projection})", "embedding.png"))

  lines = [f"# Report: {run_name}", "",
           f"- workdir: `{workdir}`",
           f"- encoder: `{config.encoder}`, batch {config.batch_size}, "
           f"{config.total_steps or config.epochs} {'steps' if config.total_steps else 'epochs'}, "
           f"optimizer {config.optimizer.name} (lr {config.optimizer.lr:g})"]
  if series:
    last_step = int(max(s[-1] for s, _ in series.values()))
    lines += ["", "## Training", "", f"Last logged step: {last_step}.", "",
              "| metric | last value |", "|---|---|"]
    for key in ("loss", "lr", *(p[0] for p in HEALTH_PANELS), "online_probe_loss"):
      if key in series:
        lines.append(f"| {key} | {series[key][1][-1]:.4g} |")
    ratio = series.get("embedding_std_ratio")
    if ratio is not None and ratio[1][-1] < COLLAPSE_THRESHOLD:
      lines += ["", f"**Warning: representation collapse suspected** (embedding std ratio "
                    f"{ratio[1][-1]:.3f} < {COLLAPSE_THRESHOLD})."]
  for fname, results in evals.items():
    lines += ["", f"## Evaluation (`{fname}`)", "",
              "Test accuracy (%), mean ± standard deviation over label draws.", "",
              results_markdown(results)]
  if figures:
    lines += ["", "## Figures", ""]
    lines += [f"![{caption}]({name})" for caption, name in figures]
  if notes:
    lines += ["", "## Notes", "", *(f"- {n}" for n in notes)]
  summary = os.path.join(out, "summary.md")
  with open(summary, "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")
  return summary
