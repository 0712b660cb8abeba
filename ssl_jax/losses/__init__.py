"""Pure-function self-supervised losses: arrays in, scalar out.

No Flax, no config, no hidden state. Hyperparameters are keyword-only. An optional ``axis_name``
makes a loss span the global batch across devices (gathered negatives, reduced statistics) with
exact gradients; without it the same function on the global batch gives the same number.
"""

from ssl_jax.losses.contrastive import ntxent

__all__ = ["ntxent"]
