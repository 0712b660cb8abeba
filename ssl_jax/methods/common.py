"""Pieces shared by method modules: networks, views, momentum (EMA) teachers and their schedules,
queues."""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from ssl_jax import models
from ssl_jax.data.sources import DEFAULT_HOLDOUT, source_image_shape
from ssl_jax.losses.utils import all_gather
from ssl_jax.models.heads import MLPHead
from ssl_jax.models.nnx_utils import Bundle, Networks

PyTree = Any


# Views. A method module declares what it needs as ``VIEWS = {"global": g, "local": l}`` (default
# :data:`DEFAULT_VIEWS`); each count is an int (exactly that many) or a ``(min, max)`` pair with
# ``max=None`` for no upper bound, e.g. multi-crop: ``{"global": 2, "local": (1, None)}``. Global
# views are the views of the largest size (height x width) in the batch, local views all others
# (multi-crop's smaller crops); each group lists its views in sorted name order. The engine checks
# a recipe against ``VIEWS`` when it first traces the step (:func:`check_views`), before training.
DEFAULT_VIEWS = {"global": 2, "local": 0}


def split_views(shapes: Mapping[str, Sequence[int]]) -> tuple[list[str], list[str]]:
  """``(global_names, local_names)`` of views ``{name: [B, h, w, C]}`` (shapes or arrays' shapes):
  global views have the largest ``h * w`` (ties broken by ``(h, w)``), local views any other size;
  each list in sorted name order."""
  hw = {name: tuple(shape[1:3]) for name, shape in shapes.items()}
  if not hw:
    return [], []
  largest = max(hw.values(), key=lambda s: (s[0] * s[1], s))
  names = sorted(hw)
  return [n for n in names if hw[n] == largest], [n for n in names if hw[n] != largest]


def _count_ok(count: int, need) -> bool:
  low, high = (need, need) if isinstance(need, int) else need
  return count >= low and (high is None or count <= high)


def _describe(need) -> str:
  if isinstance(need, int):
    return f"exactly {need}"
  low, high = need
  return f"at least {low}" if high is None else f"{low} to {high}"


def check_views(shapes: Mapping[str, Sequence[int]], need=None, *, method: str = "this method"):
  """Raises a ValueError naming ``--config.views.<name>`` unless the views ``{name: [B, h, w, C]}``
  hold the global and local views ``need`` asks for (a module's ``VIEWS``, see above), and the
  views of each group have one shape ``[h, w, C]`` (a group is encoded as one concatenated batch).
  """
  need = dict(DEFAULT_VIEWS, **(need or {}))
  groups = dict(zip(("global", "local"), split_views(shapes)))
  for kind in ("global", "local"):
    kind_shapes = {n: tuple(shapes[n][1:]) for n in groups[kind]}
    if len(set(kind_shapes.values())) > 1:
      listed = ", ".join(f"--config.views.{n}: {s}" for n, s in kind_shapes.items())
      raise ValueError(
          f"{method}'s {kind} views must all have the same output shape (h, w, C), since they are "
          f"encoded as one batch, but they differ: {listed}. Make those recipes produce the same "
          "size and channels (e.g. the same random_resized_crop(size=...), and grayscale in all "
          "or none of them).")
    if not _count_ok(len(groups[kind]), need[kind]):
      sizes = ", ".join(f"{n}: {tuple(shapes[n][1:3])}" for n in sorted(shapes))
      raise ValueError(
          f"{method} needs {_describe(need[kind])} {kind} view(s) (VIEWS={need}; global = the "
          f"largest size), but config.views makes {len(groups[kind])} ({sizes or 'none'}). Add a "
          "view with --config.views.<name>='<recipe>' (a smaller output size makes a local crop) "
          "or set the recipes of --config.views.<name> to the sizes the method takes.")


def global_local_views(batch, *, min_global: int = 2,
                       min_local: int = 0) -> tuple[list[jax.Array], list[jax.Array]]:
  """The views of a batch split by resolution: ``(global views, local views)``, each in sorted
  name order (:func:`split_views`). Multi-crop (Caron et al. 2020, SwAV, section 3.2): 2 global
  views and N local crops at a lower resolution.

  Raises:
    ValueError: fewer than ``min_global`` global or ``min_local`` local views (naming
      ``--config.views.<name>``).
  """
  views = batch["views"]
  shapes = {name: v.shape for name, v in views.items()}
  check_views(shapes, {"global": (min_global, None), "local": (min_local, None)})
  global_names, local_names = split_views(shapes)
  return [views[n] for n in global_names], [views[n] for n in local_names]


def two_views(batch) -> tuple[jax.Array, jax.Array]:
  """The two views of a batch, in sorted name order: exactly two views of the same size
  (:func:`global_local_views` with ``min_global=2`` and no local view)."""
  shapes = {name: v.shape for name, v in batch["views"].items()}
  check_views(shapes, DEFAULT_VIEWS)
  (a, b), _ = global_local_views(batch, min_global=2)
  return a, b


