"""Datasets by name, host-count-independent Grain iterators, and global-batch assembly.

* :func:`load_source` / :func:`load_arrays`: ``digits``, ``tfds:<name>[:<config>]``,
  ``folder:<path>``, ``npz:<path>`` as Grain random-access sources or in-memory arrays.
* :func:`make_iterator`: checkpointable per-process batches whose concatenation over processes is
  the single-process global batch.
* :func:`to_global`: per-process NumPy batch -> global ``jax.Array`` sharded over the data axis.
"""

from ssl_jax.data.iterator import BatchIterator, make_iterator
from ssl_jax.data.sharding import batch_sharding, to_global
from ssl_jax.data.sources import (ArraySource, FolderSource, Source, TfdsSource, load_arrays,
                                  load_source)

__all__ = [
    "ArraySource", "BatchIterator", "FolderSource", "Source", "TfdsSource", "batch_sharding",
    "load_arrays", "load_source", "make_iterator", "to_global",
]
