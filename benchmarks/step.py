"""Train-step throughput of any config: compile time apart, median of repeated timed steps.

  python benchmarks/step.py [--config FILE[:ARG]] [--steps 20] [--repeats 5] [--config.KEY=V ...]

Prints one JSON line: device kind and count, JAX version, method, encoder, batch size, parallel
mode, ``compile_s`` (first step, compilation included), and over ``repeats`` timed windows of
``steps`` steps each (after one warm-up window): ``step_ms`` median and spread, ``examples_per_s``.
The batch is real data staged on the devices once, so the input pipeline is not timed here.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import jax

from ssl_jax import config as config_lib
from ssl_jax.data import make_iterator
from ssl_jax.train.loop import build, example_batch_for, load_train_source


def measure(config, *, steps: int, repeats: int) -> dict:
  source = load_train_source(config)
  _, engine, _ = build(config, len(source))
  state = engine.init_state(jax.random.key(config.seed), example_batch_for(config, source))
  batch = engine.put_batch(next(make_iterator(source, global_batch_size=config.batch_size,
                                              seed=0)))
  t0 = time.perf_counter()
  state, metrics = engine.step(state, batch)
  jax.block_until_ready(metrics)
  compile_s = time.perf_counter() - t0
  windows = []
  for _ in range(repeats + 1):  # the first window warms up
    t0 = time.perf_counter()
    for _ in range(steps):
      state, metrics = engine.step(state, batch)
    jax.block_until_ready((state, metrics))
    windows.append((time.perf_counter() - t0) / steps)
  per_step = windows[1:]
  median = statistics.median(per_step)
  return {
      "benchmark": "train_step", "device": jax.devices()[0].device_kind,
      "num_devices": engine.num_devices, "jax": jax.__version__, "method": config.method,
      "encoder": config.encoder, "dataset": config.dataset, "batch_size": config.batch_size,
      "parallel": config.parallel, "compute_dtype": config.compute_dtype,
      "compile_s": round(compile_s, 3), "step_ms": round(1e3 * median, 3),
      "step_ms_min": round(1e3 * min(per_step), 3), "step_ms_max": round(1e3 * max(per_step), 3),
      "examples_per_s": round(config.batch_size / median, 1), "steps_per_window": steps,
      "windows": repeats, "traces": engine.trace_count,
  }


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--config", default=None)
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--repeats", type=int, default=5)
  args, rest = parser.parse_known_args(argv)
  config = config_lib.load_config(args.config, config_lib.parse_overrides(rest))
  print(json.dumps(measure(config, steps=args.steps, repeats=args.repeats)))


if __name__ == "__main__":
  main(sys.argv[1:])
