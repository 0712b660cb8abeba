#!/usr/bin/env bash
# How the committed results/ were produced on the lent GPU machine (one NVIDIA H100, 16 cores):
# GPU suites on cores 6-15, and quiet CPU numbers with each CPU job pinned to its own 2 cores
# (taskset; JAX_PLATFORMS=cpu; XLA:CPU and torch.set_num_threads both see 2 cores).
#   bash benchmarks/run_device.sh vs-pytorch OUTDIR    # GPU vs-pytorch + CPU pinned vs-pytorch
#   bash benchmarks/run_device.sh methods OUTDIR       # GPU methods suite, parallel modes, BERT;
#                                                      # CPU pinned BERT, probes, flags, compile
#   bash benchmarks/run_device.sh final OUTDIR         # GPU methods suite (all methods), CPU BERT
#   bash benchmarks/run_device.sh cpu-devices OUTDIR   # CPU pinned: 1 vs 2 vs 4 JAX CPU devices;
#                                                      # GPU: language methods, BERT vs PyTorch
set -u
part=$1; out=$2
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
bench="python3 -m ssl_jax.cli bench"
cpu() {  # cores, then bench arguments
  local cores=$1; shift
  JAX_PLATFORMS=cpu CUDA_VISIBLE_DEVICES= taskset -c "$cores" $bench "$@"
}
note="2 cores pinned with taskset on the GPU host (Xeon, 16 cores; other pinned jobs ran beside)"
if [ "$part" = vs-pytorch ]; then
  cpu 0,1 --suite vs-pytorch --models resnet18_simclr --out "$out/vs_pytorch_cpu_pinned.jsonl" \
    --batch-size 64 --steps 2 --repeats 5 --warmup 1 --note "$note" >"$out/cpu_resnet.log" 2>&1 &
  cpu 2,3 --suite vs-pytorch --models vit_tiny4_moco_v3 --no-pipeline \
    --out "$out/vs_pytorch_cpu_pinned_vit.jsonl" --batch-size 64 --steps 2 --repeats 5 \
    --warmup 1 --note "$note" >"$out/cpu_vit.log" 2>&1 &
  XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type= cpu 4,5 --suite vs-pytorch \
    --models resnet18_simclr --no-pytorch --no-pipeline --out "$out/cpu_pinned_no_ynn.jsonl" \
    --batch-size 64 --steps 2 --repeats 5 --warmup 1 \
    --note "$note; XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=" >"$out/cpu_flags.log" 2>&1 &
  taskset -c 6-15 $bench --suite vs-pytorch --out "$out/vs_pytorch_h100.jsonl" --batch-size 256 \
    --steps 20 --repeats 5 --warmup 3 2>&1 | grep -v Warning
  wait
elif [ "$part" = methods ]; then
  # CPU (pinned pairs): the BERT MLM side by side; where the time goes (cpu_probe.py) with and
  # without YNNPACK fusions; full steps without YNNPACK; torch.compile on CPU.
  noynn=--xla_cpu_experimental_ynn_fusion_type=
  cpu 0,1 --suite vs-pytorch --models bert_tiny_mlm --out "$out/vs_pytorch_cpu_pinned_bert.jsonl" \
    --batch-size 64 --steps 5 --repeats 5 --warmup 2 --torch-compile --note "$note" \
    >"$out/cpu_bert.log" 2>&1 &
  (for m in vit_tiny4 resnet18; do
     JAX_PLATFORMS=cpu taskset -c 2,3 python3 benchmarks/cpu_probe.py --model $m
     XLA_FLAGS=$noynn JAX_PLATFORMS=cpu taskset -c 2,3 python3 benchmarks/cpu_probe.py \
       --model $m --no-torch
   done) >"$out/cpu_probe.jsonl" 2>"$out/cpu_probe.log" &
  XLA_FLAGS=$noynn cpu 4,5 --suite vs-pytorch --models vit_tiny4_moco_v3,bert_tiny_mlm \
    --no-pytorch --no-pipeline --no-xla-cost --out "$out/cpu_pinned_no_ynn_2.jsonl" \
    --batch-size 64 --steps 2 --repeats 5 --warmup 1 --note "$note; XLA_FLAGS=$noynn" \
    >"$out/cpu_flags2.log" 2>&1 &
  cpu 6,7 --suite vs-pytorch --models resnet18_simclr,vit_tiny4_moco_v3 --no-pipeline \
    --no-xla-cost --torch-compile --out "$out/cpu_pinned_torch_compile.jsonl" --batch-size 64 \
    --steps 2 --repeats 3 --warmup 1 --note "$note" >"$out/cpu_compile.log" 2>&1 &
  # GPU: every method (ResNet-18 CIFAR recipes, bf16), then parallel modes, then torch.compile.
  taskset -c 8-15 $bench --suite methods --out "$out/methods_h100.jsonl" --batch-size 256 \
    --steps 10 --repeats 3 --warmup 2 --no-xla-cost --no-pipeline 2>&1 | grep -v Warning
  taskset -c 8-15 $bench --suite methods --methods simclr --parallel pmap,gspmd --no-pipeline \
    --out "$out/methods_h100.jsonl" --batch-size 256 --steps 10 --repeats 3 --warmup 2 \
    --no-xla-cost 2>&1 | grep -v Warning
  taskset -c 8-15 $bench --suite vs-pytorch --models bert_tiny_mlm --torch-compile \
    --out "$out/vs_pytorch_h100_bert.jsonl" --batch-size 256 --steps 20 --repeats 5 \
    --warmup 3 --no-pipeline 2>&1 | grep -v Warning
  wait
