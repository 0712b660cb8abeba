"""Where a CPU step's time goes: the encoder alone, forward and forward + backward, JAX vs PyTorch.

  XLA_FLAGS=... python benchmarks/cpu_probe.py --model vit_tiny4|resnet18 [--batch 128]

Prints one JSON line per framework with the best-of-``--repeats`` times and GFLOP/s (analytic
model FLOPs of :mod:`ssl_jax.bench.flops`; forward + backward counted as 3x the forward) and
the ``XLA_FLAGS`` in effect, so flag variants can be compared by running this once per variant
(each in its own process: XLA reads its flags once). The batch is the two views of a step
(``2 x`` the step's batch). PyTorch runs the models of ``benchmarks/pytorch_reference.py`` with
``torch.set_num_threads`` equal to the cores this process may use, when torch is installed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import time

import jax
import jax.numpy as jnp
from flax import nnx

from ssl_jax import models
from ssl_jax.bench import flops, peak


def _best(fn, repeats: int) -> float:
  fn()
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - t0)
  return best


def jax_probe(model: str, batch: int, repeats: int) -> dict:
  if model == "vit_tiny4":
    net = models.build_encoder("vit_tiny", rngs=nnx.Rngs(0), patch_size=4, image_size=32)
  else:
    net = models.build_encoder("resnet18", rngs=nnx.Rngs(0), stem="cifar")
  graphdef, params, rest = nnx.split(net, nnx.Param, ...)
  x = jnp.ones((batch, 32, 32, 3))
  loss = lambda p, x: nnx.merge(graphdef, p, rest, copy=True)(x, train=True).sum()
  fwd, grad = jax.jit(loss), jax.jit(jax.grad(loss))
  t_f = _best(lambda: jax.block_until_ready(fwd(params, x)), repeats)
  t_g = _best(lambda: jax.block_until_ready(grad(params, x)), repeats)
  f = flops.network_forward_flops(net, (32, 32)) * batch
  return {"framework": "ssl_jax", "fwd_ms": round(1e3 * t_f, 1),
          "fwd_gflops": round(f / t_f / 1e9, 1), "fwd_bwd_ms": round(1e3 * t_g, 1),
          "fwd_bwd_gflops": round(3 * f / t_g / 1e9, 1), "bwd_over_fwd": round(t_g / t_f, 2),
          "model_gflop_fwd": round(f / 1e9, 2)}


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
  args = p.parse_args()
  m = peak.measure_matmul_peak(2048)
  common = {"model": args.model, "batch": args.batch, "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "threads": peak.cpu_threads(), "peak_gflops": round(m["peak_flops_per_s"] / 1e9, 1),
            "jax": jax.__version__}
  rec = jax_probe(args.model, args.batch, args.repeats)
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


if __name__ == "__main__":
  main()
