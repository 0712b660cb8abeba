"""Running the per-device step three ways: ``shard_map`` (default), ``pmap`` and ``gspmd``.

:class:`Engine` compiles :func:`ssl_jax.train.step.make_step` for one parallel mode over all
devices and owns where the state and batches live:

* ``shard_map``: ``jax.jit(jax.shard_map(step))`` over a 1-D ``Mesh`` with axis ``"data"``; the
  state is replicated, the batch is split along its leading axis; ``check_vma=True`` (pinned).
* ``pmap``: ``jax.pmap(step, axis_name="data")``, the classic API; the state carries a leading
  device axis and gradients are averaged explicitly (see :mod:`ssl_jax.train.step`).
* ``gspmd``: ``jax.jit`` of the global step with sharding annotations; the batch is sharded over
  ``"data"``, the state replicated or, with ``fsdp=True``, each large leaf of the parameters and
  optimizer state sharded along its largest dimension divisible by the device count.

A method may keep some method-state leaves split over the data axis along their leading
dimension instead of replicated (``Method.state_sharding``: a memory bank of the whole dataset):
``P("data")`` under ``shard_map`` (the method sees the device's rows), sharded ``NamedSharding``
under GSPMD (the method sees the global array) and split rows under ``pmap``. The method's
periodic work (``Method.periodic``) is compiled the same way as the step, beside it
(:meth:`Engine.run_periodic`).

The state is donated and the step compiles once (``trace_count`` counts traces). The step's rng is
``fold_in(state.rng, state.step)``, derived inside the compiled function, so a resumed run draws
the same keys. Augmentation keys are folded with each example's global ``index``, so results do not
depend on the number of devices.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from ssl_jax.data.sharding import to_global
from ssl_jax.train import state as state_lib
from ssl_jax.train import xla_options
from ssl_jax.train.step import make_step

PyTree = Any
DATA_AXIS = "data"


def make_mesh(devices=None) -> jax.sharding.Mesh:
  """A 1-D data-parallel mesh over ``devices`` (default: all devices of all processes)."""
  devices = list(devices if devices is not None else jax.devices())
  return jax.make_mesh((len(devices),), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,),
                       devices=devices)


def fsdp_spec(shape: tuple[int, ...], num_devices: int, min_size: int) -> P:
  """Shards the largest dimension divisible by ``num_devices`` (leaves under ``min_size``
  elements, scalars and keys stay replicated)."""
  if int(np.prod(shape, dtype=np.int64)) < min_size:
    return P()
  dims = sorted(range(len(shape)), key=lambda d: -shape[d])
  for d in dims:
    if shape[d] % num_devices == 0:
      spec = [None] * len(shape)
      spec[d] = DATA_AXIS
      return P(*spec)
  return P()


class Engine:
  """Compiled train step and state placement for one parallel mode.

  Args:
    method: the :class:`ssl_jax.methods.Method`.
    tx: the optimizer.
    preprocess: ``preprocess(batch, key) -> batch`` run on device inside the step.
    mode: ``"shard_map"``, ``"pmap"`` or ``"gspmd"``.
    global_batch_size: examples per step over all devices (must divide evenly).
    devices: devices to run on (default: all).
    sync_bn: BatchNorm statistics synced over the data axis inside the step (the method reads
      ``axis_name``); without it the running statistics are averaged after each step.
    clip_norm: global-norm gradient clipping inside the step (0: off).
    fsdp, fsdp_min_size: GSPMD parameter sharding.
    nan_at_step, nan_num_steps: debug switch passed to the step.
    compiler_options: XLA options of the compiled step (``shard_map`` and ``gspmd``; ``jax.pmap``
      takes none), e.g. :func:`ssl_jax.train.xla_options.step_compiler_options`. With oneDNN
      in them, the compiled step is checked for oneDNN fusions this jaxlib gets wrong before it
      first runs, and compiled without oneDNN if it has any (a warning says so).
  """

  def __init__(self, method, tx, preprocess: Callable, *, mode: str = "shard_map",
               global_batch_size: int, devices=None, sync_bn: bool = True,
               clip_norm: float = 0.0, fsdp: bool = False,
               fsdp_min_size: int = 2**14, nan_at_step: int | None = None,
               nan_num_steps: int = 1, compiler_options: dict | None = None):
    self.method, self.tx, self.mode = method, tx, mode
    self.preprocess = preprocess
    self.mesh = make_mesh(devices)
    self.num_devices = self.mesh.devices.size
    if global_batch_size <= 0 or global_batch_size % self.num_devices:
      raise ValueError(f"batch_size={global_batch_size} must be a positive multiple of the number "
                       f"of devices ({self.num_devices}).")
    if fsdp and mode != "gspmd":
      raise ValueError("fsdp=True needs parallel mode 'gspmd'.")
    self.global_batch_size = global_batch_size
    self.fsdp, self.fsdp_min_size = fsdp, fsdp_min_size
    self.compiler_options = None if mode == "pmap" else compiler_options
    self.trace_count = 0
    self._replicated = NamedSharding(self.mesh, P())
    self._batch_sharding = NamedSharding(self.mesh, P(DATA_AXIS))
    axis = None if mode == "gspmd" else DATA_AXIS
    per_device = make_step(method, tx, preprocess, axis_name=axis,
                           grad_reduce="pmean" if mode == "pmap" else None,
                           sync_batch_stats=not sync_bn, clip_norm=clip_norm,
                           nan_at_step=nan_at_step,
                           nan_num_steps=nan_num_steps)

    def counted(state, batch):
      self.trace_count += 1  # Python side effect: runs once per trace
      return per_device(state, batch, jax.random.fold_in(state.rng, state.step))

    self._counted = counted
    self._checked = not (self.compiler_options or {}).get("xla_cpu_use_onednn")  # see below
    self._periodic: dict[int, Callable] = {}
    if mode == "shard_map":
      # With sharded method state, the state's specs depend on its structure: compiled lazily.
      self._step = None if method.state_sharding else self._jit(self.compiler_options)
    elif mode == "pmap":
      self._step = jax.pmap(counted, axis_name=DATA_AXIS, devices=self.mesh.devices.tolist(),
                            donate_argnums=0)
    elif mode == "gspmd":
      self._step = None  # compiled lazily: its shardings depend on the state's structure
    else:
      raise ValueError(f"parallel={mode!r}; valid: shard_map, pmap, gspmd.")

  def _jit(self, compiler_options: dict | None, state=None):
    """The jitted step of the ``shard_map`` or ``gspmd`` mode (``state``, abstract or not, gives
    the state's placement where it is not all replicated)."""
    if self.mode == "shard_map":
      specs = P() if state is None else self._state_specs(state)
      return jax.jit(jax.shard_map(self._counted, mesh=self.mesh, in_specs=(specs, P(DATA_AXIS)),
                                   out_specs=(specs, P()), check_vma=True),
                     donate_argnums=0, compiler_options=compiler_options)
    shardings = self.state_sharding(state)
    return jax.jit(self._counted, in_shardings=(shardings, self._batch_sharding),
                   out_shardings=(shardings, self._replicated), donate_argnums=0,
                   compiler_options=compiler_options)

  def _check_compiled(self, state, batch) -> None:
    """With oneDNN in the compiler options, before the first step runs: compiles it (the jitted
    function keeps the executable, so this is the step's only compilation) and, if XLA fused
    anything but a single product into a oneDNN fusion
    (:func:`ssl_jax.train.xla_options.unsafe_onednn_fusions`: wrong results or a crash in jaxlib
    0.10.2), recompiles the step with the options of
    :data:`~ssl_jax.train.xla_options.ONEDNN_FALLBACK` instead, with a warning."""
    self._checked = True
    unsafe = xla_options.unsafe_onednn_fusions(self._step.lower(state, batch).compile().as_text())
    if unsafe:
      fallback = xla_options.ONEDNN_FALLBACK
      shown = "; ".join(f"{name}: {' '.join(ops)}" for name, ops in list(unsafe.items())[:3])
      warnings.warn(f"XLA:CPU fused other operations into {len(unsafe)} oneDNN product(s) of "
                    f"this step ({shown}), which jaxlib 0.10.2 computes wrong or fails to run; "
                    f"the step is compiled with cpu_kernels={fallback!r} instead.",
                    RuntimeWarning, stacklevel=3)
      self.compiler_options = xla_options.step_compiler_options(fallback)
      self._step = self._jit(self.compiler_options, state)

  # -- state ---------------------------------------------------------------------------------

  def _split_leaves(self, state: state_lib.TrainState, *,
                    check: bool = True) -> state_lib.TrainState | None:
    """A state-shaped tree of bools: the method-state leaves stored split over the data axis
    (``Method.state_sharding``); None when the method splits none. With ``check``, each such
    leaf's leading dimension must divide by the device count."""
    if self.method.state_sharding is None:
      return None
    flags = self.method.state_sharding(state.method_state)
    for path, x, split in zip(*_paths_and_leaves(state.method_state), jax.tree.leaves(flags)):
      if check and split and (x.ndim == 0 or x.shape[0] % self.num_devices):
        raise ValueError(f"method_state{path} {tuple(x.shape)} is split over the data axis, so "
                         f"its leading dimension must divide by the {self.num_devices} devices.")
    return jax.tree.map(lambda _: False, state).replace(method_state=flags)

  def _state_specs(self, state: state_lib.TrainState) -> PyTree:
    """``shard_map`` specs of the state: replicated, split rows for split method-state leaves."""
    flags = self._split_leaves(state)
    if flags is None:
      return P()
    return jax.tree.map(lambda split: P(DATA_AXIS) if split else P(), flags)

  def state_sharding(self, abstract_state: PyTree) -> PyTree:
    """Where each leaf of the (global, unreplicated) state lives."""
    flags = self._split_leaves(abstract_state)
    if flags is None:
      flags = jax.tree.map(lambda _: False, abstract_state)
    rows = NamedSharding(self.mesh, P(DATA_AXIS))

    def spec(x, split):
      if split:
        return rows
      if not self.fsdp or jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
        return self._replicated
      return NamedSharding(self.mesh, fsdp_spec(x.shape, self.num_devices, self.fsdp_min_size))

    return jax.tree.map(spec, abstract_state, flags)

  def init_state(self, rng: jax.Array, example_batch: PyTree) -> state_lib.TrainState:
    """Creates the state directly in its placement (compiled, so FSDP never materializes it whole).
    The step's preprocessing is traced on ``example_batch`` first (shapes only), so a batch the
    method cannot take (e.g. views that its ``VIEWS`` refuses) fails here, before training."""
    jax.eval_shape(self.preprocess, example_batch, jax.random.key(0))
    # The example batch only lends its shapes: close over it (it may be ShapeDtypeStructs).
    create = lambda key: state_lib.create(self.method, self.tx, key, example_batch)
    abstract = jax.eval_shape(create, rng)
    # Compiled without backend optimization on CPU: it runs once (xla_options).
    lowered = jax.jit(create, out_shardings=self.state_sharding(abstract)).lower(rng)
    state = lowered.compile(compiler_options=xla_options.one_shot_compiler_options())(rng)
    return self.place_state(state) if self.mode == "pmap" else state

  def place_state(self, state: state_lib.TrainState) -> state_lib.TrainState:
    """Puts a global (host or device) state where this mode keeps it."""
    if self.mode == "pmap":
      stacked = NamedSharding(self.mesh, P(DATA_AXIS))
      n = self.num_devices
      flags = self._split_leaves(state) or jax.tree.map(lambda _: False, state)
      per_device = lambda x, split: (jnp.reshape(x, (n, -1) + x.shape[1:]) if split
                                     else jnp.broadcast_to(x, (n,) + x.shape))
      return jax.device_put(jax.tree.map(per_device, state, flags), stacked)
    return jax.device_put(state, self.state_sharding(state))

  def global_state(self, state: state_lib.TrainState) -> state_lib.TrainState:
    """The state without pmap's device axis (what is checkpointed and evaluated)."""
    if self.mode == "pmap":
      flags = self._split_leaves(jax.tree.map(lambda x: x[0], state), check=False)
      if flags is None:
        return jax.tree.map(lambda x: x[0], state)
      return jax.tree.map(lambda x, split: jnp.reshape(x, (-1,) + x.shape[2:]) if split else x[0],
                          state, flags)
    return state

  # -- batches -------------------------------------------------------------------------------

  def put_batch(self, local_batch: PyTree) -> PyTree:
    """This process's NumPy batch -> the step's input (global array or pmap-stacked)."""
    if self.mode == "pmap":
      n = jax.local_device_count() if self.num_devices == jax.device_count() else self.num_devices
      return jax.tree.map(lambda x: np.reshape(x, (n, -1) + x.shape[1:]), local_batch)
    return to_global(local_batch, self._batch_sharding)

  # -- step ----------------------------------------------------------------------------------

  def step(self, state: state_lib.TrainState, batch: PyTree):
    """One compiled step: returns the new state (the old one is donated) and scalar metrics."""
    if self._step is None:
      self._step = self._jit(self.compiler_options, state)
    if not self._checked:
      self._check_compiled(state, batch)
    state, metrics = self._step(state, batch)
    if self.mode == "pmap":
      metrics = jax.tree.map(lambda x: x[0], metrics)
    return state, metrics

  # -- periodic work -------------------------------------------------------------------------

  def run_periodic(self, state: state_lib.TrainState, index: int) -> state_lib.TrainState:
    """Runs ``method.periodic[index]`` on ``state`` (compiled once per work, like the step:
    per device under ``shard_map``/``pmap``, globally under GSPMD); returns the state with the
    new method state (the old state is donated)."""
    if index not in self._periodic:
      work = self.method.periodic[index].fn
      axis = None if self.mode == "gspmd" else DATA_AXIS

      def run(s):
        return s.replace(method_state=work(s.params, s.batch_stats, s.method_state, s.step,
                                           axis_name=axis))

      if self.mode == "pmap":
        self._periodic[index] = jax.pmap(run, axis_name=DATA_AXIS,
                                         devices=self.mesh.devices.tolist(), donate_argnums=0)
      elif self.mode == "shard_map":
        specs = self._state_specs(state)
        self._periodic[index] = jax.jit(
            jax.shard_map(run, mesh=self.mesh, in_specs=(specs,), out_specs=specs,
                          check_vma=True), donate_argnums=0)
      else:
        shardings = self.state_sharding(state)
        self._periodic[index] = jax.jit(run, in_shardings=(shardings,),
                                        out_shardings=shardings, donate_argnums=0)
    return self._periodic[index](state)


def _paths_and_leaves(tree: PyTree) -> tuple[list[str], list[Any]]:
  """``(["['bank']", ...], [leaf, ...])`` of ``tree``, in leaf order."""
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return [jax.tree_util.keystr(p) for p, _ in flat], [x for _, x in flat]
