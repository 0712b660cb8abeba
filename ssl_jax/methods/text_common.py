"""Pieces shared by the language methods (``mlm``, ``clm``, ``nsp``, ``simcse``).

A language method module sets ``MODALITY = "text"`` and ``DATA`` (how its rows are built:
``style`` ``"bert"``/``"gpt"`` framing, ``pairs`` for NSP sentence pairs, ``pack`` False for one
document per row); the train loop reads both to build the data source, and the method builds its
networks for the run's tokenizer (:func:`tokenizer_for`).

Batches are ``{"tokens", "segment_ids", "positions", "label", "index"}`` ``[B, T]`` int32 (plus
``type_ids``, ``is_next`` for sentence pairs, ``word_starts`` for whole-word masking). Dropout and
masking keys are folded with each example's global ``index`` (:func:`example_keys`), so results do
not depend on the number of devices.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax.models.text import build_text_encoder, mean_pool

PyTree = Any


@functools.lru_cache(maxsize=8)
def _tokenizer(spec: str, dataset: str, split: str, data_dir: str):
  from ssl_jax.data import load_corpus, make_tokenizer  # pylint: disable=g-import-not-at-top
  if spec.split(":", 1)[0] in ("bpe", "wordpiece"):
    # Trained on the run's own training split (deterministic), so evaluation rebuilds the same.
    corpus = load_corpus(dataset, split, data_dir=data_dir or None)
    return make_tokenizer(spec, corpus=corpus.documents)
  return make_tokenizer(spec)


def tokenizer_for(config):
  """The run's tokenizer: ``config.text.tokenizer`` (``bytes``, ``bpe:<n>``, ``wordpiece:<n>``
  trained on ``config.dataset``'s ``config.train_split``, or ``file:<path>``), built once per
  process."""
  return _tokenizer(config.text.tokenizer, config.dataset, config.train_split, config.data_dir)


def check_encoder(config, *, causal: bool) -> None:
  """Refuses, before anything is built, a ``config.encoder`` that is not a text Transformer of
  the kind the method needs (``causal`` or bidirectional) or is too short for the rows."""
  from ssl_jax.models.text import TEXT_ENCODERS  # pylint: disable=g-import-not-at-top
  if config.encoder not in TEXT_ENCODERS:
    raise ValueError(f"--config.encoder={config.encoder!r} is not a text encoder; method "
                     f"{config.method!r} needs one of: {', '.join(sorted(TEXT_ENCODERS))}.")
  arch = {**TEXT_ENCODERS[config.encoder], **config.encoder_kwargs.to_dict()}
  if arch["causal"] != causal:
    kind = "a causal (GPT-style)" if causal else "a bidirectional (BERT-style)"
    raise ValueError(f"--config.encoder={config.encoder!r} is not {kind} text encoder, which "
                     f"method {config.method!r} needs.")
  if config.text.seq_len > arch["max_len"]:
    raise ValueError(f"--config.text.seq_len={config.text.seq_len} exceeds {config.encoder}'s "
                     f"max_len {arch['max_len']}.")


def build_transformer(config, tokenizer, rngs, *, causal: bool, **fixed):
  """``config.encoder`` (a :data:`ssl_jax.models.text.TEXT_ENCODERS` name) for ``tokenizer``'s
  vocabulary, in the compute dtype, with ``config.encoder_kwargs`` overrides, then ``fixed``
  (what the method decides, e.g. ``pooler=False`` where no pooled output is trained)."""
  kwargs = {**config.encoder_kwargs.to_dict(), **fixed}
  check_encoder(config, causal=causal)
  return build_text_encoder(config.encoder, vocab_size=tokenizer.vocab_size, rngs=rngs,
                            dtype=jnp.dtype(config.compute_dtype), **kwargs)


def example_keys(rng: jax.Array, index: jax.Array, salt: int = 0) -> jax.Array:
  """One PRNG key per example: ``fold_in(fold_in(rng, salt), index)`` ``[B]``."""
  base = jax.random.fold_in(rng, salt)
  return jax.vmap(lambda i: jax.random.fold_in(base, i))(index)


def text_features(nets, body: str = "encoder") -> Callable:
  """``Method.features`` for text: the mean of the encoder's last hidden states over each row's
  real tokens, no dropout. ``inputs`` is ``{"tokens", "segment_ids"[, "positions",
  "type_ids"]}`` ``[N, T]``; the method state is not read."""

  def features(params, batch_stats, method_state, inputs):
    del method_state
    model = getattr(nets.bind(params, batch_stats), body)
    hidden = model(inputs["tokens"], segment_ids=inputs["segment_ids"],
                   positions=inputs.get("positions"), type_ids=inputs.get("type_ids"))
    return mean_pool(hidden, inputs["segment_ids"])

  return features


def gather_positions(x: jax.Array, mask: jax.Array, count: int):
  """The first ``count`` positions of each row where ``mask`` is set: ``(x[b, pos], valid)``
  with ``x`` ``[B, T, ...]`` -> ``[B, count, ...]`` and ``valid`` ``[B, count]`` bool (rows with
  fewer set positions are padded with invalid entries; set positions past ``count`` are left
  out, as BERT's ``max_predictions_per_seq``)."""
  # Set positions first, then the others, each in order: the order of a stable argsort of ~mask,
  # by top_k of float keys (exact below 2**24), which XLA:CPU runs 7x faster than the sort.
  t = mask.shape[1]
  key = jnp.where(mask, 2 * t, 0) + (t - 1 - jnp.arange(t))
  order = jax.lax.top_k(key.astype(jnp.float32), min(count, t))[1]
  valid = jnp.take_along_axis(mask, order, axis=1)
  expand = order.reshape(order.shape + (1,) * (x.ndim - 2))
  return jnp.take_along_axis(x, expand, axis=1), valid, order


class WordStarts:
  """Adds ``word_starts`` (the tokenizer's whole-word boundaries) to every example of a
  Grain-style random-access ``source`` (computed on the host, per example)."""

  def __init__(self, source, tokenizer):
    self.source, self.tokenizer = source, tokenizer

  def __len__(self) -> int:
    return len(self.source)

  def __getattr__(self, name):  # name, split, seq_len, num_bytes, ... of the wrapped source
    if name in ("source", "tokenizer"):
      raise AttributeError(name)
    return getattr(self.source, name)

  @property
  def example_shapes(self):
    return {**self.source.example_shapes, "word_starts": (self.source.seq_len,)}

  def arrays(self):
    arrays = self.source.arrays()
    arrays["word_starts"] = self.tokenizer.word_starts(arrays["tokens"])
    return arrays

  def _add(self, example):
    return {**example, "word_starts": self.tokenizer.word_starts(example["tokens"])}

  def __getitem__(self, index):
    return self._add(self.source[index])

  def __getitems__(self, indices: Sequence[int]):
    return [self._add(ex) for ex in self.source.__getitems__(indices)]


def unigram_log_probs(source, vocab_size: int) -> np.ndarray:
  """Add-one smoothed unigram log-probabilities ``[V]`` of the real tokens of ``source``."""
  arrays = source.arrays()
  counts = np.bincount(arrays["tokens"][arrays["segment_ids"] > 0], minlength=vocab_size)
  counts = counts.astype(np.float64) + 1.0
  return np.log(counts / counts.sum())
