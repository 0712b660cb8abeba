"""The PyTorch side of ``ssl-jax bench --suite vs-pytorch``: the same models, losses and steps.

Run by :func:`ssl_jax.bench.harness.run_torch_reference` in a subprocess (so the two frameworks'
thread pools never share a process) with a JSON ``--spec`` describing the model; prints one JSON
record per measurement. Can also be run by hand::

  python benchmarks/pytorch_reference.py --spec '{"model": "resnet18_simclr", ...}'

Written as a PyTorch user would write them, for speed:

* the batch is a uint8 NHWC tensor staged on the device once; every step converts it to float,
  flips each view with a per-example random mask (one ``torch.where``, no Python loop), normalizes,
  and permutes to NCHW, which for an NHWC tensor *is* the channels-last memory format;
* ResNet: the model is converted to ``torch.channels_last`` (oneDNN/cuDNN NHWC convolutions);
* ViT: ``nn.TransformerEncoderLayer(norm_first=True)`` (pre-LN, fused ``in_proj``) with
  ``F.scaled_dot_product_attention`` inside, exact GELU, LayerNorm epsilon 1e-6;
* optionally (``"compile": true`` in the spec) the whole step under ``torch.compile``;
* ``torch.set_num_threads`` equal to the JAX side's thread count; float32 on CPU, ``torch.autocast``
  bfloat16 on CUDA when ``dtype == "bfloat16"``; ``optimizer.zero_grad(set_to_none=True)``;
  the momentum (EMA) update with ``torch._foreach_lerp_`` (one fused call, no per-tensor loop).

Architectures mirror ``ssl_jax.models`` exactly (the record's ``params`` lets you compare the
parameter count with the JAX side): ResNet-18 CIFAR stem (3x3/1 conv, no max-pool, bias-free
convolutions, 1x1 projection shortcuts, BatchNorm momentum 0.1, eps 1e-5), the ``MLPHead``
projector/predictor layouts (a linear layer followed by BatchNorm has no bias), ViT with a class
token and learned position embeddings, the post-LN BERT encoder with the tied MLM head (run on the
first ``max_predictions`` masked positions of each row, with the same 80/10/10 masking of
``round(0.15 x candidates)`` tokens per row, packed documents masked from each other) on the JAX
side's own first batch of rows. Losses: NT-Xent (SimCLR; Chen et al., 2020,
arXiv:2002.05709) over the 2N views of one concatenated batch; MoCo v3's symmetric InfoNCE scaled
by ``2 t`` (Chen, Xie & He, 2021, arXiv:2104.02057, Algorithm 1).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn


# -- models -----------------------------------------------------------------------------------


class BasicBlock(nn.Module):

  def __init__(self, cin: int, cout: int, stride: int):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(cout)
    self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(cout)
    self.shortcut = None
    if stride != 1 or cin != cout:
      self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                    nn.BatchNorm2d(cout))

  def forward(self, x):
    y = F.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    return F.relu((x if self.shortcut is None else self.shortcut(x)) + y)


class ResNet18Cifar(nn.Module):
  """``[B, 3, H, W] -> [B, 512]``: ResNet-18 with the CIFAR stem (3x3/1 conv, no max-pool)."""

  def __init__(self, width: int = 64):
    super().__init__()
    self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width),
                              nn.ReLU(inplace=True))
    blocks, cin = [], width
    for i in range(4):
      for j in range(2):
        cout = width * 2**i
        blocks.append(BasicBlock(cin, cout, 2 if i > 0 and j == 0 else 1))
        cin = cout
    self.blocks = nn.Sequential(*blocks)
    self.out_features = cin

  def forward(self, x):
    return self.blocks(self.stem(x)).mean(dim=(2, 3))


class ViT(nn.Module):
  """``[B, 3, H, W] -> [B, dim]``: pre-LN ViT with a class token (timm / MoCo v3 layout)."""

  def __init__(self, *, image_size: int, patch_size: int, dim: int, depth: int, heads: int):
    super().__init__()
    self.patch = nn.Conv2d(3, dim, patch_size, patch_size)
    n = (image_size // patch_size)**2
    self.cls = nn.Parameter(torch.zeros(1, 1, dim))
    self.pos = nn.Parameter(torch.randn(1, n + 1, dim) * 0.02)
    layer = nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout=0.0, activation="gelu",
                                       layer_norm_eps=1e-6, batch_first=True, norm_first=True)
    self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
    self.norm = nn.LayerNorm(dim, eps=1e-6)
    self.out_features = dim

  def forward(self, x):
    x = self.patch(x).flatten(2).transpose(1, 2)
    x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
    return self.norm(self.blocks(x))[:, 0]


def rotary_tables(positions, head_dim: int, base: float = 10000.0):
  """``(cos, sin)`` ``[B, 1, T, Dh / 2]`` of ``ssl_jax.models.text.rotary``, computed once per
  forward pass and shared by every layer."""
  half = head_dim // 2
  freq = 1.0 / base**(torch.arange(half, device=positions.device, dtype=torch.float32) / half)
  angle = positions.float()[:, None, :, None] * freq
  return angle.cos(), angle.sin()


def rotary(x, cos, sin):
  """Rotate-half rotary embedding of ``x`` ``[B, H, T, Dh]`` (float32 math)."""
  x1, x2 = x.float().chunk(2, dim=-1)
  return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).to(x.dtype)


class RotaryPostLNBlock(nn.Module):
  """BERT's post-LN block with rotary q/k (``ssl_jax.models.text.Block``, ``norm="post"``)."""

  def __init__(self, width: int, heads: int, mlp_dim: int):
    super().__init__()
    self.heads = heads
    self.qkv = nn.Linear(width, 3 * width)
    self.out = nn.Linear(width, width)
    self.ln1 = nn.LayerNorm(width, eps=1e-12)
    self.ln2 = nn.LayerNorm(width, eps=1e-12)
    self.fc1 = nn.Linear(width, mlp_dim)
    self.fc2 = nn.Linear(mlp_dim, width)

  def forward(self, x, allowed, cos, sin):
    b, t, d = x.shape
    q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
    q, k = rotary(q, cos, sin), rotary(k, cos, sin)
    a = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed[:, None])
    x = self.ln1(x + self.out(a.transpose(1, 2).reshape(b, t, d)))
    return self.ln2(x + self.fc2(F.gelu(self.fc1(x))))