def ema(target: PyTree, online: PyTree, momentum) -> PyTree:
  """``momentum * target + (1 - momentum) * online``, leaf by leaf (float32)."""
  return jax.tree.map(lambda t, o: momentum * t + (1.0 - momentum) * o, target, online)


def cosine_momentum(step, total_steps: int, base: float, final: float = 1.0):
  """BYOL's schedule: ``final - (final - base) * (cos(pi * step / total_steps) + 1) / 2``.

  Grill et al. 2020, section 3.2 (``tau = 1 - (1 - tau_base)(cos(pi k / K) + 1) / 2``); MoCo v3
  uses the same from 0.99 to 1 (Chen et al. 2021, section 4).

  >>> round(float(cosine_momentum(0, 100, 0.996)), 6), float(cosine_momentum(100, 100, 0.996))
  (0.996, 1.0)
  """
  if total_steps is None or total_steps <= 0:
    raise ValueError(f"cosine_momentum needs total_steps > 0, got {total_steps}; build the method "
                     "with methods.make(name, config, run=RunInfo(total_steps=...)).")
  progress = jnp.clip(jnp.asarray(step, jnp.float32) / total_steps, 0.0, 1.0)
  return final - (final - base) * (jnp.cos(math.pi * progress) + 1.0) / 2.0


def gather_global(x: jax.Array, axis_name) -> jax.Array:
  """The global batch of ``x`` ``[n, ...]`` -> ``[n * devices, ...]``, identical on every device,
  without gradient: for method state such as queues (MoCo's keys, NNCLR's support set).

  Typed invariant over ``axis_name`` (``all_gather(..., to="invarying")``) so it can live in the
  replicated train state under ``shard_map(check_vma=True)``. Identity without an axis. The
  gather itself is :func:`ssl_jax.losses.utils.all_gather`, the package's one all-gather.
  """
  return all_gather(jax.lax.stop_gradient(x), axis_name, invariant=True)


