"""Checkpointable, host-count-independent batch iterators built on ``grain.DataLoader``.

What a global batch is: epoch ``e`` visits the source in an order that is a function of
``(seed, e)`` only (Grain's global ``MapDataset.shuffle``, a bijection computed per index, seeded
by :func:`epoch_order_seed`; identity when ``shuffle=False``). Global batch ``b`` of the epoch is
positions ``[b*B, (b+1)*B)`` of that order (``B = global_batch_size``; the last ``N mod B``
positions of each epoch are dropped so every batch has the same shape and the train step never
recompiles). Process ``p`` of ``P`` reads the
``p``-th contiguous slice of ``B / P`` examples of each global batch. Hence the hosts read
disjoint examples, and their local batches concatenated in process order are exactly the batch a
single process would read with the same seed: results do not depend on the number of hosts.

Why a step-indexed source instead of Grain's ``IndexSampler`` + ``Batch``: Grain's sampler shards
the dataset into one contiguous block per process and shuffles within it, so the hosts' batches
do not compose into the single-host batch; and ``DataLoader`` batches per worker, so batch contents
would depend on ``worker_count``. Here each Grain record *is* one local batch (a pure function of
the step number), read by Grain's ``DataLoader`` (reader threads, worker processes, prefetch), so
batches are identical for any ``worker_count``. For the same reason the checkpoint state is just
the next step (plus fields that validate it): it can be restored with any ``worker_count`` or
process count, unlike Grain's own ``DataLoader`` state which pins the worker count.

Each batch stacks every field of the source's examples along a new leading axis and adds
``index``, the examples' indices in the source (int32 ``[B/P]``), from which augmentation keys are
derived: ``{"image": uint8 [B/P, H, W, C], "label": int32 [B/P], "index"}`` for images,
``{"tokens": int32 [B/P, T], "segment_ids", "positions", "label", "index"}`` for packed text
(:class:`ssl_jax.data.text.PackedTextSource`).
"""

from __future__ import annotations

import sys
from typing import Any, Iterator, Mapping

import grain
import numpy as np

from ssl_jax.data.sources import Source

Batch = dict[str, np.ndarray]

_STATE_VERSION = 1


def epoch_order_seed(seed: int, epoch: int) -> int:
  """The 32-bit seed of epoch ``epoch``'s order, mixed from ``(seed, epoch)``.

  Mixed with ``numpy.random.SeedSequence`` rather than ``seed + epoch`` (Grain's own per-epoch rule)
  so that runs with seeds ``s`` and ``s + 1`` do not share shifted epoch orders.

  Args:
    seed: The iterator's seed (any non-negative int).
    epoch: Epoch number.

  Returns:
    A seed in ``[0, 2**32)``.
  """
  return int(np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1, np.uint32)[0])


class LocalBatchSource:
  """Grain random-access source whose record ``k`` is this process's local batch of step ``k``.

  Picklable, so Grain worker processes can read it.

  Args:
    source: The example source.
    global_batch_size: Examples per global batch.
    seed: Order seed.
    shuffle: Whether to shuffle each epoch.
    process_index: This process's index.
    process_count: Number of processes.
    first_step: Step of record 0 (resumption).
    num_steps: Total steps (``None``: infinite).
  """

  def __init__(self, source: Source, *, global_batch_size: int, seed: int, shuffle: bool,
               process_index: int, process_count: int, first_step: int = 0,
               num_steps: int | None = None):
    self.source = source
    self.num_examples = len(source)
    self.global_batch_size = global_batch_size
    self.local_batch_size = global_batch_size // process_count
    self.steps_per_epoch = self.num_examples // global_batch_size
    self.seed = seed
    self.shuffle = shuffle
    self.process_index = process_index
    self.first_step = first_step
    self.num_steps = num_steps
    self._orders: dict[int, grain.MapDataset] = {}

  def __len__(self) -> int:
    end = sys.maxsize if self.num_steps is None else self.num_steps
    return max(0, end - self.first_step)

  def __repr__(self) -> str:
    return (f"LocalBatchSource({self.source!r}, global_batch_size={self.global_batch_size}, "
            f"seed={self.seed}, shuffle={self.shuffle}, process_index={self.process_index}, "
            f"local_batch_size={self.local_batch_size})")

  def _order(self, epoch: int) -> grain.MapDataset:
    # Called from Grain's reader threads: only atomic dict operations, no check-then-read.
    order = self._orders.get(epoch)
    if order is None:
      order = grain.MapDataset.range(self.num_examples).shuffle(
          seed=epoch_order_seed(self.seed, epoch))
      if len(self._orders) > 2:
        self._orders.clear()
      self._orders[epoch] = order
    return order

  def indices(self, step: int) -> np.ndarray:
    """Source indices of this process's local batch at ``step`` (int64 ``[B_local]``)."""
    epoch, batch = divmod(step, self.steps_per_epoch)
    start = batch * self.global_batch_size + self.process_index * self.local_batch_size
    positions = range(start, start + self.local_batch_size)
    if not self.shuffle:
      return np.asarray(positions, np.int64)
    order = self._order(epoch)
    return np.asarray([order[p] for p in positions], np.int64)

  def __getitem__(self, record: int) -> Batch:
    step = self.first_step + int(record)
    indices = self.indices(step)
    examples = self.source.__getitems__(indices.tolist())
    batch = {}
    for key in examples[0]:
      try:
        batch[key] = np.stack([np.asarray(ex[key]) for ex in examples])
      except ValueError as e:
        if key == "image":
          raise ValueError(f"{self.source!r}: images of different shapes in one batch ({e}); "
                           f"load the source with image_size= to give them one size") from e
        raise ValueError(f"{self.source!r}: field {key!r} has different shapes in one batch "
                         f"({e})") from e
    if "label" in batch:
      batch["label"] = batch["label"].astype(np.int32, copy=False)
    batch["index"] = indices.astype(np.int32)
    return batch


