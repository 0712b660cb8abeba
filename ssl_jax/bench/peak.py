"""The peak FLOP/s that MFU divides by: measured on CPU, looked up on GPU/TPU.

* CPU: measured in the same run as the best of a large float32 matrix product in XLA
  (``jnp.dot`` under ``jit``) and in NumPy (its BLAS); both use every core the process may run on.
  This is an *attainable* peak of the machine as loaded at that moment, not a datasheet number.
  It is the peak of the whole host (``peak_scope: "host"``): JAX CPU devices of one process
  (``--cpu-devices``) share those cores, so MFU divides by it once per process, not per device.
* GPU/TPU: the vendor's dense (no sparsity) bfloat16 peak of the detected ``device_kind``, per
  chip (:data:`PEAK_BF16_TFLOPS`). A float32 run on a GPU is still divided by the bf16 peak (the
  peak the hardware offers for the step), which is the usual MFU convention.

Sources (datasheets): NVIDIA H100 SXM5 989.4 TFLOP/s, H100 PCIe 756.5, H100 NVL 835.5 (per GPU),
H200 SXM 989.4 (H200 NVL 835.5), A100 312, A10 125, A10G 70 (AWS), L4 121, L40S 362, V100 125
(fp16: no bf16), T4 65 (fp16); Google Cloud TPU pages: v2 45, v3 123, v4 275, v5e 197, v5p 459,
v6e (Trillium) 918.
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np

# (substring of device_kind, lower-cased) -> dense bf16 TFLOP/s per device. First match wins, so
# more specific names come first.
PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    ("h100 pcie", 756.5),
    ("h100 nvl", 835.5),
    ("h100", 989.4),  # SXM5, e.g. "NVIDIA H100 80GB HBM3"
    ("h200 nvl", 835.5),
    ("h200", 989.4),
    ("gh200", 989.4),
    ("b200", 2250.0),
    ("a100", 312.0),
    ("a10g", 70.0),
    ("a10", 125.0),
    ("l40s", 362.0),
    ("l4", 121.0),
    ("v100", 125.0),
    ("t4", 65.0),
    ("tpu v6", 918.0),  # "TPU v6 lite" (Trillium)
    ("tpu v5 lite", 197.0),  # v5e
    ("tpu v5e", 197.0),
    ("tpu v5p", 459.0),
    ("tpu v5", 459.0),  # v5p reports "TPU v5"
    ("tpu v4", 275.0),
    ("tpu v3", 123.0),
    ("tpu v2", 45.0),
)


def lookup_peak_flops(device_kind: str) -> float | None:
  """Dense bf16 peak FLOP/s of one device of this kind, or None if not in the table."""
  kind = device_kind.lower()
  for key, tflops in PEAK_BF16_TFLOPS:
    if key in kind:
      return tflops * 1e12
  return None


def cpu_threads() -> int:
  """Cores this process may run on (honours ``taskset``)."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # not Linux
    return os.cpu_count() or 1


def _best_rate(fn, flops: float, repeats: int) -> float:
  fn()  # warm-up (and compilation)
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - t0)
  return flops / best


def measure_matmul_peak(n: int = 2048, repeats: int = 5) -> dict:
  """Best float32 ``[n, n] @ [n, n]`` rate in XLA (default device) and in NumPy, FLOP/s."""
  a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
  b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
  flops = 2.0 * n**3
  xa, xb = jnp.asarray(a), jnp.asarray(b)
  dot = jax.jit(jnp.dot)
  xla = _best_rate(lambda: dot(xa, xb).block_until_ready(), flops, repeats)
  numpy = _best_rate(lambda: np.dot(a, b), flops, repeats)
  return {"n": n, "xla_flops_per_s": xla, "numpy_flops_per_s": numpy,
          "peak_flops_per_s": max(xla, numpy)}


def device_peak(*, cpu_matmul_n: int = 2048) -> dict:
  """``{"device", "backend", "peak_scope", "peak_flops_per_s", "peak_source", ...}`` for
  ``jax.devices()[0]``.

  On CPU the matmul is measured now (see :func:`measure_matmul_peak`); elsewhere the table is
  used (``peak_flops_per_s`` is None for a device kind missing from it: MFU is then not reported).
  """
  device = jax.devices()[0]
  out = {"device": device.device_kind, "backend": jax.default_backend()}
  if out["backend"] == "cpu":
    m = measure_matmul_peak(cpu_matmul_n)
    out.update(peak_scope="host", peak_flops_per_s=m["peak_flops_per_s"],
               peak_source=f"measured float32 matmul n={m['n']}: XLA "
               f"{m['xla_flops_per_s'] / 1e9:.1f}, NumPy "
               f"{m['numpy_flops_per_s'] / 1e9:.1f} GFLOP/s",
               xla_matmul_flops_per_s=m["xla_flops_per_s"],
               numpy_matmul_flops_per_s=m["numpy_flops_per_s"], cpu_threads=cpu_threads())
  else:
    out.update(peak_scope="device", peak_flops_per_s=lookup_peak_flops(device.device_kind),
               peak_source="datasheet dense bf16 (ssl_jax.bench.peak.PEAK_BF16_TFLOPS)")
  return out


def mfu(model_flops: float | None, step_s: float, peak_flops_per_s: float | None,
        num_devices: int = 1) -> float | None:
  """Model FLOPs utilization: ``model_flops / step_s / (num_devices * peak)``.

  >>> mfu(1e12, 0.5, 1e12, num_devices=4)
  0.5
  """
  if not peak_flops_per_s or not model_flops or step_s <= 0:
    return None
  return model_flops / step_s / (num_devices * peak_flops_per_s)


def peak_units(peak: dict, num_devices: int) -> int:
  """How many times ``peak["peak_flops_per_s"]`` the run had: per device on GPU/TPU, once per
  process (host) on CPU, whose devices share the cores the peak was measured on.

  >>> peak_units({"peak_scope": "device"}, 8), peak_units({"peak_scope": "host"}, 8)
  (8, 1)
  """
  return jax.process_count() if peak.get("peak_scope") == "host" else num_devices
