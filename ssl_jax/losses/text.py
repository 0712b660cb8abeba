"""Language objectives: masked LM (BERT/RoBERTa), causal LM (GPT), next-sentence prediction, SimCSE.

Token-level losses are means over a *variable* number of counted tokens (masked positions, real
targets). Across devices a mean of per-device means is wrong when the counts differ, so with
``axis_name`` the losses reduce the sum of token losses and the count separately and divide once:
the result is the loss of the whole global batch, identical on every device, with exact gradients.
All softmax and log math is float32 whatever the logits' dtype (bfloat16 compute).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ssl_jax.losses.utils import (AxisName, as_float_arrays, as_labels, as_views,
                                  check_min_examples, check_scalars, global_count, global_sum,
                                  needs_examples)
from ssl_jax.losses.contrastive import infonce


def token_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Per-token cross-entropy ``logsumexp(logits) - logits[label]`` in float32.

  Args:
    logits: ``[..., V]`` unnormalized scores.
    labels: ``[...]`` integer targets in ``[0, V)``.

  Returns:
    ``[...]`` float32 losses (natural log).

  Example:
    >>> import jax.numpy as jnp
    >>> round(float(token_cross_entropy(jnp.zeros((4,)), jnp.array(1))), 4)  # log(4)
    1.3863
  """
  logits = logits.astype(jnp.float32)
  picked = jnp.take_along_axis(logits, labels[..., None].astype(jnp.int32), axis=-1)[..., 0]
  return jax.nn.logsumexp(logits, axis=-1) - picked


def _check_tokens(name: str, minimum: int, axis_name: AxisName, logits, *,
                  axes: tuple[str, ...] = ("batch", "length"), **targets) -> tuple:
  """``(logits, *targets)`` as arrays: float ``logits`` ``[*axes, classes]``, each target (None
  allowed) of shape ``logits.shape[:-1]``, at least ``minimum`` examples over the global batch."""
  (logits,) = as_float_arrays(name, logits=logits)
  if logits.ndim != len(axes) + 1:
    raise ValueError(f"{name}: logits must be {len(axes) + 1}-D [{', '.join(axes)}, classes], "
                     f"got shape {logits.shape}.")
  targets = {arg: None if x is None else jnp.asarray(x) for arg, x in targets.items()}
  for arg, x in targets.items():
    if x is not None and x.shape != logits.shape[:-1]:
      raise ValueError(f"{name}: logits has shape {logits.shape} and {arg} has shape {x.shape}; "
                       f"{arg} must have shape [{', '.join(axes)}] = {logits.shape[:-1]}.")
  check_min_examples(name, minimum, logits, arg="logits", axis_name=axis_name)
  return (logits, *targets.values())


def weighted_mean(values: jax.Array, weights: jax.Array, axis_name: AxisName = None) -> jax.Array:
  """``sum(values * weights) / sum(weights)`` over the global batch (sums reduced over
  ``axis_name``); 0 when no weight is set anywhere (never NaN)."""
  weights = weights.astype(jnp.float32)
  total = global_sum(jnp.sum(values * weights), axis_name)
  count = global_sum(jnp.sum(weights), axis_name)
  return total / jnp.maximum(count, 1.0)