class BertMLM(nn.Module):
  """``ssl_jax.models.text.Transformer`` (post-LN, BERT; learned or rotary positions) + ``MLMHead``
  with the tied embedding."""

  def __init__(self, *, vocab_size: int, max_len: int, width: int, depth: int, heads: int,
               mlp_dim: int, type_vocab: int, positions: str = "learned"):
    super().__init__()
    self.tok = nn.Embedding(vocab_size, width)
    self.pos = nn.Embedding(max_len, width) if positions == "learned" else None
    self.typ = nn.Embedding(type_vocab, width) if type_vocab else None
    self.embed_norm = nn.LayerNorm(width, eps=1e-12)
    if positions == "learned":
      layer = nn.TransformerEncoderLayer(width, heads, mlp_dim, dropout=0.0, activation="gelu",
                                         layer_norm_eps=1e-12, batch_first=True,
                                         norm_first=False)
      self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
    else:
      self.blocks = nn.ModuleList(RotaryPostLNBlock(width, heads, mlp_dim) for _ in range(depth))
    self.heads = heads
    self.dense = nn.Linear(width, width)
    self.head_norm = nn.LayerNorm(width, eps=1e-12)
    self.bias = nn.Parameter(torch.zeros(vocab_size))

  def forward(self, tokens, segment_ids, positions, picked_order):
    x = self.tok(tokens)
    if self.pos is not None:
      x = x + self.pos(positions)
    if self.typ is not None:
      x = x + self.typ.weight[0]
    x = self.embed_norm(x)
    allowed = segment_ids[:, :, None] == segment_ids[:, None, :]
    if self.pos is not None:
      h = self.blocks(x, mask=(~allowed).repeat_interleave(self.heads, dim=0))
    else:
      h = x
      cos, sin = rotary_tables(positions, x.shape[-1] // self.heads)
      for blk in self.blocks:
        h = blk(h, allowed, cos, sin)
    picked = torch.take_along_dim(h, picked_order[..., None], dim=1)
    picked = self.head_norm(F.gelu(self.dense(picked)))
    return picked @ self.tok.weight.T + self.bias


def bert_mask(tokens, valid, *, special_ids, mask_id: int, vocab_size: int, rate: float,
              mask_prob: float, random_prob: float, generator):
  """``ssl_jax.masking.bert_mask``: round(rate * candidates) positions per row, 80/10/10."""
  special = torch.zeros(vocab_size, dtype=torch.bool, device=tokens.device)
  special[torch.tensor(special_ids, device=tokens.device)] = True
  candidate = valid & ~special[tokens]
  scores = torch.rand(tokens.shape, device=tokens.device, generator=generator)
  scores = scores.masked_fill(~candidate, 2.0)
  rank = scores.argsort(dim=1).argsort(dim=1)
  k = torch.round(rate * candidate.sum(dim=1, keepdim=True))
  chosen = rank < k
  u = torch.rand(tokens.shape, device=tokens.device, generator=generator)
  normal = torch.nonzero(~special).squeeze(1)
  rand_tok = normal[torch.randint(0, normal.numel(), tokens.shape, device=tokens.device,
                                  generator=generator)]
  inputs = torch.where(chosen & (u < mask_prob), mask_id, tokens)
  inputs = torch.where(chosen & (u >= mask_prob) & (u < mask_prob + random_prob), rand_tok,
                       inputs)
  return inputs, chosen


def mlp_head(cin: int, hidden: int, cout: int, layers: int, output_norm: str | None,
             output_bias: bool | None = None) -> nn.Sequential:
  """``ssl_jax.models.heads.MLPHead`` with BatchNorm on the hidden layers."""
  mods, widths = [], [cin] + [hidden] * (layers - 1) + [cout]
  for i in range(layers):
    last = i == layers - 1
    norm = output_norm if last else "bn"
    bias = norm not in ("bn", "bn_noaffine")
    if last and output_bias is not None:
      bias = output_bias
    mods.append(nn.Linear(widths[i], widths[i + 1], bias=bias))
    if norm in ("bn", "bn_noaffine"):
      mods.append(nn.BatchNorm1d(widths[i + 1], affine=norm == "bn"))
    if not last:
      mods.append(nn.ReLU(inplace=True))
  return nn.Sequential(*mods)


# -- losses -----------------------------------------------------------------------------------


def ntxent(z_a, z_b, temperature: float):
  z = F.normalize(torch.cat([z_a, z_b]).float(), dim=1)
  n = z_a.shape[0]
  logits = z @ z.T / temperature
  logits.fill_diagonal_(float("-inf"))
  target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
  return F.cross_entropy(logits, target)


def moco_v3_ctr(q, k, temperature: float):
  q, k = F.normalize(q.float(), dim=1), F.normalize(k.float(), dim=1)
  logits = q @ k.T / temperature
  return 2 * temperature * F.cross_entropy(logits, torch.arange(q.shape[0], device=q.device))


# -- steps ------------------------------------------------------------------------------------


def make_views(images, mean, std, generator):
  """uint8 NHWC -> two float NCHW (channels-last) views: random flip + normalize."""
  x = images.float().div_(255)
  views = []
  for _ in range(2):
    flip = torch.rand(x.shape[0], 1, 1, 1, device=x.device, generator=generator) < 0.5
    v = torch.where(flip, x.flip(2), x)
    views.append(((v - mean) / std).permute(0, 3, 1, 2))
  return views


def build(spec: dict, device: str):
  """``(step_fn, modules)``: one train step of the spec's model on a staged uint8 batch."""
  torch.manual_seed(0)
  generator = torch.Generator(device=device).manual_seed(0)
  if "normalize" in spec:
    mean = torch.tensor(spec["normalize"][0], device=device)
    std = torch.tensor(spec["normalize"][1], device=device)
  channels_last = spec.get("channels_last", spec["encoder"].startswith("resnet"))
  autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if spec["dtype"] == "bfloat16"
              and device == "cuda" else torch.autocast("cpu", enabled=False))
  if spec["dtype"] == "bfloat16" and device == "cpu":
    autocast = torch.autocast("cpu", dtype=torch.bfloat16)
  b = spec["batch_size"]

  if spec["model"] == "resnet18_simclr":
    encoder = ResNet18Cifar()
    hidden, out, layers, output_norm = spec["proj"]
    projector = mlp_head(encoder.out_features, hidden, out, layers,
                         None if output_norm == "none" else output_norm)
    model = nn.ModuleDict(dict(encoder=encoder, projector=projector)).to(device)
    if channels_last:
      model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=spec["lr"], momentum=spec["momentum"],
                          weight_decay=spec["weight_decay"])

    def step(images):
      x_a, x_b = make_views(images, mean, std, generator)
      x = torch.cat([x_a, x_b])
      if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
      with autocast:
        z = model["projector"](model["encoder"](x))
        loss = ntxent(*z.float().chunk(2), spec["temperature"])
      opt.zero_grad(set_to_none=True)
      loss.backward()
      opt.step()
      return loss

    return step, model

  if spec["model"] == "vit_tiny4_moco_v3":
    encoder = ViT(image_size=spec["image_size"], patch_size=spec["patch_size"], dim=spec["dim"],
                  depth=spec["depth"], heads=spec["heads"])
    hidden, out, layers, output_norm = spec["proj"]
    projector = mlp_head(encoder.out_features, hidden, out, layers, output_norm,
                         output_bias=False)
    p_hidden, p_out, p_layers = spec["pred"]
    predictor = mlp_head(out, p_hidden, p_out, p_layers, None, output_bias=False)
    base = nn.ModuleDict(dict(encoder=encoder, projector=projector, predictor=predictor)).to(device)
    momentum = copy.deepcopy(nn.ModuleDict(dict(encoder=base["encoder"],
                                                projector=base["projector"])))
    for p in momentum.parameters():
      p.requires_grad_(False)
    base_params = list(base["encoder"].parameters()) + list(base["projector"].parameters())
    mom_params = list(momentum.parameters())
    lr = spec["lr"] * b / 256
    opt = torch.optim.AdamW(base.parameters(), lr=lr, weight_decay=spec["weight_decay"])
    m, t = spec["momentum"], spec["temperature"]

    def step(images):
      x1, x2 = make_views(images, mean, std, generator)
      with autocast:
        q1 = base["predictor"](base["projector"](base["encoder"](x1)))
        q2 = base["predictor"](base["projector"](base["encoder"](x2)))
        with torch.no_grad():
          k1 = momentum["projector"](momentum["encoder"](x1))
          k2 = momentum["projector"](momentum["encoder"](x2))
        loss = moco_v3_ctr(q1, k2, t) + moco_v3_ctr(q2, k1, t)
      opt.zero_grad(set_to_none=True)
      loss.backward()
      opt.step()
      with torch.no_grad():
        torch._foreach_lerp_(mom_params, base_params, 1.0 - m)  # pylint: disable=protected-access
      return loss

    return step, base

  if spec["model"] == "bert_tiny_mlm":
    model = BertMLM(vocab_size=spec["vocab_size"], max_len=spec["max_len"], width=spec["width"],
                    depth=spec["depth"], heads=spec["heads"], mlp_dim=spec["mlp_dim"],
                    type_vocab=spec["type_vocab"],
                    positions=spec.get("positions", "learned")).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=spec["lr"], betas=(spec["b1"], spec["b2"]),
                            eps=spec["eps"], weight_decay=spec["weight_decay"])
    p = spec["max_predictions"]

    def step(batch):
      tokens, segment_ids, positions = batch
      inputs, chosen = bert_mask(tokens, segment_ids > 0, special_ids=spec["special_ids"],
                                 mask_id=spec["mask_id"], vocab_size=spec["vocab_size"],
                                 rate=spec["mask_rate"], mask_prob=spec["mask_prob"],
                                 random_prob=spec["random_prob"], generator=generator)
      order = (~chosen).to(torch.int8).argsort(dim=1, stable=True)[:, :p]
      valid = torch.take_along_dim(chosen, order, dim=1)
      targets = torch.take_along_dim(tokens, order, dim=1)
      with autocast:
        logits = model(inputs, segment_ids, positions, order)
      ce = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none")
      loss = (ce * valid.flatten()).sum() / valid.sum().clamp(min=1)
      opt.zero_grad(set_to_none=True)
      loss.backward()
      if spec["clip_norm"]:
        torch.nn.utils.clip_grad_norm_(model.parameters(), spec["clip_norm"], foreach=True)
      opt.step()
      return loss

    return step, model

  raise ValueError(f"Unknown model {spec['model']!r}.")