elif [ "$part" = final ]; then
  # (the "methods" part above ran before the methods suite knew language methods; this reruns it)
  cpu 0,1 --suite vs-pytorch --models bert_tiny_mlm --out "$out/vs_pytorch_cpu_pinned_bert.jsonl" \
    --batch-size 64 --steps 5 --repeats 5 --warmup 2 --torch-compile --note "$note" \
    >"$out/cpu_bert.log" 2>&1 &
  taskset -c 8-15 $bench --suite methods --out "$out/methods_h100.jsonl" --batch-size 256 \
    --steps 10 --repeats 3 --warmup 2 --no-xla-cost --no-pipeline 2>&1 | grep -v Warning
  wait
elif [ "$part" = cpu-devices ]; then
  # The same 2 pinned cores run as 1 JAX CPU device (with the PyTorch side by side), as 2 and as 4
  # (--cpu-devices), and as 2 without YNNPACK fusions; the GPU runs the language methods with
  # their FLOPs formulas and the BERT side by side.
  common=(--suite vs-pytorch --no-pipeline --batch-size 64 --steps 2 --repeats 3 --warmup 1)
  cpu 0,1 "${common[@]}" --out "$out/cpu_pinned_vs_pytorch.jsonl" --note "$note" \
    >/tmp/cpu_1.log 2>&1 &
  cpu 2,3 "${common[@]}" --no-pytorch --no-xla-cost --cpu-devices 2 \
    --out "$out/cpu_pinned_2dev.jsonl" --note "$note; --cpu-devices 2" >/tmp/cpu_2.log 2>&1 &
  cpu 4,5 "${common[@]}" --no-pytorch --no-xla-cost --cpu-devices 4 \
    --out "$out/cpu_pinned_4dev.jsonl" --note "$note; --cpu-devices 4" >/tmp/cpu_4.log 2>&1 &
  XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type= cpu 6,7 "${common[@]}" --models \
    resnet18_simclr --no-pytorch --no-xla-cost --cpu-devices 2 \
    --out "$out/cpu_pinned_2dev_no_ynn.jsonl" \
    --note "$note; --cpu-devices 2; XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=" \
    >/tmp/cpu_2_no_ynn.log 2>&1 &
  taskset -c 8-15 $bench --suite methods --methods clm,nsp,simcse --out "$out/h100.jsonl" \
    --batch-size 256 --steps 10 --repeats 3 --warmup 2 --no-xla-cost --no-pipeline 2>&1 \
    | grep -v Warning
  taskset -c 8-15 $bench --suite vs-pytorch --models bert_tiny_mlm --torch-compile \
    --out "$out/h100.jsonl" --batch-size 256 --steps 20 --repeats 5 --warmup 3 --no-pipeline \
    2>&1 | grep -v Warning
  wait
  tail -n 30 /tmp/cpu_*.log >"$out/cpu_logs.txt"
fi
