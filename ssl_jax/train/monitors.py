"""Health monitors computed inside the train step: collapse, effective rank, alignment, uniformity.

All are statistics of the **global** batch: called under ``shard_map``/``pmap`` with ``axis_name``
each device passes its shard and gets the global value (sums reduced over the axis, pairs formed
with the all-gathered batch), identical on every device; without ``axis_name`` the same function of
the whole batch gives the same number. They see their inputs through ``stop_gradient`` (they never
change a gradient) and compute in float32.

* :func:`embedding_std`: the per-dimension standard deviation of L2-normalized embeddings,
  averaged over dimensions. Embeddings spread over the unit sphere of ``d`` dimensions give about
  ``1 / sqrt(d)``; a collapsed representation (every input mapped to the same point, as SimSiam
  without its stop-gradient) gives ~0 (Chen & He, 2021, "Exploring Simple Siamese Representation
  Learning", section 4.1 and figure 2, https://arxiv.org/abs/2011.10566).
  ``embedding_std_ratio = embedding_std * sqrt(d)`` puts that on a scale where 1 is healthy and 0
  is collapse; the train loop warns below :data:`COLLAPSE_THRESHOLD`.
* :func:`rankme`: the effective rank of the embedding matrix (Garrido et al., 2023, "RankMe:
  Assessing the Downstream Performance of Pretrained Self-Supervised Representations by Their
  Rank", eq. 1, https://arxiv.org/abs/2210.02885): with singular values ``sigma_k`` of ``Z``
  (``[N, d]``, not centered, as the paper), ``p_k = sigma_k / ||sigma||_1 + eps`` and
  ``RankMe = exp(-sum_k p_k log p_k)``, ``eps = 1e-7``. Between 1 (collapse to a line) and
  ``min(N, d)``; a dimensional collapse lowers it long before ``embedding_std`` notices. On one
  batch it is bounded by the global batch size (the paper uses 25,600 examples): compare it
  between runs of the same batch size.
* :func:`alignment_uniformity`: Wang & Isola, 2020, "Understanding Contrastive Representation
  Learning through Alignment and Uniformity on the Hypersphere", section 4.1,
  https://arxiv.org/abs/2005.10242: on L2-normalized embeddings ``f``,
  ``alignment = E_pos ||f(x) - f(y)||^2`` (alpha = 2, lower is better aligned, in [0, 4]) and
  ``uniformity = log E_{x != y} exp(-2 ||f(x) - f(y)||^2)`` (t = 2, lower is more uniform, in
  [-8, 0]; 0 is collapse), over all pairs of distinct examples of the global batch of the first
  argument (the paper's ``torch.pdist``).
* :func:`teacher_agreement`: mean cosine between a student's outputs and the teacher's targets
  they are trained to match (BYOL's prediction vs the target projection of the other view, MoCo's
  query vs key); 1 means the student reproduces the teacher exactly.

Cost and cadence: ``rankme`` needs the eigenvalues of a Gram matrix of side ``min(N, d)``
(``d x d`` ``Z^T Z`` reduced over devices when ``d <= N``, else ``N x N`` from the all-gathered
batch), uniformity ``N_local x N x d`` multiply-adds on each device. On XLA:CPU the
eigendecomposition alone made the digits main job's step much slower when run every step, so
RankMe, alignment and uniformity run every ``config.log.health_every`` steps (default 10; 1: every
step; 0: never) under a :func:`jax.lax.cond` on the step number (``batch["step"]``, given by the
train step), and are ``NaN`` in between (logged as ``null`` and left out of the curves).
``embedding_std`` (the collapse warning) and ``teacher_agreement`` are cheap and run every step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ssl_jax.losses.utils import AxisName, all_gather, gather, global_sum, l2_normalize

COLLAPSE_THRESHOLD = 0.1  # on embedding_std_ratio
RANKME_EPS = 1e-7  # RankMe's epsilon (Garrido et al. 2023, eq. 1)


def embedding_std(z: jax.Array, *, axis_name: AxisName = None) -> dict[str, jax.Array]:
  """Collapse monitor of ``z`` ``[n, d]`` (the local shard under ``axis_name``).

  Returns ``{"embedding_std": mean_j std_j(z / ||z||), "embedding_std_ratio": that * sqrt(d)}``,
  statistics over the global batch (sums reduced over ``axis_name``), computed without gradient.

  Example:
    >>> import jax.numpy as jnp
    >>> m = embedding_std(jnp.ones((4, 16)))  # every example the same: collapsed
    >>> float(m["embedding_std"])
    0.0
  """
  z = l2_normalize(jax.lax.stop_gradient(z))
  n = global_sum(jnp.asarray(z.shape[0], jnp.float32), axis_name)
  mean = global_sum(jnp.sum(z, axis=0), axis_name) / n
  var = global_sum(jnp.sum(jnp.square(z - mean), axis=0), axis_name) / n
  std = jnp.mean(jnp.sqrt(jnp.maximum(var, 0.0)))
  return {"embedding_std": std, "embedding_std_ratio": std * jnp.sqrt(float(z.shape[1]))}


def rankme(z: jax.Array, *, axis_name: AxisName = None, eps: float = RANKME_EPS) -> jax.Array:
  """RankMe effective rank of the global batch of embeddings ``z`` ``[n, d]`` (local shard).

  The singular values of the global ``Z`` ``[N, d]`` are the square roots of the eigenvalues of
  ``Z^T Z`` (``d x d``, a sum over devices) or, when ``d > N``, of ``Z Z^T`` (``N x N`` from the
  all-gathered batch): both are exact and the smaller one is decomposed.

  Args:
    z: ``[n, d]`` embeddings (not normalized, as the paper).
    axis_name: the data axis, or None for the whole batch.
    eps: RankMe's epsilon.

  Returns:
    Scalar float32 in ``[1, min(N, d)]``.

  Example:
    >>> import jax.numpy as jnp
    >>> round(float(rankme(jnp.eye(4))), 3)  # four equal singular values
    4.0
  """
  z = jax.lax.stop_gradient(z).astype(jnp.float32)
  n_global = z.shape[0] * (1 if axis_name is None else jax.lax.axis_size(axis_name))
  if z.shape[1] <= n_global:
    gram = global_sum(z.T @ z, axis_name)
  else:
    full = all_gather(z, axis_name, invariant=True)
    gram = full @ full.T
  sigma = jnp.sqrt(jnp.maximum(jnp.linalg.eigvalsh(gram), 0.0))
  p = sigma / jnp.maximum(jnp.sum(sigma), 1e-30) + eps
  return jnp.exp(-jnp.sum(p * jnp.log(p)))


def alignment_uniformity(z_a: jax.Array, z_b: jax.Array | None = None, *,
                         axis_name: AxisName = None, t: float = 2.0) -> dict[str, jax.Array]:
  """Wang & Isola's alignment (of positive pairs ``(z_a[i], z_b[i])``) and uniformity (of
  ``z_a``), over the global batch.

  Args:
    z_a: ``[n, d]`` embeddings of one view (local shard).
    z_b: ``[n, d]`` embeddings of the positives of ``z_a``'s rows, or None (no alignment).
    axis_name: the data axis, or None.
    t: uniformity's temperature (the paper's ``t = 2``).

  Returns:
    ``{"uniformity": ..., "alignment": ...}`` (``alignment`` only with ``z_b``), float32 scalars.

  Example:
    >>> import jax.numpy as jnp
    >>> m = alignment_uniformity(jnp.eye(3), jnp.eye(3))  # orthonormal rows, perfect positives
    >>> float(m["alignment"]), round(float(m["uniformity"]), 4)  # ||x - y||^2 = 2 for each pair
    (0.0, -4.0)
  """
  f_a = l2_normalize(jax.lax.stop_gradient(z_a))
  n = global_sum(jnp.asarray(f_a.shape[0], jnp.float32), axis_name)
  out = {}
  if z_b is not None:
    f_b = l2_normalize(jax.lax.stop_gradient(z_b))
    out["alignment"] = global_sum(jnp.sum(jnp.square(f_a - f_b)), axis_name) / n
  full, offset = gather(f_a, axis_name)                                 # [N, d]
  # ||x - y||^2 = 2 - 2 x.y for unit vectors; the diagonal (x == y) is excluded.
  sq = jnp.maximum(2.0 - 2.0 * (f_a @ full.T), 0.0)                     # [n, N]
  rows = offset + jnp.arange(f_a.shape[0])
  off_diag = rows[:, None] != jnp.arange(full.shape[0])[None, :]
  total = global_sum(jnp.sum(jnp.where(off_diag, jnp.exp(-t * sq), 0.0)), axis_name)
  out["uniformity"] = jnp.log(total / (n * (n - 1.0)))
  return out


def teacher_agreement(student: jax.Array, teacher: jax.Array, *,
                      axis_name: AxisName = None) -> jax.Array:
  """Mean cosine similarity of ``student[i]`` and ``teacher[i]`` over the global batch.

  Args:
    student: ``[n, d]`` the student's outputs (e.g. BYOL's online prediction).
    teacher: ``[n, d]`` the targets it is trained to match (e.g. the target projection).
    axis_name: the data axis, or None.

  Returns:
    Scalar float32 in ``[-1, 1]``.
  """
  s = l2_normalize(jax.lax.stop_gradient(student))
  t = l2_normalize(jax.lax.stop_gradient(teacher))
  n = global_sum(jnp.asarray(s.shape[0], jnp.float32), axis_name)
  return global_sum(jnp.sum(s * t), axis_name) / n


def health_metrics(z_a: jax.Array, z_b: jax.Array | None = None, *, axis_name: AxisName = None,
                   student: jax.Array | None = None, teacher: jax.Array | None = None,
                   every: int = 1, step=None) -> dict[str, jax.Array]:
  """Every monitor a method logs, from the embeddings its loss acts on.

  Args:
    z_a: ``[n, d]`` embeddings of the first view (local shard).
    z_b: ``[n, d]`` the second view's embeddings of the same examples (for ``alignment``), or None.
    axis_name: the data axis, or None.
    student, teacher: ``[n, d']`` outputs of a student and the teacher targets they match (for
      ``teacher_agreement``), or None for methods without a teacher.
    every: compute ``rankme``, ``uniformity`` and ``alignment`` when ``step % every == 0``
      (``NaN`` otherwise); 1 or ``step=None``: always; 0: never (see the module docstring).
    step: the step number (int scalar, the same on every device), or None.

  Returns:
    ``embedding_std``, ``embedding_std_ratio``; unless ``every == 0``: ``rankme``,
    ``uniformity``, ``alignment`` (with ``z_b``); ``teacher_agreement`` (with a teacher).
  """
  if every < 0:
    raise ValueError(f"health_metrics: every must be >= 0, got {every}.")
  out = embedding_std(z_a, axis_name=axis_name)
  if every:
    # The global batch is gathered before any conditional: collectives inside a lax.cond (taken
    # on some steps) made a Barlow Twins step abort in XLA:CPU. Inside, plain global-batch math.
    g_a = all_gather(jax.lax.stop_gradient(z_a), axis_name, invariant=True)
    g_b = None if z_b is None else all_gather(jax.lax.stop_gradient(z_b), axis_name,
                                              invariant=True)

    def expensive():
      return {"rankme": rankme(g_a), **alignment_uniformity(g_a, g_b)}

    if every == 1 or step is None:
      out.update(expensive())
    else:
      skipped = jax.tree.map(lambda s: jnp.full(s.shape, jnp.nan, s.dtype),
                             jax.eval_shape(expensive))
      out.update(jax.lax.cond(jnp.asarray(step) % every == 0, expensive, lambda: skipped))
  if (student is None) != (teacher is None):
    raise ValueError("health_metrics: pass both student and teacher, or neither.")
  if student is not None:
    out["teacher_agreement"] = teacher_agreement(student, teacher, axis_name=axis_name)
  return out


def method_health(config, batch, z_a, z_b=None, *, axis_name: AxisName = None, student=None,
                  teacher=None) -> dict[str, jax.Array]:
  """:func:`health_metrics` every ``config.log.health_every`` steps (the step from
  ``batch["step"]``; every call when the batch has none, e.g. a loss called outside the engine).
  """
  every = int(config.log.get("health_every", 10)) if "log" in config else 1
  return health_metrics(z_a, z_b, axis_name=axis_name, student=student, teacher=teacher,
                        every=every, step=batch.get("step") if isinstance(batch, dict) else None)
