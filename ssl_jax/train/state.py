"""The train state: one pytree holding everything a run needs to continue bit-exactly."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

PyTree = Any


@flax.struct.dataclass
class TrainState:
  """Explicit train state.

  Attributes:
    step: int32 scalar, loop iterations done (skipped non-finite steps included).
    params: trainable parameters (plain nested dicts), float32.
    batch_stats: BatchNorm running statistics of the trained networks.
    opt_state: optax state.
    method_state: teachers, queues, centers, prototypes (``{}`` when the method has none).
    rng: typed PRNG key of the run; the key of step ``s`` is ``fold_in(rng, s)``.
    skips: int32, consecutive steps skipped for a non-finite loss or gradient.
    total_skips: int32, all skipped steps.
  """

  step: jax.Array
  params: PyTree
  batch_stats: PyTree
  opt_state: PyTree
  method_state: PyTree
  rng: jax.Array
  skips: jax.Array
  total_skips: jax.Array


def create(method, tx, rng: jax.Array, example_batch: PyTree) -> TrainState:
  """Initializes networks, method state and optimizer state from ``rng``.

  The networks are initialized from ``fold_in(rng, 0)`` and steps draw from ``fold_in(rng, 1)``,
  so the random-init evaluation baseline (which re-runs ``method.init`` with the same key) sees
  exactly the weights pretraining started from.
  """
  params, batch_stats, method_state = method.init(init_key(rng), example_batch)
  return TrainState(
      step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
      opt_state=tx.init(params), method_state=method_state,
      rng=jax.random.fold_in(rng, 1), skips=jnp.zeros((), jnp.int32),
      total_skips=jnp.zeros((), jnp.int32))


def init_key(rng: jax.Array) -> jax.Array:
  return jax.random.fold_in(rng, 0)
