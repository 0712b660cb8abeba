"""Online linear probe: a classifier trained during pretraining on frozen (``stop_gradient``)
features, with its own optimizer, as BYOL (Grill et al., 2020, appendix C.1: "a linear classifier
trained on top of the frozen representation ... during training") and solo-learn (da Costa et al.,
2022, JMLR, ``BaseMethod``'s online classifier).

:func:`with_online_probe` wraps any :class:`~ssl_jax.methods.Method` and returns a Method; the
engine and the wrapped method are unchanged:

* The probe lives in the **method state** (``method_state["online_probe"] = {"params": {"w",
  "b"}, "opt_state": ...}``), not in the trained parameters: the engine's optimizer never sees
  it, so it cannot change the SSL parameters or their optimizer state, and it is checkpointed,
  resumed and held back on skipped steps with the rest of the method state.
* Each step, the wrapped ``loss_fn`` runs unchanged; then the probe reads
  ``stop_gradient(method.features(params, batch_stats, method_state, first_view))`` (the encoder output that
  evaluation probes, BatchNorm in inference mode, of the first view in sorted name order: an
  augmented training view), L2-normalized like the offline probe
  (:mod:`ssl_jax.evaluate.linear`), and takes one step of its own :func:`optax.adam` on the
  softmax cross-entropy of the global batch. The gradient of a linear softmax classifier is
  written in closed form (``X^T (softmax - onehot) / N``) and summed over the data axis with an
  explicit ``psum``: the same code is then exact under ``shard_map``, ``pmap`` and GSPMD, with no
  reliance on how each mode transposes collectives.
* Logged (global batch, before the probe's update): ``online_probe_acc`` and
  ``online_probe_loss``.

Cost: one extra inference forward of the encoder on one view per step (no backward), plus a
``D x C`` matmul. It needs class labels (``batch["label"]``); ``config.eval.online_probe="auto"``
turns it on only for datasets that have them (:func:`ssl_jax.train.loop.pretrain`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from ssl_jax.losses.utils import l2_normalize
from ssl_jax.methods import Method

STATE_KEY = "online_probe"


def _first_view(batch) -> jax.Array:
  views = batch.get("views") if isinstance(batch, dict) else None
  if not views:
    raise ValueError("online probe: the batch has no 'views' (image methods only).")
  return views[sorted(views)[0]]


def probe_gradients(params: dict, feats: jax.Array, labels: jax.Array, *, num_classes: int,
                    axis_name) -> tuple[dict, jax.Array, jax.Array]:
  """Softmax cross-entropy of ``feats @ w + b`` over the global batch, its gradient and accuracy.

  Args:
    params: ``{"w": [D, C], "b": [C]}``.
    feats: ``[n, D]`` features of the local shard (normalized, without gradient).
    labels: ``[n]`` int labels.
    num_classes: ``C``.
    axis_name: the data axis, or None.

  Returns:
    ``(grads, loss, accuracy)``: gradients of the global-batch mean loss (identical on every
    device), the loss and the accuracy.
  """
  logits = feats @ params["w"] + params["b"]
  onehot = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
  probs = jax.nn.softmax(logits, axis=-1)
  sums = {"w": feats.T @ (probs - onehot), "b": jnp.sum(probs - onehot, axis=0),
          "loss": jnp.sum(optax.softmax_cross_entropy(logits, onehot)),
          "correct": jnp.sum(jnp.argmax(logits, -1) == labels).astype(jnp.float32),
          "count": jnp.asarray(labels.shape[0], jnp.float32)}
  if axis_name is not None:
    sums = jax.lax.psum(sums, axis_name)
  n = sums["count"]
  return {"w": sums["w"] / n, "b": sums["b"] / n}, sums["loss"] / n, sums["correct"] / n


def with_online_probe(method: Method, *, num_classes: int, learning_rate: float = 1e-3,
                      image_shape=None) -> Method:
  """``method`` with an online linear probe in its method state (see the module docstring).

  Args:
    method: a Method whose ``method_state`` is a dict without an ``"online_probe"`` key.
    num_classes: ``C``.
    learning_rate: the probe's Adam learning rate.
    image_shape: ``(H, W, C)`` of the views, for the feature width; default: read from the
      example batch given to ``init`` (its ``image`` or first view).

  Returns:
    A Method with the same ``features``.
  """
  if num_classes < 2:
    raise ValueError(f"online probe: num_classes must be >= 2, got {num_classes}.")
  tx = optax.adam(learning_rate)

  def init(rng, example_batch):
    params, batch_stats, state = method.init(rng, example_batch)
    if not isinstance(state, dict) or STATE_KEY in state:
      raise ValueError("online probe: the method state must be a dict without an "
                       f"{STATE_KEY!r} entry.")
    shape = image_shape
    if shape is None:
      x = example_batch.get("image") if "image" in example_batch else _first_view(example_batch)
      shape = tuple(x.shape[1:])
    width = jax.eval_shape(lambda: method.features(
        params, batch_stats, state, jnp.zeros((1, *shape), jnp.float32))).shape[-1]
    probe = {"w": jnp.zeros((width, num_classes), jnp.float32),
             "b": jnp.zeros((num_classes,), jnp.float32)}
    return params, batch_stats, {**state, STATE_KEY: {"params": probe,
                                                      "opt_state": tx.init(probe)}}

  def loss_fn(params, batch_stats, method_state, batch, rng, *, axis_name):
    inner = _inner(method_state)
    loss, (metrics, new_stats, new_inner) = method.loss_fn(params, batch_stats, inner, batch, rng,
                                                           axis_name=axis_name)
    if "label" not in batch:
      raise ValueError("online probe: the batch has no 'label' (turn it off for unlabeled data "
                       "with config.eval.online_probe='off').")
    feats = jax.lax.stop_gradient(
        l2_normalize(method.features(params, batch_stats, inner, _first_view(batch))))
    probe = method_state[STATE_KEY]
    grads, probe_loss, acc = probe_gradients(probe["params"], feats, batch["label"],
                                             num_classes=num_classes, axis_name=axis_name)
    updates, opt_state = tx.update(grads, probe["opt_state"], probe["params"])
    new_probe = {"params": optax.apply_updates(probe["params"], updates), "opt_state": opt_state}
    metrics = {**metrics, "online_probe_acc": acc, "online_probe_loss": probe_loss}
    return loss, (metrics, new_stats, {**new_inner, STATE_KEY: new_probe})

  def update(params, batch_stats, method_state, step):
    return {**method.update(params, batch_stats, _inner(method_state), step),
            STATE_KEY: method_state[STATE_KEY]}

  def periodic_of(work):
    def fn(params, batch_stats, method_state, step, *, axis_name):
      new = work.fn(params, batch_stats, _inner(method_state), step, axis_name=axis_name)
      return {**new, STATE_KEY: method_state[STATE_KEY]}
    return work._replace(fn=fn)

  project = None if method.project is None else (
      lambda params, method_state, step: method.project(params, _inner(method_state), step))
  sharding = None if method.state_sharding is None else (
      lambda method_state: {**method.state_sharding(_inner(method_state)),
                            STATE_KEY: jax.tree.map(lambda _: False, method_state[STATE_KEY])})
  # Everything else (features, eval_state, param_groups) is the wrapped method's.
  return method._replace(init=init, loss_fn=loss_fn, update=update, project=project,
                         periodic=tuple(periodic_of(w) for w in method.periodic),
                         state_sharding=sharding)


def _inner(method_state: dict) -> dict:
  """The wrapped method's own state: ``method_state`` without the probe."""
  return {k: v for k, v in method_state.items() if k != STATE_KEY}


def probe_classes(config, source) -> int | None:
  """How many classes the run's online probe has, or None for no probe.

  ``config.eval.online_probe``: ``"off"``; ``"auto"`` (on when ``source.num_classes`` is known and
  at least 2, and the batches are images); ``"on"`` (an error when the dataset has no labels).
  """
  mode = config.eval.get("online_probe", "off")
  if mode == "off":
    return None
  num = getattr(source, "num_classes", None)
  if num is not None and num >= 2 and getattr(source, "image_shape", None) is not None:
    return int(num)
  if mode == "on":
    raise ValueError(f"--config.eval.online_probe='on' but dataset {config.dataset!r} has no class "
                     "labels for images; use 'auto' or 'off'.")
  return None
