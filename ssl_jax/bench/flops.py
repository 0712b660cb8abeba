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

from ssl_jax import modalities
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


def text_step_flops(config, view_hw, batch: int) -> dict:
  """:func:`method_step_flops` of a language method, per row of ``seq_len`` tokens (forward
  passes as run): the encoder's blocks on every token (:func:`text_forward_flops`) and the heads
  the method declares (``flops_networks(config).heads``, :class:`ssl_jax.methods.FlopsHead`: a
  network's dense layers and the tied vocabulary projection at so many positions), times the
  method's passes (e.g. SimCSE's two dropout masks).

  ``view_hw`` is unused (rows have no views): the signature of the modality hook
  ``STEP_FLOPS`` (:mod:`ssl_jax.modalities`).
  """
  del view_hw
  declared = _declared(config)
  bundle = _abstract_bundle(declared.networks)
  enc, t = bundle.encoder, config.text.seq_len
  vocab_projection = 2 * enc.width * enc.vocab_size  # per position
  parts = {"encoder": text_forward_flops(enc, t)}
  for name, head in declared.heads.items():
    dense = 0
    if head.network is not None:
      module = bundle
      for attr in head.network.split("."):
        module = getattr(module, attr)
      dense = _dense_stack(module)
    parts[name] = head.positions * (dense + (vocab_projection if head.vocab_projection else 0))
  passes = declared.passes
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


def _declared(config):
  """The method's :class:`ssl_jax.methods.FlopsNetworks` (its module's ``flops_networks``)."""
  from ssl_jax import methods  # pylint: disable=import-outside-toplevel
  module = methods.get_module(config.method)
  if not hasattr(module, "flops_networks"):
    raise ValueError(f"No FLOPs declaration for method {config.method!r}: its module "
                     f"{module.__name__} needs flops_networks(config) (see ssl_jax.methods).")
  return module.flops_networks(config)


def _networks(config, view_sizes: Sequence[Sequence[int]]) -> tuple[dict, dict]:
  """``({name: (module, [hw, ...])}, {name: (module, [hw, ...])})``: trained networks and teachers
  of an image method as it declares them (``flops_networks``), each with the size of every view
  it runs a forward pass on (per example of the batch).

  Trained networks see every view, or the first ``passes`` views in name order where the method
  declares fewer passes than there are views (MoCo v2's asymmetric loss); teachers (BYOL, MoCo
  v3) see the global views (the largest size, as multi-crop teachers do), or the next ``passes``
  views where the trained networks see only some (MoCo v2's key network)."""
  declared = _declared(config)
  bundle = _abstract_bundle(declared.networks)
  parts = {name: m for name, m in vars(bundle).items() if isinstance(m, nnx.Module)}
  views = [tuple(hw) for hw in view_sizes]
  largest = max(views, key=lambda s: (s[0] * s[1], s))
  if declared.passes is not None and declared.passes < len(views):  # e.g. MoCo v2's asymmetric loss: query on one view, key on
    seen, teacher_views = views[:declared.passes], views[declared.passes:2 * declared.passes]
  else:
    seen, teacher_views = views, [hw for hw in views if hw == largest]
  trained = {name: (m, seen) for name, m in parts.items()}
  teachers = {f"teacher_{n}": (parts[n], teacher_views) for n in declared.teachers if n in parts}
  return trained, teachers


def method_step_flops(config, view_sizes: Sequence[Sequence[int]] | None, *,
                      batch_size: int | None = None) -> dict:
  """Model FLOPs of one train step of ``config`` (whole global batch, all devices), by the
  formula of its modality (:mod:`ssl_jax.modalities`: :func:`image_step_flops`,
  :func:`text_step_flops`).

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
  batch = config.batch_size if batch_size is None else batch_size
  return modalities.hook(modalities.of(config), "STEP_FLOPS")(config, view_sizes, batch)


def image_step_flops(config, view_sizes: Sequence[Sequence[int]], batch: int) -> dict:
  """:func:`method_step_flops` of an image method: each network's forward FLOPs on every view it
  sees, at that view's size (:func:`_networks`)."""
  if not view_sizes or any(len(hw) != 2 for hw in view_sizes):
    raise ValueError(f"method_step_flops needs the (height, width) of every view, got "
                     f"{view_sizes!r}.")
  trained, teachers = _networks(config, view_sizes)
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
           "image_step_flops", "text_step_flops", "xla_flops", "param_count"]
