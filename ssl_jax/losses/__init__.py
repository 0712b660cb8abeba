"""Pure-function self-supervised losses: arrays in, scalar out.

No Flax, no config, no hidden state. Hyperparameters are keyword-only. An optional ``axis_name``
makes a loss span the global batch across devices (gathered negatives, reduced statistics) with
exact gradients; without it the same function on the global batch gives the same number.

- contrastive: :func:`ntxent` (SimCLR), :func:`infonce` (MoCo v2 queue / MoCo v3 batch),
  :func:`nnclr` and its :func:`nearest_neighbour` lookup.
- regression (stop-gradient targets): :func:`negative_cosine` (SimSiam), :func:`byol_loss`.
- redundancy reduction (batch statistics): :func:`barlow_twins`, :func:`vicreg`.
"""

from ssl_jax.losses.contrastive import infonce, nearest_neighbour, nnclr, ntxent
from ssl_jax.losses.redundancy import barlow_twins, vicreg
from ssl_jax.losses.regression import byol_loss, negative_cosine

__all__ = [
    "barlow_twins",
    "byol_loss",
    "infonce",
    "nearest_neighbour",
    "negative_cosine",
    "nnclr",
    "ntxent",
    "vicreg",
]
