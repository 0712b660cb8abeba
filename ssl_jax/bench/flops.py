"""Analytic model FLOPs of a train step: encoders, heads, and the networks a method runs.

Counting convention (the one of MFU in Chowdhery et al., 2022, "PaLM", arXiv:2204.02311,
appendix B, and of Kaplan et al., 2020, arXiv:2001.08361): a multiply-add is 2 FLOPs; only the
matrix products of the networks count (convolutions, dense layers, attention's ``QK^T`` and
``AV``); normalization, activations, pooling, augmentation, the loss and the optimizer do not. A
trained network costs 3x its forward pass (forward, then the gradients of activations and of
weights, each as large as the forward); a teacher (EMA/momentum network) costs its forward pass
only. No rematerialization is counted (a remat model recomputes more than its model FLOPs).

The encoder is walked as built (``nnx.eval_shape``: no parameter is computed), so every
constructor option (stem, width, patch size, ...) is honoured; each layer's FLOPs follow from its
kernel shape, strides, padding and input size:

* convolution: ``2 * Ho * Wo * kh * kw * C_in * C_out`` per example;
* dense layer: ``2 * tokens * in * out`` per example;
* self-attention over ``T`` tokens of width ``D``: ``2 * 2 * T * T * D`` (scores and weighted sum).

Cross-checked against XLA's ``compiled.cost_analysis()["flops"]`` in tests/test_benchmarks.py.
XLA counts every operation (elementwise, normalization, optimizer) and reports the program of
one device, so it is an upper bound of the model FLOPs per device on matmul-dominated models.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np
from flax import nnx

from ssl_jax.models.cnn import SmallCNN
from ssl_jax.models.conv import Conv, resolve_padding
from ssl_jax.models.resnet import BasicBlock, Bottleneck, ResNet
from ssl_jax.models.vit import VisionTransformer

PyTree = Any


def _valid_taps(size: int, kernel: int, stride: int, lo: int, out: int) -> int:
  """Number of (output position, kernel tap) pairs along one axis that read a real (not padded)
  input element."""
  return sum(1 for o in range(out) for t in range(kernel) if 0 <= o * stride - lo + t < size)


def conv_flops(conv: Conv, hw: Sequence[int], *,
               count_padding: bool = True) -> tuple[int, tuple[int, int]]:
  """``(FLOPs per example, (Ho, Wo))`` of ``conv`` applied to an ``[H, W, C_in]`` input.

  ``count_padding=False`` leaves out the multiply-adds with zero padding, which is how XLA's cost
  analysis counts convolutions (used for the cross-check; MFU counts every tap).
  """
  (kh, kw), (sh, sw) = conv.kernel_size, conv.strides
  (top, bottom), (left, right) = resolve_padding(conv.padding, hw, (kh, kw), (sh, sw))
  ho = (hw[0] + top + bottom - kh) // sh + 1
  wo = (hw[1] + left + right - kw) // sw + 1
  if count_padding:
    taps = ho * kh * wo * kw
  else:
    taps = _valid_taps(hw[0], kh, sh, top, ho) * _valid_taps(hw[1], kw, sw, left, wo)
  return 2 * taps * conv.in_features * conv.out_features, (ho, wo)


def linear_flops(layer: nnx.Linear, tokens: int = 1) -> int:
  """FLOPs per example of a dense layer applied to ``tokens`` vectors."""
  return 2 * tokens * layer.in_features * layer.out_features


def _resnet(net: ResNet, hw: Sequence[int], cp: bool) -> int:
  total, hw = conv_flops(net.stem_conv, hw, count_padding=cp)
  if net.stem_kind == "imagenet":  # 3x3 stride-2 max-pool, padding 1
    hw = tuple((s + 2 - 3) // 2 + 1 for s in hw)
  for blk in net.blocks:
    convs = ([blk.conv1, blk.conv2] if isinstance(blk, BasicBlock) else
             [blk.conv1, blk.conv2, blk.conv3])
    assert isinstance(blk, (BasicBlock, Bottleneck))
    block_in = hw
    for conv in convs:
      f, hw = conv_flops(conv, hw, count_padding=cp)
      total += f
    if blk.shortcut is not None:
      total += conv_flops(blk.shortcut, block_in, count_padding=cp)[0]
  if net.fc is not None:
    total += linear_flops(net.fc)
  return total


def _vit(net: VisionTransformer, hw: Sequence[int], cp: bool) -> int:
  total, (gh, gw) = conv_flops(net.patch_embed, hw, count_padding=cp)
  t = net.num_prefix + gh * gw
  for blk in net.blocks:
    total += sum(linear_flops(layer, t) for layer in (blk.attn.qkv, blk.attn.proj, blk.fc1,
                                                        blk.fc2))
    total += 2 * 2 * t * t * net.dim  # QK^T and AV over all heads
  if net.head is not None:
    total += linear_flops(net.head)
  return total


def _small_cnn(net: SmallCNN, hw: Sequence[int], cp: bool) -> int:
  total = 0
  for conv, pool in zip(net.convs, net.pool):
    f, hw = conv_flops(conv, hw, count_padding=cp)
    total += f
    if pool:
      hw = (hw[0] // 2, hw[1] // 2)
  for layer in (net.fc_hidden, net.fc):
    if layer is not None:
      total += linear_flops(layer)
  return total


def text_forward_flops(net, seq_len: int) -> int:
  """Forward FLOPs per row of ``seq_len`` tokens of a text :class:`~ssl_jax.models.text.
  Transformer`'s blocks (embedding lookups are free; attention over the full ``T x T``, as
  computed, whatever the packing mask; the pooler and output layer are counted by the methods
  that run them)."""
  per_token = 0
  for blk in net.blocks:
    per_token += sum(linear_flops(layer) for layer in (blk.attn.qkv, blk.attn.out, blk.fc1,
                                                       blk.fc2))
  return seq_len * per_token + len(net.blocks) * 2 * 2 * seq_len * seq_len * net.width


def _text_step_flops(config, batch: int) -> dict:
  """The language methods, per row of ``seq_len`` tokens (forward passes as run):

  * ``mlm``: the encoder on every token; the head (dense + tied vocabulary projection) on the
    ``max_predictions`` gathered positions; no pooler.
  * ``nsp``: ``mlm`` plus the pooler and the 2-way classifier on the ``[CLS]`` token.
  * ``clm``: the decoder on every token and the tied output layer on every position.
  * ``simcse``: two passes of the encoder (two dropout masks) and of the optional MLP.
  """
  # pylint: disable=import-outside-toplevel
  from ssl_jax.methods import clm, mlm, simcse, text_common
  tokenizer = text_common.tokenizer_for(config)
  method, t = config.method, config.text.seq_len
  if method not in ("mlm", "nsp", "clm", "simcse"):
    raise ValueError(f"No FLOPs formula for text method {method!r}.")
  builders = {"mlm": lambda: mlm.build_networks(config, tokenizer),
              "nsp": lambda: mlm.build_networks(config, tokenizer, nsp=True),
              "clm": lambda: clm.build_networks(config, tokenizer),
              "simcse": lambda: simcse.build_networks(config, tokenizer)}
  bundle = _abstract_bundle(builders[method]())
  enc = bundle.encoder
  vocab_projection = 2 * enc.width * enc.vocab_size  # per position
  parts = {"encoder": text_forward_flops(enc, t)}
  passes = 1
  if method in ("mlm", "nsp"):
    parts["mlm_head"] = mlm.max_predictions(config) * (linear_flops(bundle.mlm_head.dense)
                                                       + vocab_projection)
  if method == "nsp":
    parts["pooler"] = linear_flops(enc.pooler)
    parts["nsp_head"] = linear_flops(bundle.nsp_head.fc)
  if method == "clm":
    parts["lm_head"] = t * vocab_projection
  if method == "simcse":
    passes = 2
    if getattr(bundle, "mlp", None) is not None:
      parts["mlp"] = linear_flops(bundle.mlp)
  trained = batch * passes * sum(parts.values())
  return {"forward_per_example": parts, "passes": passes, "trained_forward": trained,
          "teacher_forward": 0, "model_flops": 3 * trained, "tokens_per_example": t}


def _dense_stack(module: nnx.Module) -> int:
  """FLOPs per example of a module made of dense layers applied once each (MLP heads)."""
  return sum(linear_flops(m) for _, m in nnx.iter_graph(module) if isinstance(m, nnx.Linear))


def network_forward_flops(module: nnx.Module, hw: Sequence[int] | None, *,
                          count_padding: bool = True) -> int:
  """Forward FLOPs per example of an encoder (by type) or a head (dense layers).

  Args:
    module: a built (possibly abstract) :class:`ResNet`, :class:`VisionTransformer`,
      :class:`SmallCNN`, or any module whose dense layers each run once per example (MLP heads).
    hw: input height and width for encoders (ignored for heads).
    count_padding: see :func:`conv_flops`.

  Raises:
    ValueError: for an encoder type without a formula (anything with convolutions or attention
      that is not one of the above).
  """
  if isinstance(module, ResNet):
    return _resnet(module, hw, count_padding)
  if isinstance(module, VisionTransformer):
    return _vit(module, hw, count_padding)
  if isinstance(module, SmallCNN):
    return _small_cnn(module, hw, count_padding)
  if any(isinstance(m, Conv) for _, m in nnx.iter_graph(module)):
    raise ValueError(f"No FLOPs formula for {type(module).__name__}.")
  return _dense_stack(module)


def _abstract_bundle(nets):
  """The NNX module tree of a method's :class:`~ssl_jax.models.nnx_utils.Networks`, built
  abstractly (shapes only)."""
  build = nets._build  # pylint: disable=protected-access
  return nnx.eval_shape(lambda: build(nnx.Rngs(0), None))


def _networks(method_name: str, config,
              view_sizes: Sequence[Sequence[int]]) -> tuple[dict, dict]:
  """``({name: (module, [hw, ...])}, {name: (module, [hw, ...])})``: trained networks and teachers,
  each with the size of every view it runs a forward pass on (per example of the batch).

  Trained networks see every view; teachers (BYOL, MoCo v3) the global views only (the largest
  size, as multi-crop teachers do); MoCo v2's query and key networks see one view each (the first
  and the second in name order), or both with its symmetric loss."""
  from ssl_jax import methods  # pylint: disable=import-outside-toplevel

  module = methods.get_module(method_name)
  kw = config.method_kwargs
  builders = {
      "simclr": lambda: module.build_networks(config, projector_dims=(
          kw.proj_hidden_dim, kw.proj_dim, kw.proj_layers, kw.proj_output_norm)),
      "byol": lambda: module.build_networks(config, with_predictor=True),
      "moco_v3": lambda: module.build_networks(config, with_predictor=True),
  }
  for name in ("barlow_twins", "vicreg"):
    builders[name] = lambda: module.build_networks(
        config, hidden=kw.proj_hidden_dim, out=kw.proj_dim, layers=kw.proj_layers)
  nets = builders.get(method_name, lambda: module.build_networks(config))()
  bundle = _abstract_bundle(nets)
  parts = {name: m for name, m in vars(bundle).items() if isinstance(m, nnx.Module)}
  views = [tuple(hw) for hw in view_sizes]
  largest = max(views, key=lambda s: (s[0] * s[1], s))
  global_views = [hw for hw in views if hw == largest]
  trained = {name: (m, views) for name, m in parts.items()}
  teachers: dict = {}
  if method_name in ("byol", "moco_v3"):
    teachers = {f"teacher_{n}": (parts[n], global_views)
                for n in ("encoder", "projector") if n in parts}
  elif method_name == "moco_v2":
    query, key = (views, views) if kw.symmetric else (views[:1], views[1:2])
    trained = {name: (m, query) for name, m in parts.items()}
    teachers = {f"teacher_{name}": (m, key) for name, m in parts.items()}
  return trained, teachers


def method_step_flops(config, view_sizes: Sequence[Sequence[int]] | None, *,
                      batch_size: int | None = None) -> dict:
  """Model FLOPs of one train step of ``config`` (whole global batch, all devices).

  Every view counts at its own resolution: two global views and N smaller local crops
  (multi-crop) cost the sum of their per-view forward passes.

  Args:
    config: a run config (method, encoder, heads, batch size).
    view_sizes: the ``(height, width)`` of each view the encoder sees, in the views' sorted name
      order (e.g. ``[(16, 16), (16, 16), (8, 8), (8, 8)]``); unused (None) for text methods.
    batch_size: examples per step (default ``config.batch_size``).

  Returns:
    ``{"forward_per_example": {network: FLOPs of one forward pass on one global view},
    "forward_per_view": {network: [FLOPs of its forward pass on each view it sees]},
    "trained_forward", "teacher_forward", "model_flops"}`` where the last three are per step and
    ``model_flops = 3 * trained_forward + teacher_forward``.
  """
  from ssl_jax import methods  # pylint: disable=import-outside-toplevel
  batch = config.batch_size if batch_size is None else batch_size
  if methods.modality(config.method) == "text":
    return _text_step_flops(config, batch)
  if not view_sizes or any(len(hw) != 2 for hw in view_sizes):
    raise ValueError(f"method_step_flops needs the (height, width) of every view, got "
                     f"{view_sizes!r}.")
  trained, teachers = _networks(config.method, config, view_sizes)
  largest = max((tuple(hw) for hw in view_sizes), key=lambda s: (s[0] * s[1], s))
  per_example, per_view, totals = {}, {}, {"trained": 0, "teacher": 0}
  for kind, group in (("trained", trained), ("teacher", teachers)):
    for name, (module, sizes) in group.items():
      per_view[name] = [network_forward_flops(module, hw) for hw in sizes]
      per_example[name] = network_forward_flops(module, largest)
      totals[kind] += sum(per_view[name]) * batch
  return {"forward_per_example": per_example, "forward_per_view": per_view,
          "trained_forward": totals["trained"], "teacher_forward": totals["teacher"],
          "model_flops": 3 * totals["trained"] + totals["teacher"]}


def xla_flops(compiled) -> float | None:
  """``compiled.cost_analysis()["flops"]`` (one device's program), or None where the backend
  does not report it (best-effort by XLA's own account)."""
  try:
    cost = compiled.cost_analysis()
  except Exception:  # pylint: disable=broad-except
    return None
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  if not cost or "flops" not in cost:
    return None
  return float(cost["flops"])


def param_count(tree: PyTree) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


__all__ = ["conv_flops", "linear_flops", "network_forward_flops", "method_step_flops",
           "xla_flops", "param_count"]
