"""The benchmark harness runs and reports its fields (no timing assertions: speed is measured in
benchmarks/, not asserted in tests)."""

import importlib.util
import os

ROOT = os.path.join(os.path.dirname(__file__), "..")


def _load(name):
  spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "benchmarks", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_step_benchmark_reports_compile_time_apart_and_one_trace(make_config):
  config = make_config()
  record = _load("step").measure(config, steps=2, repeats=2)
  assert record["num_devices"] == 8 and record["traces"] == 1
  assert record["compile_s"] > 0 and record["step_ms_min"] <= record["step_ms"] <= record[
      "step_ms_max"]
  assert record["examples_per_s"] > 0