class BatchIterator(Iterator[Batch]):
  """Iterator over local batches with ``get_state`` / ``set_state`` (see the module docstring).

  Built by :func:`make_iterator`. The state is ``{"step": next_step, ...}``, JSON-serializable;
  ``set_state`` on a fresh iterator made with the same source, seed, batch size and shuffle flag
  continues at exactly the next batch, whatever its ``worker_count`` or process count.

  Attributes:
    steps_per_epoch: Global batches per epoch (``len(source) // global_batch_size``).
    num_steps: Total batches (``None`` when infinite).
    local_batch_size: ``global_batch_size / process_count``.
  """

  def __init__(self, source: Source, *, global_batch_size: int, seed: int, shuffle: bool,
               num_epochs: int | None, process_index: int, process_count: int,
               worker_count: int, prefetch: int):
    self.source = source
    self.global_batch_size = global_batch_size
    self.local_batch_size = global_batch_size // process_count
    self.seed = seed
    self.shuffle = shuffle
    self.num_epochs = num_epochs
    self.process_index = process_index
    self.process_count = process_count
    self.worker_count = worker_count
    self.prefetch = prefetch
    self.steps_per_epoch = len(source) // global_batch_size
    self.num_steps = None if num_epochs is None else num_epochs * self.steps_per_epoch
    self._step = 0
    self._it: Any = None

  @property
  def step(self) -> int:
    """Number of the next batch (0-based; counts across epochs)."""
    return self._step

  @property
  def epoch(self) -> int:
    """Epoch of the next batch."""
    return self._step // self.steps_per_epoch

  def batch_indices(self, step: int) -> np.ndarray:
    """Source indices of this process's batch at ``step`` without reading it."""
    return self._batch_source(0).indices(step)

  def _batch_source(self, first_step: int) -> LocalBatchSource:
    return LocalBatchSource(
        self.source, global_batch_size=self.global_batch_size, seed=self.seed,
        shuffle=self.shuffle, process_index=self.process_index,
        process_count=self.process_count, first_step=first_step, num_steps=self.num_steps)

  def _start(self) -> None:
    batches = self._batch_source(self._step)
    if len(batches) == 0:
      self._it = iter(())
      return
    if self.worker_count > 0:
      _mark_flags_parsed()
    loader = grain.DataLoader(
        data_source=batches,
        sampler=grain.samplers.SequentialSampler(num_records=len(batches)),
        worker_count=self.worker_count,
        worker_buffer_size=max(1, self.prefetch),
        shard_options=grain.sharding.NoSharding(),
        read_options=grain.ReadOptions(num_threads=self.prefetch,
                                       prefetch_buffer_size=self.prefetch))
    self._it = iter(loader)

  def __iter__(self) -> BatchIterator:
    return self

  def __next__(self) -> Batch:
    if self._it is None:
      self._start()
    batch = next(self._it)
    self._step += 1
    return batch

  def get_state(self) -> dict[str, Any]:
    """Returns a JSON-serializable state: the next step and what it depends on."""
    return {"version": _STATE_VERSION, "step": self._step, "seed": self.seed,
            "global_batch_size": self.global_batch_size, "num_examples": len(self.source),
            "shuffle": self.shuffle, "source": f"{self.source.name}:{self.source.split}"}

  def set_state(self, state: Mapping[str, Any]) -> None:
    """Continues from ``state`` (from :meth:`get_state`) at its next batch.

    Raises:
      ValueError: if the state was saved with another seed, batch size, shuffle flag or source.
    """
    if state.get("version") != _STATE_VERSION or "step" not in state:
      raise ValueError(f"not a BatchIterator state (version {_STATE_VERSION}): {dict(state)}")
    mine = self.get_state()
    keys = ("seed", "global_batch_size", "num_examples", "shuffle", "source")
    diff = {k: (state.get(k), mine[k]) for k in keys if state.get(k) != mine[k]}
    if diff:
      raise ValueError("iterator state does not match this iterator (saved, current): "
                       + ", ".join(f"{k}={v[0]!r} vs {v[1]!r}" for k, v in diff.items()))
    step = int(state["step"])
    if step < 0 or (self.num_steps is not None and step > self.num_steps):
      raise ValueError(f"state step {step} outside [0, {self.num_steps}]")
    self.close()
    self._step = step

  def close(self) -> None:
    """Stops reader threads / worker processes (a later ``next`` restarts them)."""
    it, self._it = self._it, None
    close = getattr(getattr(it, "_iterator", None), "close", None)
    if callable(close):
      close()

  def __enter__(self) -> BatchIterator:
    return self

  def __exit__(self, *exc: Any) -> None:
    self.close()


