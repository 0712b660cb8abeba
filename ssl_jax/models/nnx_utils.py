"""Pure-pytree boundary for Flax NNX modules.

Training code is functional: the train state holds plain nested dicts of arrays (``params`` and
``batch_stats``), and a method rebuilds its NNX modules inside ``grad``/``jit``/``shard_map``. This
module owns that boundary so every method does it the same way.

Why ``copy=True``: merging into a module whose BatchNorm updates its statistics inside a traced
function raises ``TraceContextError`` unless the merged module owns fresh Variable objects.

Why a graph definition per axis name: BatchNorm's ``axis_name`` (the data axis over which batch
statistics are synced) is a static attribute of the graph definition. The same parameters are
merged into the graph built for the current parallel mode: ``"data"`` under ``shard_map``/``pmap``,
``None`` under GSPMD (the global batch is one logical array there) and for evaluation.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
from flax import nnx

PyTree = Any


class Networks:
  """Builds, splits and rebuilds one NNX module tree.

  Args:
    build: ``build(rngs, bn_axis_name) -> nnx.Module``. Called with real ``rngs`` once by
      :meth:`init` and abstractly (under ``nnx.eval_shape``) for each axis name.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from flax import nnx
    >>> nets = Networks(lambda rngs, axis: nnx.Linear(3, 2, rngs=rngs))
    >>> params, stats = nets.init(jax.random.key(0))
    >>> sorted(params), stats
    (['bias', 'kernel'], {})
    >>> nets.bind(params, stats)(jnp.ones((1, 3))).shape
    (1, 2)
  """

  def __init__(self, build: Callable[[nnx.Rngs, str | None], nnx.Module]):
    self._build = build

  @functools.lru_cache(maxsize=None)
  def _abstract(self, bn_axis_name: str | None):
    module = nnx.eval_shape(lambda: self._build(nnx.Rngs(0), bn_axis_name))
    graphdef, params, stats = nnx.split(module, nnx.Param, nnx.BatchStat)
    return graphdef, params, stats

  def init(self, rng: jax.Array) -> tuple[PyTree, PyTree]:
    """Returns ``(params, batch_stats)`` as plain nested dicts of float32 arrays."""
    module = self._build(nnx.Rngs(rng), None)
    _, params, stats = nnx.split(module, nnx.Param, nnx.BatchStat)
    return nnx.to_pure_dict(params), nnx.to_pure_dict(stats)

  def abstract_init(self) -> tuple[PyTree, PyTree]:
    """Shapes and dtypes of :meth:`init`'s output, without computing anything."""
    return jax.eval_shape(lambda: self.init(jax.random.key(0)))

  def bind(self, params: PyTree, batch_stats: PyTree, *, axis_name: str | None = None):
    """Rebuilds the module from pure dicts; safe inside ``jit``/``grad``/``shard_map``."""
    graphdef, params_abstract, stats_abstract = self._abstract(axis_name)
    params = _unflatten(params_abstract, params, "params")
    stats = _unflatten(stats_abstract, batch_stats, "batch_stats")
    return nnx.merge(graphdef, params, stats, copy=True)

  @staticmethod
  def batch_stats(module: nnx.Module) -> PyTree:
    """The module's (possibly updated) BatchNorm statistics as a pure dict."""
    return nnx.to_pure_dict(nnx.state(module, nnx.BatchStat))


def _unflatten(abstract: nnx.State, tree: PyTree, what: str) -> nnx.State:
  """Puts the leaves of the pure dict ``tree`` into the Variables of ``abstract``."""
  expected = jax.tree.structure(nnx.to_pure_dict(abstract))
  if jax.tree.structure(tree) != expected:
    want = {jax.tree_util.keystr(p) for p, _ in
            jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(abstract))[0]}
    got = {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]}
    raise ValueError(f"{what} do not match the network: missing {sorted(want - got)[:10]}, "
                     f"unexpected {sorted(got - want)[:10]}; was it built from another config?")
  return jax.tree.unflatten(jax.tree.structure(abstract), jax.tree.leaves(tree))


class Bundle(nnx.Module):
  """Named sub-networks (``encoder``, ``projector``, ``predictor``, ...) as one module tree.

  Parameters are keyed by these names, so ``params["encoder"]`` is the encoder's subtree whatever
  the method: evaluation and fine-tuning restore it from any method's checkpoint.
  """

  def __init__(self, **modules: nnx.Module):
    for name, module in modules.items():
      setattr(self, name, module)
