"""Pure-function self-supervised losses: arrays in, scalar out.

No Flax, no config, no hidden state. Hyperparameters are keyword-only. An optional ``axis_name``
makes a loss span the global batch across devices (gathered negatives, reduced statistics) with
exact gradients; without it the same function on the global batch gives the same number.

- contrastive: :func:`ntxent` (SimCLR), :func:`infonce` (MoCo v2 queue / MoCo v3 batch),
  :func:`nnclr` and its :func:`nearest_neighbour` lookup.
- regression (stop-gradient targets): :func:`negative_cosine` (SimSiam), :func:`byol_loss`.
- redundancy reduction (batch statistics): :func:`barlow_twins`, :func:`vicreg`.
- language: :func:`masked_lm` (BERT/RoBERTa), :func:`causal_lm` (GPT), :func:`next_sentence`
  (BERT's NSP), :func:`simcse`; token sums and counts reduced separately across devices.
"""

from ssl_jax.losses.contrastive import infonce, nearest_neighbour, nnclr, ntxent
from ssl_jax.losses.redundancy import barlow_twins, vicreg
from ssl_jax.losses.regression import byol_loss, negative_cosine
from ssl_jax.losses.text import causal_lm, masked_lm, next_sentence, simcse

__all__ = [
    "barlow_twins",
    "byol_loss",
    "causal_lm",
    "infonce",
    "masked_lm",
    "nearest_neighbour",
    "next_sentence",
    "negative_cosine",
    "nnclr",
    "ntxent",
    "simcse",
    "vicreg",
]