def _mark_flags_parsed() -> None:
  """Grain's worker processes read absl flags; outside an absl app they are not parsed yet."""
  from absl import flags  # pylint: disable=import-outside-toplevel

  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def make_iterator(source: Source, *, global_batch_size: int, seed: int, shuffle: bool = True,
                  num_epochs: int | None = None, process_index: int | None = None,
                  process_count: int | None = None, worker_count: int = 0,
                  prefetch: int = 2) -> BatchIterator:
  """Returns an iterator over this process's fixed-shape batches of ``source``.

  Args:
    source: A random-access source (:func:`ssl_jax.data.load_source`).
    global_batch_size: Examples per global batch, over all processes.
    seed: Order seed (a non-negative int); each epoch's order depends on ``(seed, epoch)``.
    shuffle: Shuffle each epoch (else source order every epoch).
    num_epochs: Epochs to iterate (``None``: forever).
    process_index: This process (default ``jax.process_index()``).
    process_count: Number of processes (default ``jax.process_count()``).
    worker_count: Grain worker processes (0: read in this process with ``prefetch`` threads).
    prefetch: Batches read ahead (reader threads and buffer per process or worker; 0: none).

  Returns:
    A :class:`BatchIterator` yielding local batches: every field of the source's examples
    stacked (``{"image", "label"}`` for images, ``{"tokens", "segment_ids", "positions",
    "label"}`` for packed text), plus ``"index"``.

  Raises:
    ValueError: on an indivisible batch size, a bad process index, or a source smaller than one
      global batch.

  >>> from ssl_jax.data.sources import load_source
  >>> it = make_iterator(load_source("digits", "train"), global_batch_size=32, seed=0)
  >>> {k: v.shape for k, v in next(it).items()}
  {'image': (32, 8, 8, 1), 'label': (32,), 'index': (32,)}
  """
  if process_index is None or process_count is None:
    import jax  # pylint: disable=import-outside-toplevel

    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if process_count < 1 or not 0 <= process_index < process_count:
    raise ValueError(f"need 0 <= process_index < process_count, got {process_index} and "
                     f"{process_count}")
  if global_batch_size < 1 or global_batch_size % process_count:
    raise ValueError(f"global_batch_size {global_batch_size} must be a positive multiple of the "
                     f"process count {process_count}")
  if not isinstance(seed, (int, np.integer)) or seed < 0:
    raise ValueError(f"seed must be a non-negative int, got {seed!r}")
  if num_epochs is not None and num_epochs < 1:
    raise ValueError(f"num_epochs must be positive or None, got {num_epochs}")
  if worker_count < 0 or prefetch < 0:
    raise ValueError(f"worker_count and prefetch must be >= 0, got {worker_count}, {prefetch}")
  n = len(source)
  if n < global_batch_size:
    raise ValueError(
        f"{source!r} has {n} examples, fewer than one global batch of {global_batch_size} "
        f"({global_batch_size // process_count} per process x {process_count} processes); lower "
        f"global_batch_size")
  return BatchIterator(source, global_batch_size=global_batch_size, seed=int(seed),
                       shuffle=shuffle, num_epochs=num_epochs, process_index=process_index,
                       process_count=process_count, worker_count=worker_count, prefetch=prefetch)