def push(queue: jax.Array, ptr: jax.Array, rows: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Writes ``rows`` ``[N, D]`` over the oldest rows of the ring buffer ``queue`` ``[K, D]`` from
  row ``ptr`` (wrapping around); returns the new queue and pointer ``(ptr + N) % K``. ``N`` need
  not divide ``K``.

  Example:
    >>> import jax.numpy as jnp
    >>> q, p = push(jnp.zeros((3, 1)), jnp.int32(2), jnp.array([[1.0], [2.0]]))
    >>> q[:, 0].tolist(), int(p)
    ([2.0, 0.0, 1.0], 1)
  """
  size, n = queue.shape[0], rows.shape[0]
  if n > size:
    raise ValueError(f"A queue of {size} rows cannot take a global batch of {n} rows; make the "
                     "queue at least as large as what one step pushes.")
  index = (ptr + jnp.arange(n)) % size
  return queue.at[index].set(rows.astype(queue.dtype)), ((ptr + n) % size).astype(jnp.int32)


def image_source_kwargs(config) -> dict:
  """The :func:`ssl_jax.data.load_source` keyword arguments of a run's ``data`` settings."""
  return dict(data_dir=config.data_dir or None, image_size=config.data.image_size or None,
              on_corrupt=config.data.on_corrupt, color=config.data.get("color", "auto"),
              holdout=config.data.get("holdout", DEFAULT_HOLDOUT))


def fitted_encoder_kwargs(config) -> dict:
  """``config.encoder_kwargs`` fitted to the run's training images (``config.dataset``'s
  ``config.train_split``, inspected once per process): ``in_channels`` and a ViT's
  ``image_size`` follow the data unless set (:func:`ssl_jax.models.fit_encoder_kwargs`, which
  refuses sizes the encoder cannot take). Every image method builds its encoder through this;
  unchanged where the data cannot be read here (a benchmark on synthetic images)."""
  kwargs = config.encoder_kwargs.to_dict()
  shape = source_image_shape(config.dataset, config.train_split, **image_source_kwargs(config))
  if shape is None:
    return kwargs
  data = f"{config.dataset} ({config.train_split} split)"
  return models.fit_encoder_kwargs(config.encoder, kwargs, shape, data=data)


def build_encoder(config, rngs, bn_axis_name):
  """The run's encoder: ``config.encoder`` with ``config.encoder_kwargs`` fitted to the data
  (:func:`fitted_encoder_kwargs`) in the compute dtype, BatchNorm synced over ``bn_axis_name``
  (for a method's ``Networks`` build function)."""
  return models.build_encoder(config.encoder, rngs=rngs, bn_axis_name=bn_axis_name,
                              dtype=jnp.dtype(config.compute_dtype),
                              **fitted_encoder_kwargs(config))


def encoder_width(config) -> int:
  """``out_features`` of ``config.encoder`` fitted to the data (the embedding width without a
  head), built abstractly: no parameter is computed."""
  encoder = nnx.eval_shape(lambda: models.build_encoder(
      config.encoder, rngs=nnx.Rngs(0), **fitted_encoder_kwargs(config)))
  return encoder.out_features


def bn_axis(config, axis_name):
  """The axis BatchNorm syncs its batch statistics over: the data axis when ``config.sync_bn``."""
  return axis_name if config.sync_bn else None


def plain_init(nets: Networks) -> Callable:
  """``Method.init`` for a method whose only state is its networks (``method_state == {}``)."""

  def init(rng, example_batch):
    del example_batch  # the networks' shapes do not depend on the image size
    params, batch_stats = nets.init(rng)
    return params, batch_stats, {}

  return init


def encoder_features(nets: Networks) -> Callable:
  """``Method.features``: the ``encoder`` of ``nets`` (before any head), BatchNorm in inference
  mode, as every paper here evaluates (the method state is not read)."""

  def features(params, batch_stats, method_state, images):
    del method_state
    return nets.bind(params, batch_stats).encoder(images, train=False)

  return features


def projector_networks(config, *, hidden: int, out: int, layers: int,
                       output_norm: str | None = None, output_bias: bool = True) -> Networks:
  """Encoder + projector ``Linear-BN-ReLU`` x (``layers - 1``), then a ``Linear`` (with
  ``output_norm`` after it, e.g. SimCLR v2's ``"bn"``), as one NNX module tree (no projector
  when ``layers == 0``)."""
  dtype = jnp.dtype(config.compute_dtype)

  def build(rngs, bn_axis_name):
    encoder = build_encoder(config, rngs, bn_axis_name)
    if layers == 0:
      return Bundle(encoder=encoder)
    projector = MLPHead(encoder.out_features, hidden, out, num_layers=layers, hidden_norm="bn",
                        output_norm=output_norm, output_bias=output_bias,
                        bn_axis_name=bn_axis_name, dtype=dtype, rngs=rngs)
    return Bundle(encoder=encoder, projector=projector)

  return Networks(build)


def bias_free_projector_networks(config, *, hidden: int, out: int, layers: int) -> Networks:
  """The projector of Barlow Twins and VICReg: :func:`projector_networks` whose output layer has
  no bias and no normalization. Both methods expose it as their ``build_networks``."""
  return projector_networks(config, hidden=hidden, out=out, layers=layers, output_bias=False)


def embed_views(nets: Networks, params, batch_stats, batch, *, axis_name, use_projector: bool):
  """Each view through encoder (+ projector) separately, as the official PyTorch code of Barlow
  Twins and VICReg: ``(z_a, z_b, new_batch_stats)``."""
  model = nets.bind(params, batch_stats, axis_name=axis_name)
  out = []
  for x in two_views(batch):
    z = model.encoder(x, train=True)
    out.append(model.projector(z, train=True) if use_projector else z)
  return out[0], out[1], nets.batch_stats(model)


# Momentum (EMA) teachers: ``{"params": {name: ...}, "batch_stats": {name: ...}}`` holding copies
# of the sub-networks ``names`` of the trained ones. The teacher runs in training mode (batch
# statistics, as BYOL's and MoCo's official code) and keeps its *own* BatchNorm running averages,
# updated by its forward passes; they are never used for training, only kept so the teacher is a
# complete network.


def teacher_init(params: PyTree, batch_stats: PyTree, names) -> PyTree:
  """A teacher starting as a copy of the sub-networks ``names``. Copies, not views: the train
  state is donated, so the teacher must not share buffers with the trained networks."""
  teacher = {"params": {k: params[k] for k in names},
             "batch_stats": {k: batch_stats[k] for k in names if k in batch_stats}}
  return jax.tree.map(jnp.copy, teacher)


def teacher_after_forward(teacher: PyTree, new_batch_stats: PyTree, *, axis_name,
                          sync_bn: bool) -> PyTree:
  """The teacher after its forward passes in ``loss_fn``: its new BatchNorm statistics; with
  unsynced BatchNorm on several devices they are averaged so the replicated copy stays identical
  on every device (as the engine does for the trained networks' statistics)."""
  if axis_name is not None and not sync_bn:
    new_batch_stats = jax.lax.pmean(new_batch_stats, axis_name)
  return {"params": teacher["params"], "batch_stats": new_batch_stats}


def teacher_update(teacher: PyTree, params: PyTree, momentum) -> PyTree:
  """``Method.update`` of a teacher: its parameters move to the trained ones by :func:`ema`."""
  online = {k: params[k] for k in teacher["params"]}
  return {"params": ema(teacher["params"], online, momentum),
          "batch_stats": teacher["batch_stats"]}
