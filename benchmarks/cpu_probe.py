"""Where a CPU step's time goes: the encoder alone, forward and forward + backward, JAX vs PyTorch.

  XLA_FLAGS=... python benchmarks/cpu_probe.py --model vit_tiny4|resnet18 [--batch 128]
  python benchmarks/cpu_probe.py --model resnet18 --no-torch --cpu-devices 2
  python benchmarks/cpu_probe.py --model vit_tiny4 --no-torch --profile /tmp/vit_trace

Prints one JSON line per framework with the best-of-``--repeats`` times and GFLOP/s (analytic
model FLOPs of :mod:`ssl_jax.bench.flops`; forward + backward counted as 3x the forward) and
the ``XLA_FLAGS`` in effect, so flag variants can be compared by running this once per variant
(each in its own process: XLA reads its flags once). The batch is the two views of a step
(``2 x`` the step's batch). PyTorch runs the models of ``benchmarks/pytorch_reference.py`` with
``torch.set_num_threads`` equal to the cores this process may use, when torch is installed.

``--profile DIR`` also traces one forward + backward with ``jax.profiler`` and prints where its
time went: every matrix product XLA:CPU ran as a YNNPACK fusion, grouped by direction (forward or
``transpose(jvp)``) and operand shapes, with its time and GFLOP/s, then the other fusions by kind.
Products XLA:CPU leaves as plain ``dot`` thunks (the weight gradients, contracting the batch) run
asynchronously on Eigen's pool: their trace events time the dispatch only, and their work shows up
inside whatever runs beside them, so the table lists them apart, without a rate.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import importlib.util
import json
import math
import os
import re
import time

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from ssl_jax import models
from ssl_jax.cli import process_glibc_tunables, reexec_with_hugepages, set_cpu_devices
from ssl_jax.bench import flops, peak


def _best(fn, repeats: int) -> float:
  fn()
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - t0)
  return best


def _jax_functions(model: str, batch: int):
  """``(forward, forward + backward, params, x, net)`` of the encoder, jitted; with several
  (CPU) devices the batch is split over them and the parameters replicated (data parallel)."""
  if model == "vit_tiny4":
    net = models.build_encoder("vit_tiny", rngs=nnx.Rngs(0), patch_size=4, image_size=32)
  else:
    net = models.build_encoder("resnet18", rngs=nnx.Rngs(0), stem="cifar")
  graphdef, params, rest = nnx.split(net, nnx.Param, ...)
  mesh = jax.make_mesh((jax.device_count(),), ("data",), axis_types=(AxisType.Auto,))
  params, rest = jax.device_put((params, rest), NamedSharding(mesh, P()))
  x = jax.device_put(jnp.ones((batch, 32, 32, 3)), NamedSharding(mesh, P("data")))
  loss = lambda p, x: nnx.merge(graphdef, p, rest, copy=True)(x, train=True).sum()
  return jax.jit(loss), jax.jit(jax.grad(loss)), params, x, net


def jax_probe(built, batch: int, repeats: int) -> dict:
  """Best-of-``repeats`` forward and forward + backward times of :func:`_jax_functions`."""
  fwd, grad, params, x, net = built
  t_f = _best(lambda: jax.block_until_ready(fwd(params, x)), repeats)
  t_g = _best(lambda: jax.block_until_ready(grad(params, x)), repeats)
  f = flops.network_forward_flops(net, (32, 32)) * batch
  return {"framework": "ssl_jax", "fwd_ms": round(1e3 * t_f, 1),
          "fwd_gflops": round(f / t_f / 1e9, 1), "fwd_bwd_ms": round(1e3 * t_g, 1),
          "fwd_bwd_gflops": round(3 * f / t_g / 1e9, 1), "bwd_over_fwd": round(t_g / t_f, 2),
          "model_gflop_fwd": round(f / 1e9, 2)}


def _fusion_bodies(hlo: str) -> dict[str, str]:
  return {m.group(1): m.group(2) for m in re.finditer(
      r"\n%([\w.\-]+) \([^\n]*\) -> [^\n]*\{\n(.*?)\n\}", hlo, re.S)}


def _product(body: str):
  """``(kind, lhs, rhs, dims, flops)`` of the first dot / convolution in a fusion body."""
  shapes = dict(re.findall(r"%([\w.\-]+) = f32\[([\d,]*)\]", body))
  m = re.search(r"= f32\[([\d,]*)\]\S* (dot|convolution)\(%([\w.\-]+), %([\w.\-]+)\)(.*)",
                body)
  if not m:
    return None
  dims = lambda s: [int(x) for x in s.split(",") if x]
  out, lhs, rhs = dims(m.group(1)), dims(shapes[m.group(3)]), dims(shapes[m.group(4)])
  if m.group(2) == "dot":
    contract = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", m.group(5)).group(1)
    k = math.prod(lhs[int(i)] for i in contract.split(","))
    layout = " ".join(re.findall(r"(?:lhs_batch|lhs_contracting|rhs_contracting)_dims=\{[\d,]*\}",
                                 m.group(5)))
  else:
    k, layout = math.prod(rhs[:-1]), "conv"
  return m.group(2), shapes[m.group(3)], shapes[m.group(4)], layout, 2 * math.prod(out) * k


def profile_table(hlo: str, trace_dir: str) -> str:
  """Markdown tables of a traced run's time by matrix-product shape and by fusion kind."""
  path = sorted(glob.glob(os.path.join(trace_dir, "plugins", "profile", "*",
                                       "perfetto_trace.json.gz")))[-1]
  with gzip.open(path) as f:
    trace = json.load(f)
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  spent = collections.Counter()
  for e in events:
    if e.get("ph") == "X" and not e["name"].startswith(("$", "Thunk", "Slinky", "end:", "Thread")):
      spent[e["name"]] += e["dur"]
  bodies = _fusion_bodies(hlo)
  ops = dict(re.findall(r"\n\s*%([\w.\-]+) = ([^\n]*)", hlo))
  gemm = collections.defaultdict(lambda: [0.0, 0.0, 0])
  other = collections.defaultdict(lambda: [0.0, 0])
  for name, us in spent.items():
    line = ops.get(name, "")
    called = re.search(r"calls=%([\w.\-]+)", line)
    found = _product(bodies[called.group(1)]) if called and "__ynn_fusion" in line else None
    if found:
      kind, lhs, rhs, layout, flops = found
      key = ("backward" if "transpose(jvp" in line else "forward", kind, lhs, rhs, layout)
      gemm[key][0] += us
      gemm[key][1] += flops
      gemm[key][2] += 1
    elif re.search(r"\} dot\(", line):
      other["dot (Eigen, async: dispatch time only)"][0] += us
      other["dot (Eigen, async: dispatch time only)"][1] += 1
    elif line:
      kind = re.sub(r"\.\d+$", "", name)
      kind = "ynn_fusion (elementwise, no product)" if kind == "ynn_fusion" else kind
      other[kind][0] += us
      other[kind][1] += 1
  total = sum(spent[n] for n in spent if n in ops)
  rows = ["| direction | op | lhs | rhs | dims | count | ms | % of op time | GFLOP/s |",
          "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
  for key, (us, flops, count) in sorted(gemm.items(), key=lambda kv: -kv[1][0]):
    rows.append(f"| {' | '.join(key[:2])} | [{key[2]}] | [{key[3]}] | {key[4]} | {count} | "
                f"{us / 1e3:.1f} | {100 * us / total:.1f} | {flops / us / 1e3:.1f} |")
  rows += ["", "| other ops (by fusion kind) | count | ms | % of op time |",
           "| --- | --- | --- | --- |"]
  for name, (us, count) in sorted(other.items(), key=lambda kv: -kv[1][0])[:15]:
    rows.append(f"| {name} | {count} | {us / 1e3:.1f} | {100 * us / total:.1f} |")
  return "\n".join(rows)


def jax_profile(built, trace_dir: str) -> str:
  """Traces one forward + backward of :func:`_jax_functions` and returns
  :func:`profile_table`."""
  _, grad, params, x, _ = built
  jax.block_until_ready(grad(params, x))
  with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
    jax.block_until_ready(grad(params, x))
  return profile_table(grad.lower(params, x).compile().as_text(), trace_dir)


def torch_probe(model: str, batch: int, repeats: int, threads: int) -> dict | None:
  if importlib.util.find_spec("torch") is None:
    return None
  import torch  # pylint: disable=import-outside-toplevel
  spec = importlib.util.spec_from_file_location(
      "pytorch_reference", os.path.join(os.path.dirname(__file__), "pytorch_reference.py"))
  ref = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(ref)
  torch.set_num_threads(threads)
  if model == "vit_tiny4":
    net = ref.ViT(image_size=32, patch_size=4, dim=192, depth=12, heads=3)
    x = torch.ones(batch, 3, 32, 32)
  else:
    net = ref.ResNet18Cifar().to(memory_format=torch.channels_last)
    x = torch.ones(batch, 3, 32, 32).contiguous(memory_format=torch.channels_last)

  def fwd():
    with torch.no_grad():
      net(x).sum().item()

  def fwd_bwd():
    net.zero_grad(set_to_none=True)
    net(x).sum().backward()

  t_f, t_g = _best(fwd, repeats), _best(fwd_bwd, repeats)
  return {"framework": "pytorch", "torch": torch.__version__, "fwd_ms": round(1e3 * t_f, 1),
          "fwd_bwd_ms": round(1e3 * t_g, 1), "bwd_over_fwd": round(t_g / t_f, 2)}


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--model", default="vit_tiny4", choices=("vit_tiny4", "resnet18"))
  p.add_argument("--batch", type=int, default=128)
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--no-torch", action="store_true")
  p.add_argument("--profile", metavar="DIR", help="also trace one forward + backward into DIR and "
                 "print its time by matrix-product shape and by fusion kind")
  p.add_argument("--cpu-devices", type=int, default=None, metavar="N",
                 help="run JAX with N CPU devices, the batch split over them (as ssl-jax "
                 "--cpu-devices)")
  args = p.parse_args()
  reexec_with_hugepages()  # as the ssl-jax command (SSL_JAX_HUGEPAGES=0: without)
  set_cpu_devices(args.cpu_devices)
  m = peak.measure_matmul_peak(2048)
  common = {"model": args.model, "batch": args.batch, "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "glibc_tunables": process_glibc_tunables(),
            "devices": jax.device_count(),
            "threads": peak.cpu_threads(), "peak_gflops": round(m["peak_flops_per_s"] / 1e9, 1),
            "jax": jax.__version__}
  built = _jax_functions(args.model, args.batch)  # one build and compilation for both uses
  rec = jax_probe(built, args.batch, args.repeats)
  rec["fwd_bwd_mfu"] = round(rec["fwd_bwd_gflops"] / common["peak_gflops"], 3)
  print(json.dumps({**common, **rec, "load_1m": round(os.getloadavg()[0], 2)}), flush=True)
  if not args.no_torch:
    t = torch_probe(args.model, args.batch, args.repeats, peak.cpu_threads())
    if t is not None:
      f = rec["model_gflop_fwd"] * 1e9
      t.update(fwd_gflops=round(f / t["fwd_ms"] * 1e3 / 1e9, 1),
               fwd_bwd_gflops=round(3 * f / t["fwd_bwd_ms"] * 1e3 / 1e9, 1))
      t["fwd_bwd_mfu"] = round(t["fwd_bwd_gflops"] / common["peak_gflops"], 3)
      print(json.dumps({**common, **t, "load_1m": round(os.getloadavg()[0], 2)}), flush=True)
  if args.profile:
    print(jax_profile(built, args.profile), flush=True)


if __name__ == "__main__":
  main()
