"""Text: rows of token ids built from a corpus in the run's tokenization, passed to the step as
they are (a language method masks or drops out inside its loss, keyed by each row's ``index``),
scored by perplexity against the unigram baseline and by the docstring task
(:func:`ssl_jax.evaluate.text.evaluate_text`). See :mod:`ssl_jax.modalities` for the contract.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from ssl_jax import methods
from ssl_jax.data import load_corpus, load_text_source
from ssl_jax.methods import text_common

PyTree = Any

EVALUATE = "ssl_jax.evaluate.text:evaluate_text"
STEP_FLOPS = "ssl_jax.bench.flops:text_step_flops"
BENCH_CONFIG = "ssl_jax.bench.harness:text_bench_config"
SYNTHETIC_BENCH_DATA = False  # the corpora are small and ship with the library
NO_EMBEDDING_FIGURE = ("No embedding figure for a language method (its features are scored by the "
                       "docstring task in eval.json).")


def load_source(config, split: str | None = None):
  """The corpus's packed rows (or sentence pairs) of ``split`` (default ``config.train_split``)
  in the run's tokenization (:mod:`ssl_jax.methods.text_common`), framed as the method's ``DATA``
  says. Sentence pairs of the training split are built with the method's ``dupe_factor`` passes
  over the corpus; other splits with one."""
  split = split or config.train_split
  tokenizer = text_common.tokenizer_for(config)
  data = dict(methods.get_module(config.method).DATA)
  if data.get("pairs") and split == config.train_split:
    data["dupe_factor"] = config.method_kwargs.get("dupe_factor", 1)
  source = load_text_source(config.dataset, split, tokenizer=tokenizer,
                            seq_len=config.text.seq_len, data_dir=config.data_dir or None,
                            seed=config.seed, **data)
  if config.method_kwargs.get("whole_word", False):
    source = text_common.WordStarts(source, tokenizer)
  return source


def check_evaluable(config) -> None:
  """Refuses, before training writes anything, a corpus without the split evaluation scores the
  language model on (``config.test_split``; :func:`ssl_jax.evaluate.text.evaluate_text`)."""
  try:
    load_corpus(config.dataset, config.test_split, data_dir=config.data_dir or None)
  except (ValueError, FileNotFoundError) as e:
    raise type(e)(f"evaluation reads the split --config.test_split={config.test_split!r}, which "
                  f"does not load: {e}") from e


def example_batch(config, source) -> dict:
  """Shapes of one global batch of ``source``'s rows (its ``example_shapes``, int32)."""
  batch = {k: jax.ShapeDtypeStruct((config.batch_size, *shape), jnp.int32)
           for k, shape in source.example_shapes.items()}
  batch["index"] = jax.ShapeDtypeStruct((config.batch_size,), jnp.int32)
  return batch


def make_preprocess(config) -> Callable[[PyTree, jax.Array], PyTree]:
  """The identity: rows reach the loss as read."""
  del config
  return lambda batch, key: batch


def view_sizes(config, host_batch) -> None:
  """No views."""
  del config, host_batch


def throughput(config, examples_per_s: float) -> dict:
  """``tokens_per_s``: rows per second times ``config.text.seq_len`` (padding included)."""
  return {"tokens_per_s": examples_per_s * config.text.seq_len}
