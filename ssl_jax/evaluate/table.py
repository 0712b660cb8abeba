"""Fixed-width text table of an eval.json results dict.

Rows are (protocol, source) pairs in the dict's order; columns are the budgets present in any row,
ordered ``1, 5, 10, ...``, then percentages, then ``all``. Cells show accuracy in percent as
``"mean ± std"`` (one decimal) when a ``<budget>_std`` entry exists, else the mean alone; a missing
budget is ``-``. A caption line (:data:`CAPTION`) comes first. Top-level scalar metrics (e.g.
``val_perplexity``) are listed below the table.

Example::

    accuracy (%), mean ± std over label draws
    protocol  source       1           5           all
    --------  -----------  ----------  ----------  ----
    linear    raw          69.9 ± 1.4  85.0 ± 1.0  96.7
    knn       raw          69.2 ± 1.8  86.3 ± 3.1  98.0
"""

from __future__ import annotations

from typing import Any, Mapping

from ssl_jax.evaluate.fewshot import budget_sort_key

CAPTION = "accuracy (%), mean ± std over label draws"


def format_cell(row: Mapping[str, Any], budget: str) -> str:
  """One table cell: ``row[budget]`` as a percentage with its ``<budget>_std`` ("-" if absent)."""
  if budget not in row:
    return "-"
  mean = 100.0 * float(row[budget])
  std_key = f"{budget}_std"
  if std_key in row:
    return f"{mean:.1f} ± {100.0 * float(row[std_key]):.1f}"
  return f"{mean:.1f}"


def format_table(results: Mapping[str, Any]) -> str:
  """Formats ``{protocol: {source: {budget: acc, "<budget>_std": std}}}`` as a text table.

  Args:
    results: an eval.json dict; top-level entries that are not dicts are scalar metrics.

  Returns:
    The caption, header and one line per (protocol, source) (accuracies in percent), then one
    ``name: value`` line per scalar metric; no trailing newline.
  """
  rows, scalars = [], []
  for protocol, by_source in results.items():
    if isinstance(by_source, Mapping):
      for source, row in by_source.items():
        rows.append((str(protocol), str(source), row))
    else:
      scalars.append((str(protocol), by_source))
  budgets = sorted({k for _, _, row in rows for k in row if not k.endswith("_std")},
                   key=budget_sort_key)
  header = ["protocol", "source", *budgets]
  body = [[p, s, *(format_cell(row, b) for b in budgets)] for p, s, row in rows]
  widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

  def fmt(line: list[str]) -> str:
    return "  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip()

  lines = []
  if rows:
    lines = [CAPTION, fmt(header), fmt(["-" * w for w in widths]), *(fmt(line) for line in body)]
  for name, value in scalars:
    lines.append(f"{name}: {value:.4g}" if isinstance(value, (int, float)) else f"{name}: {value}")
  return "\n".join(lines)


BASELINES = (("random_init", "same network, random init"), ("raw", "raw pixels"))
PROTOCOL_ORDER = {"linear": 0, "knn": 1}  # columns: the linear probe first


def compare_markdown(runs: Mapping[str, Mapping[str, Any]]) -> str:
  """A Markdown table comparing runs: one row per run's ``ssl`` features, then the baselines.

  Args:
    runs: ``{row name: eval.json dict}`` in row order. The baselines (``random_init``, ``raw``)
      are taken from the first run; they are the same for every run only when the runs share
      the dataset, the encoder, the seed and the label draws: a run whose baselines differ is
      refused rather than shown against someone else's.

  Returns:
    ``| features | <protocol> <budget> | ... |`` (linear probe, then kNN, then any other
    protocol), accuracies in percent as ``mean ± std``.

  Raises:
    ValueError: no runs, a run without ``ssl`` rows, or runs with different baselines.
  """
  if not runs:
    raise ValueError("compare_markdown: no runs given.")
  names = list(runs)
  first = runs[names[0]]
  protocols = sorted((p for p, v in first.items() if isinstance(v, Mapping)),
                     key=lambda p: PROTOCOL_ORDER.get(p, len(PROTOCOL_ORDER)))
  for name in names:
    for protocol in protocols:
      if "ssl" not in runs[name].get(protocol, {}):
        raise ValueError(f"run {name!r} has no {protocol}/ssl results.")
      for source, _ in BASELINES:
        if runs[name][protocol].get(source) != first[protocol].get(source):
          raise ValueError(f"run {name!r}: its {protocol}/{source} baseline differs from "
                           f"{names[0]!r}'s; compare runs of the same dataset, encoder and draws.")
  columns = [(p, b) for p in protocols for b in sorted(
      (k for k in first[p]["ssl"] if not k.endswith("_std")), key=budget_sort_key)]
  lines = ["| features | " + " | ".join(f"{p} {b}" for p, b in columns) + " |",
           "|---" * (len(columns) + 1) + "|"]
  rows = [(name, runs[name], "ssl") for name in names]
  rows += [(label, first, source) for source, label in BASELINES
           if all(source in first[p] for p in protocols)]
  for label, results, source in rows:
    cells = [format_cell(results[p][source], b) for p, b in columns]
    lines.append(f"| {label} | " + " | ".join(cells) + " |")
  return "\n".join(lines)