@needs_examples(1)
def masked_lm(logits: jax.Array, labels: jax.Array, mask: jax.Array, *,
              axis_name: AxisName = None) -> jax.Array:
  """Masked language modelling: mean cross-entropy over the masked positions only.

  BERT (Devlin et al., 2019, "BERT: Pre-training of Deep Bidirectional Transformers for Language
  Understanding", section 3.1 task #1, https://arxiv.org/abs/1810.04805); RoBERTa (Liu et al.,
  2019, https://arxiv.org/abs/1907.11692) uses the same loss with dynamic masking. The choice of
  positions and the 80/10/10 corruption are :func:`ssl_jax.masking.bert_mask`'s job; this loss
  only scores the predictions at ``mask`` against the original tokens ``labels``.

  The mean is ``sum(mask * ce) / sum(mask)`` over the global batch: with ``axis_name`` the sum and
  the count are each reduced over the devices. No masked position anywhere gives 0.

  Args:
    logits: ``[B, T, V]`` predictions (any float dtype; the math is float32).
    labels: ``[B, T]`` integer original tokens, only read where ``mask`` is set (elsewhere any
      value, e.g. an ignore index such as -100).
    mask: ``[B, T]`` bool or 0/1, 1 where a position was chosen for prediction.
    axis_name: data-parallel axis to reduce over, or None.

  Returns:
    Scalar float32 loss (nats per masked token).

  Raises:
    TypeError: if ``logits`` is not floating point or ``labels`` not integer.
    ValueError: if the shapes differ from the above, the global batch is empty, or (values
      concrete, outside ``jit``) a label where ``mask`` is set lies outside ``[0, V)``; labels
      where ``mask`` is 0 are ignored and may hold anything.

  Example:
    >>> import jax.numpy as jnp
    >>> logits = jnp.log(jnp.array([[[0.5, 0.5], [0.9, 0.1]]]))
    >>> round(float(masked_lm(logits, jnp.array([[0, 1]]), jnp.array([[0, 1]]))), 4)  # -log 0.1
    2.3026
  """
  logits, labels, mask = _check_tokens("masked_lm", masked_lm.min_examples, axis_name, logits,
                                       labels=labels, mask=mask)
  labels = as_labels("masked_lm", "labels", labels, logits.shape[-1], counted=mask)
  labels = jnp.where(mask != 0, labels, 0)  # ignored positions may hold any id (e.g. -100)
  return weighted_mean(token_cross_entropy(logits, labels), mask, axis_name)


def causal_targets(tokens: jax.Array, mask: jax.Array | None = None,
                   segment_ids: jax.Array | None = None) -> jax.Array:
  """``[B, T - 1]`` float32 weights of the next-token targets ``tokens[:, 1:]``.

  A target counts when it and its input are real (``mask`` 1 at both ``t`` and ``t + 1``) and,
  with packed sequences, when both belong to the same document (equal non-zero ``segment_ids``):
  a token is never predicted from another document's context.
  """
  weights = jnp.ones(tokens[:, 1:].shape, jnp.float32)
  if mask is not None:
    mask = mask.astype(jnp.float32)
    weights = weights * mask[:, 1:] * mask[:, :-1]
  if segment_ids is not None:
    same = (segment_ids[:, 1:] == segment_ids[:, :-1]) & (segment_ids[:, 1:] > 0)
    weights = weights * same.astype(jnp.float32)
  return weights


@needs_examples(1)
def causal_lm(logits: jax.Array, tokens: jax.Array, *, mask: jax.Array | None = None,
              segment_ids: jax.Array | None = None, axis_name: AxisName = None) -> jax.Array:
  """Causal (next-token) language modelling: ``logits[:, t]`` predicts ``tokens[:, t + 1]``.

  GPT (Radford et al., 2018, "Improving Language Understanding by Generative Pre-Training", eq. 1,
  https://cdn.openai.com/research-covers/language-unsupervised/language_understanding_paper.pdf;
  GPT-2, Radford et al., 2019). The shift is done here and only here: pass the logits of the
  model run on ``tokens`` itself. The last position has no target; the first token is never a
  target. See :func:`causal_targets` for which targets count (``mask`` is aligned with
  ``tokens``, 1 = real token; ``segment_ids`` separates packed documents, 0 = padding). The mean
  over counted targets reduces sums and counts over ``axis_name``.

  Args:
    logits: ``[B, T, V]`` the model's outputs on ``tokens``.
    tokens: ``[B, T]`` integer tokens (a target that does not count may hold any value).
    mask: optional ``[B, T]`` 1 for real tokens, 0 for padding.
    segment_ids: optional ``[B, T]`` document ids of packed rows (0 = padding).
    axis_name: data-parallel axis to reduce over, or None.

  Returns:
    Scalar float32 loss (nats per predicted token).

  Raises:
    TypeError: if ``logits`` is not floating point or ``tokens`` not integer.
    ValueError: if the shapes differ from the above, the global batch is empty, ``T < 2``, or
      (values concrete, outside ``jit``) a counted target token lies outside ``[0, V)``.

  Example:
    >>> import jax.numpy as jnp
    >>> logits = jnp.log(jnp.array([[[0.25, 0.75], [0.5, 0.5], [1.0, 1e-9]]]))
    >>> tokens = jnp.array([[0, 1, 0]])  # targets 1 (p=0.75) and 0 (p=0.5)
    >>> round(float(causal_lm(logits, tokens)), 4)  # (-log 0.75 - log 0.5) / 2
    0.4904
  """
  logits, tokens, mask, segment_ids = _check_tokens(
      "causal_lm", causal_lm.min_examples, axis_name, logits, tokens=tokens, mask=mask,
      segment_ids=segment_ids)
  if logits.shape[1] < 2:
    raise ValueError(f"causal_lm: sequences need at least 2 tokens, got length {logits.shape[1]}.")
  weights = causal_targets(tokens, mask, segment_ids)
  tokens = as_labels("causal_lm", "tokens", tokens, logits.shape[-1],
                     counted=jnp.pad(weights, ((0, 0), (1, 0))))  # the first token is no target
  targets = jnp.where(weights > 0, tokens[:, 1:], 0)  # uncounted targets may hold any id
  return weighted_mean(token_cross_entropy(logits[:, :-1], targets), weights, axis_name)


