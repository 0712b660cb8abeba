"""XLA:CPU convolution benchmark: autodiff backward vs the custom VJP of ``ssl_jax.models.conv``.

Prints one JSON line per measurement::

  python benchmarks/conv_cpu.py                       # layers, layouts, ResNet-18 (CIFAR, 64x32x32)
  python benchmarks/conv_cpu.py --only resnet --arch resnet50 --batch 32 --resnet-impls xla,auto
  python benchmarks/conv_cpu.py --only layers --repeats 20
  python benchmarks/conv_cpu.py --flags-sweep         # the same, once per XLA_FLAGS variant

For every case and implementation: compile time (``lower().compile()``, reported apart), then
``--warmup`` untimed calls, then ``--repeats`` timed calls (each ``block_until_ready``), reported
as median, min, max and interquartile range in milliseconds, for the forward and for forward +
backward (gradients w.r.t. input and kernel, or all parameters for the ResNet). GFLOP/s use the
nominal convolution FLOPs (``2 * N * Ho * Wo * kh * kw * C * O`` forward, 3x that forward +
backward) for layers and XLA's cost analysis for the ResNet.

Implementations: ``xla`` (plain ``lax.conv_general_dilated`` autodiff), ``custom`` (custom VJP
forced) and, for the ResNet, ``auto`` (custom VJP only for 1x1 / patchify convolutions on CPU, the
library default).

Numbers are noisy when other processes share the cores. The implementations of a case are timed
round-robin (one call of each in turn), so a change of background load hits all of them alike;
each line records the 1-minute load average before and after the timed loop. Prefer the min and
median over the max.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any, Callable

FLAG_VARIANTS = {
    "default": "",
    "no_ynnpack": "--xla_cpu_experimental_ynn_fusion_type=",
    "onednn": "--xla_cpu_use_onednn=true --xla_cpu_experimental_ynn_fusion_type=",
    "no_eigen_threads": "--xla_cpu_multi_thread_eigen=false",
    "fast_math": "--xla_cpu_enable_fast_math=true",
}

# name -> (input NHWC, kernel HWIO, strides, padding)
LAYERS = {
    "3x3_s1_64x32x32x64": ((64, 32, 32, 64), (3, 3, 64, 64), 1, "SAME"),
    "3x3_s2_64x32x32x64->128": ((64, 32, 32, 64), (3, 3, 64, 128), 2, 1),
    "1x1_s2_shortcut_64->128": ((64, 32, 32, 64), (1, 1, 64, 128), 2, 0),
    "1x1_s1_bottleneck_64->256": ((64, 32, 32, 64), (1, 1, 64, 256), 1, 0),
    "7x7_s2_stem_16x64x64x3": ((16, 64, 64, 3), (7, 7, 3, 64), 2, 3),
    "patch16_vit_16x224x224x3": ((16, 224, 224, 3), (16, 16, 3, 384), 16, "VALID"),
}


def _stats(times: list[float]) -> dict[str, float]:
  ms = sorted(t * 1e3 for t in times)
  q = statistics.quantiles(ms, n=4) if len(ms) >= 2 else [ms[0]] * 3
  return {"median_ms": round(statistics.median(ms), 3), "min_ms": round(ms[0], 3),
          "max_ms": round(ms[-1], 3), "iqr_ms": round(q[2] - q[0], 3)}


def _measure_group(fns: dict[str, tuple[Callable, tuple]], warmup: int,
                   repeats: int) -> dict[str, dict[str, Any]]:
  """Compiles every function (timed apart), warms each up, then times them round-robin.

  Interleaving the implementations makes a change of background load hit all of them alike.
  """
  import jax
  compiled, out = {}, {}
  for name, (fn, args) in fns.items():
    t0 = time.perf_counter()
    compiled[name] = jax.jit(fn).lower(*args).compile()
    out[name] = {"compile_s": round(time.perf_counter() - t0, 3), "xla_flops": None}
    try:
      cost = compiled[name].cost_analysis()
      cost = cost[0] if isinstance(cost, (list, tuple)) else cost
      out[name]["xla_flops"] = float(cost.get("flops", 0.0)) or None
    except Exception:  # cost analysis is best-effort
      pass
  for name, (_, args) in fns.items():
    for _ in range(warmup):
      jax.block_until_ready(compiled[name](*args))
  times: dict[str, list[float]] = {name: [] for name in fns}
  load0 = os.getloadavg()[0]
  for _ in range(repeats):
    for name, (_, args) in fns.items():
      t = time.perf_counter()
      jax.block_until_ready(compiled[name](*args))
      times[name].append(time.perf_counter() - t)
  load1 = os.getloadavg()[0]
  for name in fns:
    out[name].update(_stats(times[name]), load_before=round(load0, 2), load_after=round(load1, 2))
  return out


def bench_layers(args, emit):
  import jax
  import jax.numpy as jnp

  from ssl_jax.models.conv import conv2d
  for name, (xs, ks, strides, padding) in LAYERS.items():
    if args.case and args.case not in name:
      continue
    kx, kk, kc = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, xs)
    k = jax.random.normal(kk, ks) * 0.05
    fns, nominal = {}, {}
    for impl in ("xla", "custom"):
      fwd = lambda x, k, impl=impl: conv2d(x, k, strides, padding, impl=impl)
      y = jax.eval_shape(fwd, x, k)
      ct = jax.random.normal(kc, y.shape)
      # value_and_grad so that the forward is really computed (grad alone of a loss linear in y
      # lets XLA drop the forward convolution).
      fwd_bwd = lambda x, k, ct, fwd=fwd: jax.value_and_grad(
          lambda x, k: jnp.vdot(fwd(x, k), ct), argnums=(0, 1))(x, k)
      n, ho, wo, o = y.shape
      flops = 2.0 * n * ho * wo * ks[0] * ks[1] * ks[2] * o
      fns[(impl, "fwd")], nominal[(impl, "fwd")] = (fwd, (x, k)), flops
      fns[(impl, "fwd+bwd")], nominal[(impl, "fwd+bwd")] = (fwd_bwd, (x, k, ct)), 3 * flops
    for key, r in _measure_group(fns, args.warmup, args.repeats).items():
      emit(dict(case=name, impl=key[0], mode=key[1], **r,
                gflops_per_s=round(nominal[key] / (r["median_ms"] * 1e-3) / 1e9, 1)))


def bench_layouts(args, emit):
  """The 3x3 layer under XLA autodiff with other dimension orders (data layout experiment)."""
  import jax
  import jax.numpy as jnp
  from jax import lax
  n, h, w, c, o = 64, 32, 32, 64, 64
  perms = {"NHWC/HWIO": ((0, 1, 2, 3), (0, 1, 2, 3)), "NCHW/OIHW": ((0, 3, 1, 2), (3, 2, 0, 1)),
           "CHWN/HWIO": ((3, 1, 2, 0), (0, 1, 2, 3))}
  fns = {}
  for name, (xp, kp) in perms.items():
    dn = ("".join("NHWC"[i] for i in xp), "".join("HWIO"[i] for i in kp),
          "".join("NHWC"[i] for i in xp))
    x = jnp.transpose(jax.random.normal(jax.random.key(0), (n, h, w, c)), xp)
    k = jnp.transpose(jax.random.normal(jax.random.key(1), (3, 3, c, o)) * 0.05, kp)
    conv = lambda x, k, dn=dn: lax.conv_general_dilated(x, k, (1, 1), "SAME",
                                                       dimension_numbers=dn)
    fns[(name, "fwd")] = (conv, (x, k))
    fns[(name, "fwd+bwd")] = (lambda x, k, conv=conv: jax.value_and_grad(
        lambda x, k: jnp.sum(conv(x, k) ** 2) / 2, argnums=(0, 1))(x, k), (x, k))
  flops = 2.0 * n * h * w * 9 * c * o
  for key, r in _measure_group(fns, args.warmup, args.repeats).items():
    nominal = flops * (1 if key[1] == "fwd" else 3)
    emit(dict(case=f"3x3_s1_64x32x32x64_layout_{key[0]}", impl="xla", mode=key[1], **r,
              gflops_per_s=round(nominal / (r["median_ms"] * 1e-3) / 1e9, 1)))


def bench_resnet(args, emit):
  import jax
  import jax.numpy as jnp

  from ssl_jax.models import build_encoder
  from ssl_jax.models.nnx_utils import Networks
  x = jax.random.normal(jax.random.key(1), (args.batch, 32, 32, 3))
  params = stats = None
  fns = {}
  for impl in args.resnet_impls.split(","):
    nets = Networks(lambda rngs, axis, impl=impl: build_encoder(
        args.arch, rngs=rngs, stem="cifar", conv_impl=impl))
    if params is None:
      params, stats = jax.jit(nets.init)(jax.random.key(0))

    def fwd(params, stats, x, nets=nets):
      return nets.bind(params, stats)(x, train=True)

    def fwd_bwd(params, stats, x, nets=nets):
      def loss(params):
        model = nets.bind(params, stats)
        return jnp.mean(model(x, train=True) ** 2), nets.batch_stats(model)
      return jax.value_and_grad(loss, has_aux=True)(params)

    fns[(impl, "fwd")] = (fwd, (params, stats, x))
    fns[(impl, "fwd+bwd")] = (fwd_bwd, (params, stats, x))
  for key, r in _measure_group(fns, args.warmup, args.resnet_repeats).items():
    gf = r["xla_flops"] / (r["median_ms"] * 1e-3) / 1e9 if r["xla_flops"] else None
    emit(dict(case=f"{args.arch}_cifar_b{args.batch}_32x32", impl=key[0], mode=key[1], **r,
              gflops_per_s=round(gf, 1) if gf else None))


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--only", choices=("all", "layers", "layouts", "resnet"), default="all")
  p.add_argument("--case", default="", help="substring filter on layer case names")
  p.add_argument("--repeats", type=int, default=10)
  p.add_argument("--resnet-repeats", type=int, default=5)
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--arch", default="resnet18", choices=("resnet18", "resnet34", "resnet50"),
                 help="network of the ResNet case (CIFAR stem, 32x32 inputs)")
  p.add_argument("--resnet-impls", default="xla,custom,auto",
                 help="comma-separated conv implementations for the ResNet case")
  p.add_argument("--flags-sweep", action="store_true",
                 help="rerun in subprocesses, once per XLA_FLAGS variant: " +
                 ", ".join(FLAG_VARIANTS))
  p.add_argument("--variants", default=",".join(FLAG_VARIANTS),
                 help="comma-separated subset of the sweep's variants")
  args, rest = p.parse_known_args(argv)
  if args.flags_sweep:
    argv = list(argv if argv is not None else sys.argv[1:])
    base, skip = [], False
    for a in argv:  # drop the sweep options from the child command line
      if skip or a == "--flags-sweep":
        skip = False
        continue
      if a == "--variants":
        skip = True
        continue
      if not a.startswith("--variants="):
        base.append(a)
    for variant in args.variants.split(","):
      flags = FLAG_VARIANTS[variant]
      env = dict(os.environ, XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + " " + flags).strip(),
                 CONV_BENCH_VARIANT=variant)
      subprocess.run([sys.executable, __file__, *base], env=env, check=True)
    return
  if rest:
    p.error(f"unknown arguments {rest}")

  import jax
  header = dict(jax=jax.__version__, backend=jax.default_backend(), devices=jax.device_count(),
                cpus=os.cpu_count(), xla_flags=os.environ.get("XLA_FLAGS", ""),
                variant=os.environ.get("CONV_BENCH_VARIANT", "default"))

  def emit(record):
    print(json.dumps({**header, **record}), flush=True)

  if args.only in ("all", "layers"):
    bench_layers(args, emit)
  if args.only in ("all", "layouts"):
    bench_layouts(args, emit)
  if args.only in ("all", "resnet"):
    bench_resnet(args, emit)


if __name__ == "__main__":
  main()
