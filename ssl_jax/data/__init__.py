"""Datasets by name, host-count-independent Grain iterators, and global-batch assembly.

* :func:`load_source` / :func:`load_arrays`: ``digits``, ``tfds:<name>[:<config>]``,
  ``folder:<path>``, ``npz:<path>`` as Grain random-access sources or in-memory arrays.
* :func:`make_iterator`: checkpointable per-process batches whose concatenation over processes is
  the single-process global batch.
* :func:`to_global`: per-process NumPy batch -> global ``jax.Array`` sharded over the data axis.
* :func:`make_tokenizer`: ``bytes``, trained ``bpe:<n>`` / ``wordpiece:<n>``, ``file:<path>``.
* :func:`load_corpus` / :func:`load_text_source`: ``pydoc``, ``pystdlib``, ``text:``, ``tfds:`` text
  corpora as packed token rows (:class:`PackedTextSource`) or BERT sentence pairs
  (:class:`SentencePairSource`); :func:`docstring_task` and :func:`docstring_halves` for evaluation.
"""

from ssl_jax.data.iterator import BatchIterator, make_iterator
from ssl_jax.data.sharding import batch_sharding, to_global
from ssl_jax.data.sources import (ArraySource, FolderSource, Source, TfdsSource, load_arrays,
                                  load_source)
from ssl_jax.data.text import (TEXT_CORPORA, PackedTextSource, SentencePairSource, TextCorpus,
                               docstring_halves, docstring_task, load_corpus, load_text_source,
                               split_sentences)
from ssl_jax.data.tokenizer import SPECIAL_TOKENS, Tokenizer, make_tokenizer

__all__ = [
    "ArraySource", "BatchIterator", "FolderSource", "PackedTextSource", "SPECIAL_TOKENS",
    "SentencePairSource", "Source", "TEXT_CORPORA", "TextCorpus", "TfdsSource", "Tokenizer",
    "batch_sharding", "docstring_halves", "docstring_task", "load_arrays", "load_corpus",
    "load_source", "load_text_source", "make_iterator", "make_tokenizer", "split_sentences",
    "to_global",
]