@needs_examples(1)
def next_sentence(logits: jax.Array, is_next: jax.Array, *, axis_name: AxisName = None) -> jax.Array:
  """BERT's next-sentence prediction: 2-way cross-entropy, mean over the global batch.

  Devlin et al., 2019, section 3.1 task #2 (https://arxiv.org/abs/1810.04805): for a pair (A, B), B is the sentence run that follows
  A in 50% of the pairs and a random one otherwise. Class 1 means "B follows A" (``is_next=1``),
  class 0 "B is random" (the original TF code numbers them the other way round; only the head's
  two rows are swapped).

  Args:
    logits: ``[B, 2]`` scores of (random, next).
    is_next: ``[B]`` integer 0/1 targets.
    axis_name: data-parallel axis to reduce over, or None.

  Returns:
    Scalar float32 loss.

  Raises:
    TypeError: if ``logits`` is not floating point or ``is_next`` not integer.
    ValueError: if the shapes differ from the above, the global batch is empty, or (values
      concrete, outside ``jit``) ``is_next`` holds anything but 0 and 1.

  Example:
    >>> import jax.numpy as jnp
    >>> round(float(next_sentence(jnp.array([[0.0, 0.0]]), jnp.array([1]))), 4)  # log 2
    0.6931
  """
  logits, is_next = _check_tokens("next_sentence", next_sentence.min_examples, axis_name, logits,
                                  axes=("batch",), is_next=is_next)
  if logits.shape[1] != 2:
    raise ValueError(f"next_sentence: logits must be [batch, 2], got shape {logits.shape}.")
  is_next = as_labels("next_sentence", "is_next", is_next, 2)
  ce = token_cross_entropy(logits, is_next)
  return global_sum(jnp.sum(ce), axis_name) / global_count(logits.shape[0], axis_name)


@needs_examples(2)  # the other sentences of the batch are the negatives
def simcse(z_a: jax.Array, z_b: jax.Array, *, temperature: float = 0.05,
           axis_name: AxisName = None) -> jax.Array:
  """Unsupervised SimCSE: the same sentence encoded twice with different dropout masks.

  Gao, Yao & Chen, 2021, "SimCSE: Simple Contrastive Learning of Sentence Embeddings", eq. 1,
  https://arxiv.org/abs/2104.08821: ``-log exp(cos(h_i, h_i') / t) / sum_j exp(cos(h_i, h_j') / t)``
  over the global batch (the other sentences' second encodings are the negatives), mean over
  ``i``. One direction, as the official code (``cos_sim(z1, z2)`` with labels ``arange``). This is
  :func:`ssl_jax.losses.infonce` without a queue: with ``axis_name`` the ``z_b`` of every device
  are gathered as negatives, gradients exact.

  Args:
    z_a: ``[n, d]`` first encodings (local shard under ``axis_name``).
    z_b: ``[n, d]`` second encodings of the same sentences.
    temperature: ``t > 0`` (paper: 0.05).
    axis_name: data-parallel axis to gather over, or None.

  Returns:
    Scalar float32 loss.

  Raises:
    TypeError: if an input is not floating point.
    ValueError: if the inputs are not 2-D of equal shape, the global batch has fewer than 2
      examples, or a concrete ``temperature`` is not > 0.

  Example:
    >>> import jax.numpy as jnp
    >>> z = jnp.eye(2)
    >>> round(float(simcse(z, z, temperature=1.0)), 4)  # log(1 + e^-1)
    0.3133
  """
  z_a, z_b = as_views("simcse", simcse.min_examples, axis_name, z_a=z_a, z_b=z_b)
  check_scalars("simcse", temperature=temperature)
  return infonce(z_a, z_b, temperature=temperature, axis_name=axis_name)
