"""Run logging: ``metrics.jsonl``, TensorBoard event files (tensorboardX, no TensorFlow), tqdm.

Only process 0 writes. Each JSON line is ``{"step": int, "time": unix_seconds, <metric>: float}``.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Mapping

import jax


class MetricsLogger:
  """Writes scalar metrics to ``DIR/metrics.jsonl`` and ``DIR/tensorboard/``; drives a progress bar.

  Args:
    workdir: the run directory.
    total_steps: for the progress bar.
    initial_step: where a resumed run starts.
    tensorboard: write TensorBoard event files too.
    quiet: no progress bar (also off when stderr is not a terminal).
  """

  def __init__(self, workdir: str, *, total_steps: int, initial_step: int = 0,
               tensorboard: bool = True, quiet: bool = False):
    self.enabled = jax.process_index() == 0
    self.collapse_warned = False  # the loop warns once per collapse episode
    self._file = self._tb = self._bar = None
    if not self.enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    self._file = open(os.path.join(workdir, "metrics.jsonl"), "a", encoding="utf-8")
    if tensorboard:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
    if not quiet and sys.stderr.isatty():
      from tqdm import tqdm  # pylint: disable=g-import-not-at-top
      self._bar = tqdm(total=total_steps, initial=initial_step, unit="step", dynamic_ncols=True)

  def write(self, step: int, metrics: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    clean = {k: _scalar(v) for k, v in metrics.items()}
    self._file.write(json.dumps({"step": int(step), "time": round(time.time(), 3), **clean}) + "\n")
    self._file.flush()
    if self._tb is not None:
      for k, v in clean.items():
        if v is not None:
          self._tb.add_scalar(k, v, step)

  def progress(self, step: int, metrics: Mapping[str, float], warning: str = "") -> None:
    if self._bar is None:
      return
    self._bar.n = int(step)
    post = {"loss": f"{_scalar(metrics.get('loss')):.4f}"}
    if metrics.get("examples_per_s"):
      post["ex/s"] = f"{metrics['examples_per_s']:.0f}"
    if warning:
      post["!"] = warning
    self._bar.set_postfix(post, refresh=False)
    self._bar.refresh()

  def message(self, text: str) -> None:
    """A line for the user (above the progress bar when there is one)."""
    if not self.enabled:
      return
    if self._bar is not None:
      self._bar.write(text)
    else:
      print(text, flush=True)

  def close(self) -> None:
    for h in (self._bar, self._tb, self._file):
      if h is not None:
        h.close()
    self._file = self._tb = self._bar = None


def _scalar(v):
  try:
    f = float(v)
  except (TypeError, ValueError):
    return None
  return f if math.isfinite(f) else None  # JSON has no NaN/inf: null marks them