def measure(spec: dict, *, steps: int, repeats: int, warmup: int, device: str,
            threads: int) -> dict:
  torch.set_num_threads(threads)
  step, model = build(spec, device)
  if spec.get("compile"):  # torch.compile of the whole step (default inductor mode)
    step = torch.compile(step)
  rng = torch.Generator().manual_seed(1)
  if "batch_npz" in spec:  # text: the JAX side's own first batch
    import numpy as np  # pylint: disable=import-outside-toplevel
    with np.load(spec["batch_npz"]) as z:
      images = tuple(torch.from_numpy(z[k]).long().to(device)
                     for k in ("tokens", "segment_ids", "positions"))
  else:
    images = torch.randint(0, 256, (spec["batch_size"], spec["image_size"], spec["image_size"],
                                    3), dtype=torch.uint8, generator=rng).to(device)
  sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
  if device == "cuda":
    torch.cuda.reset_peak_memory_stats()
  t0 = time.perf_counter()
  step(images).item()
  first_s = time.perf_counter() - t0
  for _ in range(warmup):
    step(images)
  sync()
  windows = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    for _ in range(steps):
      loss = step(images)
    loss.item()
    sync()
    windows.append((time.perf_counter() - t0) / steps)
  median = statistics.median(windows)
  q = statistics.quantiles(windows, n=4) if len(windows) >= 2 else [median] * 3
  try:
    import os  # pylint: disable=import-outside-toplevel
    load = round(os.getloadavg()[0], 2)
  except OSError:
    load = None
  return {
      "benchmark": "train_step",
      "framework": "pytorch_compile" if spec.get("compile") else "pytorch", "model": spec["model"],
      "torch": torch.__version__,
      "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
      "backend": "gpu" if device == "cuda" else "cpu", "num_devices": 1,
      "batch_size": spec["batch_size"], "compute_dtype": spec["dtype"], "parallel": "-",
      "first_step_s": round(first_s, 3), "compile_s": None,
      "step_ms": round(1e3 * median, 3), "step_ms_min": round(1e3 * min(windows), 3),
      "step_ms_max": round(1e3 * max(windows), 3), "step_ms_iqr": round(1e3 * (q[2] - q[0]), 3),
      "examples_per_s": round(spec["batch_size"] / median, 2), "steps_per_window": steps,
      "windows": repeats, "warmup_steps": warmup, "cpu_threads": torch.get_num_threads(),
      "peak_memory_bytes": torch.cuda.max_memory_allocated() if device == "cuda" else None,
      "params": sum(p.numel() for p in model.parameters()),
      "channels_last": spec.get("channels_last", spec["encoder"].startswith("resnet")),
      "tokens_per_s": (round(spec["batch_size"] * spec["seq_len"] / median, 1)
                       if "seq_len" in spec else None),
      "load_avg_1m_after": load, "spec": spec,
  }


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--spec", required=True, help="JSON model spec (see ssl_jax.bench.harness)")
  p.add_argument("--steps", type=int, default=10)
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
  p.add_argument("--threads", type=int, default=1)
  args = p.parse_args(argv)
  print(json.dumps(measure(json.loads(args.spec), steps=args.steps, repeats=args.repeats,
                           warmup=args.warmup, device=args.device, threads=args.threads)),
        flush=True)


if __name__ == "__main__":
  main(sys.argv[1:])
