"""Train-step throughput of any config: compile time apart, median of repeated timed windows.

  python benchmarks/step.py [--config FILE[:ARG]] [--steps 20] [--repeats 5] [--config.KEY=V ...]

A thin script over :func:`ssl_jax.bench.harness.measure_step` (the same as ``ssl-jax bench
--suite config``): prints one JSON line with device kind and count, JAX version, method, encoder,
batch size, parallel mode, ``compile_s`` (first step minus a steady step), ``step_ms`` median and
spread over ``repeats`` windows of ``steps`` steps (after warm-up), ``examples_per_s``, model FLOPs
and MFU, XLA's FLOPs and memory, trace count. The batch is staged on the devices once, so the
input pipeline is not timed here (``ssl-jax bench`` measures it apart).
"""

from __future__ import annotations

import argparse
import json
import sys

from ssl_jax import config as config_lib
from ssl_jax.bench import harness


def measure(config, *, steps: int, repeats: int, warmup: int = 1) -> dict:
  return harness.measure_step(config, steps=steps, repeats=repeats, warmup=warmup)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--config", default=None)
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--warmup", type=int, default=2)
  args, rest = parser.parse_known_args(argv)
  config = config_lib.load_config(args.config, config_lib.parse_overrides(rest))
  print(json.dumps(measure(config, steps=args.steps, repeats=args.repeats, warmup=args.warmup)))


if __name__ == "__main__":
  main(sys.argv[1:])
