"""``BatchNorm``: Flax NNX's BatchNorm with cheaper tracing of its running-statistics update.

``nnx.BatchNorm`` updates its statistics with ``self.mean[...] = new``. For that full replacement
Flax compares ``getattr(new, "sharding", None)`` with the old value's. On a tracer, ``.sharding``
raises an ``AttributeError`` whose message formats where the tracer came from; building it costs
milliseconds. This happens twice per statistic, on every BatchNorm, in every trace.

Measured on ``experiments/byol_imagenet.py:runlocal`` (a shrunk ResNet-50) pretraining 2 steps
through the command line: 24-30 s before, 21.5-22.5 s after; under ``cProfile`` the messages took
6 of the run's 36 s. Every compiled step with BatchNorm pays it, and the test suite compiles
hundreds.

This class keeps ``nnx.BatchNorm``'s computation and parameters. Its statistics are
:class:`_BatchStat` Variables (an ``nnx.BatchStat`` subclass: ``nnx.split(..., nnx.BatchStat)`` and
the pure-dict boundary of :mod:`ssl_jax.models.nnx_utils` see no difference). A full replacement by
a traced value of the same shape and dtype takes Flax's own no-index ``set_value`` path, which
gives the same result as Flax's check would (neither value has a sharding while tracing). Anything
else goes through Flax unchanged.
"""

from __future__ import annotations

import jax
from flax import nnx
from flax.nnx import variablelib


class _BatchStat(nnx.BatchStat):
  """``nnx.BatchStat`` whose ``v[...] = traced`` skips the sharding comparison (see module doc)."""

  def __setitem__(self, key, value) -> None:
    old = self.get_raw_value()
    if (key is Ellipsis and isinstance(value, jax.core.Tracer)
        and isinstance(old, jax.core.Tracer) and not variablelib.is_array_ref(old)
        and value.shape == old.shape and value.dtype == old.dtype):
      self.set_value(value)
    else:
      super().__setitem__(key, value)


class BatchNorm(nnx.BatchNorm):
  """``nnx.BatchNorm`` (same arguments, parameters and results) with :class:`_BatchStat`
  running statistics."""

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self.mean = _BatchStat(self.mean.get_value())
    self.var = _BatchStat(self.var.get_value())
