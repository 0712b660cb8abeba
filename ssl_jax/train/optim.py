"""Optax optimizers, schedules and parameter groups built from a config.

``build_optimizer(cfg, *, batch_size, total_steps, steps_per_epoch, param_groups=None)`` returns
the gradient transformation and its learning-rate schedule. Conventions (SimCLR/BYOL/MoCo recipes):

* Peak learning rate ``lr = base_lr * scale(batch_size)`` with ``lr_scaling`` ``"linear"``
  (``B / 256``, Goyal et al. 2017, SimCLR appendix B.9), ``"sqrt"`` (``sqrt(B)``, SimCLR's LARS
  variant for small batches is ``0.075 * sqrt(B)``) or ``"none"``. ``base_batch`` is 256.
* Schedule shapes (``optimizer.schedule``), each a function of this module returning an optax
  schedule; every one warms up linearly from 0 to the peak over the warmup steps (except
  ``tri_stage``, whose stages come from ``optimizer.tri_stage``):
  ``"warmup_cosine"`` (default): cosine decay to ``final_lr_fraction * peak`` at ``total_steps``
  (SGDR, Loshchilov & Hutter 2017; SimCLR, BYOL); ``"constant"``: the peak after warmup;
  ``"linear"``: linear decay to ``final_lr_fraction * peak`` (BERT); ``"tri_stage"``: warmup,
  hold at the peak, exponential decay to ``final_lr_fraction * peak`` (wav2vec 2.0, Baevski et
  al. 2020; fairseq's ``tri_stage`` scheduler), stage lengths the fractions ``(warmup, hold,
  decay)`` of ``total_steps``, then held at the final value.
* Weight decay is ``weight_decay``, or, with ``weight_decay_end`` set, a cosine from
  ``weight_decay`` to ``weight_decay_end`` over the run (DINO, Caron et al. 2021: 0.04 -> 0.4).
* Weight decay and the LARS trust ratio skip biases and normalization parameters (every leaf with
  ``ndim <= 1``) and ViT position embeddings / class tokens, as SimCLR, BYOL and MoCo v3 do.
* **Parameter groups** (``optimizer.groups``, plus groups a method declares, the config's winning
  on a name clash): ``{name: {pattern, lr_mult, wd_mult, frozen_until_step,
  frozen_until_epoch}}``. ``pattern`` is a regular expression searched (``re.search``) in the
  ``'/'``-joined parameter path (``projector/.*``, ``^prototypes/``, ``^encoder/blocks/3/``);
  parameters matching no group form the ``"default"`` group (multipliers 1). A parameter matching
  two groups is refused (no silent precedence), and so is a pattern matching nothing. A group's
  learning rate is ``lr_mult * schedule(step)``, its weight decay ``wd_mult * wd(step)``. A group
  frozen until step ``S`` is truly frozen before ``S`` (:func:`hold_until`): zero update, no
  weight decay, optimizer state (moments, counts) unchanged; from ``S`` it starts with fresh
  moments and the schedule's value at the global step. Each group is its own transformation under
  :func:`optax.partition`.
* Gradient clipping (``optimizer.clip_norm``) is applied by the train step, not here, so the step
  can log the gradient norm before and after it (:mod:`ssl_jax.train.step`).
* The learning rate (and a scheduled or grouped weight decay) is injected as a hyperparameter
  (:func:`optax.inject_hyperparams`), so the value actually used is logged
  (:func:`current_learning_rate`, :func:`current_learning_rates`). Without groups and without
  ``weight_decay_end`` the transformation and its state are exactly those of earlier versions.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

_LOG = logging.getLogger(__name__)

OPTIMIZERS = ("sgd", "adamw", "lars", "lamb")
LR_SCALINGS = ("linear", "sqrt", "none")
SCHEDULES = ("warmup_cosine", "constant", "linear", "tri_stage")
DEFAULT_GROUP = "default"
GROUP_KEYS = ("pattern", "lr_mult", "wd_mult", "frozen_until_step", "frozen_until_epoch")
_NO_DECAY_NAMES = ("pos_embed", "pos_embedding", "cls_token", "class_token")


def _key_name(key) -> str:
  return str(getattr(key, "key", getattr(key, "name", getattr(key, "idx", key))))


def path_name(path) -> str:
  """``'/'``-joined names of a pytree key path (``encoder/blocks/0/mlp/kernel``)."""
  return "/".join(_key_name(k) for k in path)


def decay_mask(params: Any) -> Any:
  """True for leaves that get weight decay / LARS adaptation: weights, not biases or norms."""

  def keep(path, leaf) -> bool:
    names = [_key_name(k) for k in path]
    if any(n in _NO_DECAY_NAMES for n in names):
      return False
    return leaf.ndim > 1

  return jax.tree_util.tree_map_with_path(keep, params)


def peak_learning_rate(base_lr: float, batch_size: int, scaling: str, base_batch: int = 256):
  if scaling == "linear":
    return base_lr * batch_size / base_batch
  if scaling == "sqrt":
    return base_lr * math.sqrt(batch_size)
  if scaling == "none":
    return base_lr
  raise ValueError(f"optimizer.lr_scaling={scaling!r}; valid: {', '.join(LR_SCALINGS)}.")


def _clamp_warmup(warmup_steps: int, total_steps: int) -> int:
  return min(warmup_steps, max(total_steps - 1, 0))


def warmup_cosine(peak: float, *, total_steps: int, warmup_steps: int,
                  final_lr_fraction: float = 0.0) -> optax.Schedule:
  """Linear warmup 0 -> ``peak`` over ``warmup_steps``, cosine decay to
  ``final_lr_fraction * peak`` at ``total_steps`` (Loshchilov & Hutter 2017)."""
  warmup_steps = _clamp_warmup(warmup_steps, total_steps)
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=peak, warmup_steps=warmup_steps,
      decay_steps=max(total_steps, warmup_steps + 1), end_value=peak * final_lr_fraction)


def warmup_constant(peak: float, *, total_steps: int, warmup_steps: int) -> optax.Schedule:
  """Linear warmup 0 -> ``peak`` over ``warmup_steps``, then ``peak``."""
  warmup_steps = _clamp_warmup(warmup_steps, total_steps)  # (optax.warmup_constant_schedule
  # stays at 0 for warmup_steps=0)
  return optax.join_schedules(
      [optax.linear_schedule(0.0, peak, warmup_steps), optax.constant_schedule(peak)],
      [warmup_steps])


def warmup_linear(peak: float, *, total_steps: int, warmup_steps: int,
                  final_lr_fraction: float = 0.0) -> optax.Schedule:
  """Linear warmup 0 -> ``peak``, then linear decay to ``final_lr_fraction * peak`` at
  ``total_steps`` (BERT, Devlin et al. 2019)."""
  warmup_steps = _clamp_warmup(warmup_steps, total_steps)
  return optax.join_schedules(
      [optax.linear_schedule(0.0, peak, warmup_steps),
       optax.linear_schedule(peak, peak * final_lr_fraction, total_steps - warmup_steps)],
      [warmup_steps])


def tri_stage(peak: float, *, total_steps: int, phases: tuple[float, float, float],
              final_lr_fraction: float) -> optax.Schedule:
  """wav2vec 2.0's schedule (fairseq ``tri_stage``): linear warmup 0 -> ``peak``, hold, then
  exponential decay ``peak * final_lr_fraction ** (t / decay_steps)`` to
  ``final_lr_fraction * peak``, held after. Stage lengths are ``round(f * total_steps)`` for the
  fractions ``phases = (warmup, hold, decay)`` (summing to at most 1).
  """
  if not 0 < final_lr_fraction < 1:
    raise ValueError("optimizer.schedule='tri_stage' decays exponentially to "
                     "final_lr_fraction * peak, so it needs 0 < final_lr_fraction < 1, got "
                     f"{final_lr_fraction} (e.g. --config.optimizer.final_lr_fraction=0.05).")
  warmup, hold, decay = (round(f * total_steps) for f in phases)
  return optax.join_schedules(
      [optax.linear_schedule(0.0, peak, warmup), optax.constant_schedule(peak),
       optax.exponential_decay(peak, max(decay, 1), final_lr_fraction,
                               end_value=peak * final_lr_fraction)],
      [warmup, warmup + hold])


def make_schedule(peak: float, *, total_steps: int, warmup_steps: int,
                  final_lr_fraction: float = 0.0, kind: str = "warmup_cosine",
                  phases: tuple[float, float, float] = (0.1, 0.4, 0.5)) -> optax.Schedule:
  """The learning-rate schedule ``kind`` (one of :data:`SCHEDULES`, see the module docstring)."""
  if kind == "warmup_cosine":
    return warmup_cosine(peak, total_steps=total_steps, warmup_steps=warmup_steps,
                         final_lr_fraction=final_lr_fraction)
  if kind == "constant":
    return warmup_constant(peak, total_steps=total_steps, warmup_steps=warmup_steps)
  if kind == "linear":
    return warmup_linear(peak, total_steps=total_steps, warmup_steps=warmup_steps,
                         final_lr_fraction=final_lr_fraction)
  if kind == "tri_stage":
    return tri_stage(peak, total_steps=total_steps, phases=tuple(phases),
                     final_lr_fraction=final_lr_fraction)
  raise ValueError(f"optimizer.schedule={kind!r}; valid: {', '.join(SCHEDULES)}.")


def weight_decay_schedule(start: float, end: float, *, total_steps: int) -> optax.Schedule:
  """Cosine from ``start`` (step 0) to ``end`` (``total_steps``), as DINO's weight decay."""
  cosine = optax.cosine_decay_schedule(1.0, max(total_steps, 1))
  return lambda count: end + (start - end) * cosine(count)


@dataclasses.dataclass(frozen=True)
class ParamGroup:
  """One parameter group, resolved: ``frozen_until`` in steps; ``origin`` names it in errors."""
  name: str
  pattern: str
  lr_mult: float = 1.0
  wd_mult: float = 1.0
  frozen_until: int = 0
  origin: str = ""


def resolve_groups(config_groups, method_groups=None, *,
                   steps_per_epoch: int) -> dict[str, ParamGroup]:
  """Merges a method's groups and ``optimizer.groups`` (the config wins on a name), checks keys
  and values and converts ``frozen_until_epoch`` to steps (the later of the two wins)."""
  merged = {}
  for origin, groups in (("method", method_groups), ("config", config_groups)):
    for name, spec in dict(groups or {}).items():
      spec = dict(spec)
      key = f"--config.optimizer.groups.{name}" if origin == "config" else f"method group {name!r}"
      unknown = sorted(set(spec) - set(GROUP_KEYS))
      if unknown:
        raise ValueError(f"{key}: unknown keys {unknown}; valid: {', '.join(GROUP_KEYS)}.")
      if name == DEFAULT_GROUP:
        raise ValueError(f"{key}: the group name {DEFAULT_GROUP!r} is reserved for the "
                         "parameters no pattern matches; choose another name.")
      if not spec.get("pattern"):
        raise ValueError(f"{key}.pattern is missing: a regular expression searched in "
                         "'/'-joined parameter paths, e.g. 'projector/.*'.")
      try:
        re.compile(spec["pattern"])
      except re.error as e:
        raise ValueError(f"{key}.pattern={spec['pattern']!r} is not a regular expression "
                         f"({e}).") from None
      lr_mult, wd_mult = float(spec.get("lr_mult", 1.0)), float(spec.get("wd_mult", 1.0))
      step, epoch = int(spec.get("frozen_until_step", 0)), spec.get("frozen_until_epoch", 0)
      if lr_mult < 0 or wd_mult < 0 or step < 0 or epoch < 0:
        raise ValueError(f"{key}: lr_mult, wd_mult, frozen_until_step and frozen_until_epoch "
                         "must be >= 0.")
      merged[name] = ParamGroup(name, spec["pattern"], lr_mult, wd_mult,
                                max(step, round(epoch * steps_per_epoch)), key)
  return merged


def group_labels(params: Any, groups: dict[str, ParamGroup]) -> Any:
  """The group name of every leaf of ``params`` (``"default"`` where no pattern matches).

  Raises:
    ValueError: a leaf matched by two groups, or a group whose pattern matches no leaf.
  """
  used = set()

  def label(path, _):
    name = path_name(path)
    hits = [g.name for g in groups.values() if re.search(g.pattern, name)]
    if len(hits) > 1:
      raise ValueError(f"Parameter {name!r} matches the patterns of several groups {hits}; "
                       "make the patterns disjoint (--config.optimizer.groups.<name>.pattern).")
    used.update(hits)
    return hits[0] if hits else DEFAULT_GROUP

  labels = jax.tree_util.tree_map_with_path(label, params)
  names = [path_name(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
  tops = sorted({n.split("/")[0] for n in names})
  for g in groups.values():
    if g.name not in used:
      raise ValueError(f"{g.origin}.pattern={g.pattern!r} matches no parameter; parameter paths "
                       f"look like {names[:2]} under the top-level names {tops}.")
  return labels


class HoldState(NamedTuple):
  """State of :func:`hold_until`: the global step count and the held inner state."""
  count: jax.Array
  inner_state: Any


def hold_until(inner: optax.GradientTransformation, step: int) -> optax.GradientTransformation:
  """``inner`` that does nothing before ``step``: zero updates and ``inner``'s state unchanged.

  True freezing of a parameter group for a number of steps. No optax transform fits:
  :func:`optax.freeze` / :func:`optax.set_to_zero` / :func:`optax.masked` freeze forever (a static
  mask, not a step), :func:`optax.apply_if_finite` holds the state only on non-finite gradients,
  and a learning rate of 0 leaves Adam's moments and counts accumulating (and LARS's momentum
  trace) so the group does not start fresh when it unfreezes. ``inner``'s own step count is held
  too, so it counts only active steps (schedules inside it see ``global step - step``).

  Both branches are computed and selected with ``jnp.where`` (no control flow under ``jit`` /
  ``shard_map``).
  """

  def init(params):
    return HoldState(jnp.zeros([], jnp.int32), inner.init(params))

  def update(updates, state, params=None, **extra_args):
    new_updates, new_inner = inner.update(updates, state.inner_state, params, **extra_args)
    frozen = state.count < step
    new_updates = jax.tree.map(lambda u: jnp.where(frozen, jnp.zeros_like(u), u), new_updates)
    new_inner = jax.tree.map(lambda old, new: jnp.where(frozen, old, new),
                             state.inner_state, new_inner)
    return new_updates, HoldState(optax.safe_increment(state.count), new_inner)

  return optax.GradientTransformationExtraArgs(init, update)


def _base_transform(cfg, learning_rate, weight_decay, decays: bool):
  """The ``optimizer.name`` transformation; ``decays``: whether weight decay can be nonzero."""
  name = cfg.name
  mask = decay_mask if cfg.exclude_bias_and_norm else None
  if name == "sgd":
    parts = []
    if decays:
      parts.append(optax.add_decayed_weights(weight_decay, mask=mask))
    parts.append(optax.sgd(learning_rate, momentum=cfg.momentum or None, nesterov=cfg.nesterov))
    return optax.chain(*parts)
  if name == "adamw":
    return optax.adamw(learning_rate, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                       weight_decay=weight_decay, mask=mask)
  if name == "lars":
    return optax.lars(learning_rate, weight_decay=weight_decay,
                      weight_decay_mask=mask if mask else True,
                      trust_ratio_mask=mask if mask else True,
                      trust_coefficient=cfg.trust_coefficient, momentum=cfg.momentum,
                      nesterov=cfg.nesterov)
  return optax.lamb(learning_rate, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                    weight_decay=weight_decay, mask=mask)


def _group_transform(cfg, group: ParamGroup, schedule, wd_schedule):
  """One group's transformation: scaled learning rate and weight decay, held until unfrozen."""
  offset, lr_mult, wd_mult = group.frozen_until, group.lr_mult, group.wd_mult
  weight_decay = cfg.weight_decay * wd_mult
  if wd_schedule is not None:
    weight_decay = lambda count: wd_schedule(count + offset) * wd_mult
  decays = wd_mult != 0 and (cfg.weight_decay != 0 or wd_schedule is not None)

  def factory(learning_rate, weight_decay):
    return _base_transform(cfg, learning_rate, weight_decay, decays)

  tx = optax.inject_hyperparams(factory)(
      learning_rate=lambda count: schedule(count + offset) * lr_mult, weight_decay=weight_decay)
  return hold_until(tx, offset) if offset else tx


def build_optimizer(cfg, *, batch_size: int, total_steps: int, steps_per_epoch: int,
                    param_groups: dict | None = None):
  """Returns ``(tx, schedule)`` for the ``optimizer`` config block.

  Args:
    cfg: the ``optimizer`` block (:func:`ssl_jax.config.base_config`).
    batch_size: the global batch (learning-rate scaling).
    total_steps, steps_per_epoch: length of the run (schedules, ``warmup_epochs``,
      ``frozen_until_epoch``).
    param_groups: groups a method declares, ``{name: {pattern, lr_mult, ...}}`` as
      ``optimizer.groups`` (which overrides a group of the same name).

  ``schedule`` is the default group's learning rate (multiplier 1).
  """
  if cfg.name not in OPTIMIZERS:
    raise ValueError(f"optimizer.name={cfg.name!r}; valid: {', '.join(OPTIMIZERS)}.")
  peak = peak_learning_rate(cfg.lr, batch_size, cfg.lr_scaling, cfg.base_batch)
  warmup = cfg.warmup_steps if cfg.warmup_steps >= 0 else round(cfg.warmup_epochs * steps_per_epoch)
  kind = cfg.get("schedule", "warmup_cosine")
  if kind != "tri_stage" and 0 < total_steps <= warmup:
    key = ("--config.optimizer.warmup_steps" if cfg.warmup_steps >= 0 else
           f"--config.optimizer.warmup_epochs={cfg.warmup_epochs} ({warmup} steps)")
    _LOG.warning(
        "The run's %d steps (--config.total_steps / --config.epochs) are no longer than its "
        "learning-rate warm-up of %d steps (%s): it ends at the peak learning rate %.4g, never "
        "decaying. Shorten the warm-up (--config.optimizer.warmup_steps=%d) or train longer.",
        total_steps, warmup, key, peak, max(total_steps // 10, 1))
  schedule = make_schedule(peak, total_steps=total_steps, warmup_steps=warmup,
                           final_lr_fraction=cfg.final_lr_fraction,
                           kind=kind, phases=cfg.get("tri_stage", (0.1, 0.4, 0.5)))
  wd_end = cfg.get("weight_decay_end", None)
  wd_schedule = (None if wd_end is None else
                 weight_decay_schedule(cfg.weight_decay, wd_end, total_steps=total_steps))
  groups = resolve_groups(cfg.get("groups", None), param_groups, steps_per_epoch=steps_per_epoch)
  if not groups and wd_schedule is None:  # exactly the single transformation of earlier versions
    def factory(learning_rate):
      return _base_transform(cfg, learning_rate, cfg.weight_decay, bool(cfg.weight_decay))
    return optax.inject_hyperparams(factory)(learning_rate=schedule), schedule
  transforms = {DEFAULT_GROUP: _group_transform(cfg, ParamGroup(DEFAULT_GROUP, ""), schedule,
                                                wd_schedule)}
  for group in groups.values():
    transforms[group.name] = _group_transform(cfg, group, schedule, wd_schedule)
  return optax.partition(transforms, lambda params: group_labels(params, groups)), schedule


def _injected(state) -> Any:
  """The learning rate a (possibly held) group state last used; 0 while a held group is frozen."""
  if isinstance(state, optax.MaskedState):
    state = state.inner_state
  held = isinstance(state, HoldState)
  if held:
    state = state.inner_state
  lr = state.hyperparams["learning_rate"]
  return jnp.where(state.count > 0, lr, jnp.zeros_like(lr)) if held else lr


def current_learning_rates(opt_state: Any) -> dict[str, Any]:
  """``{group: learning rate the last update used}`` (``{"default": lr}`` without groups)."""
  if isinstance(opt_state, optax.PartitionState):
    return {name: _injected(s) for name, s in opt_state.inner_states.items()}
  is_injected = lambda x: hasattr(x, "hyperparams") and "learning_rate" in x.hyperparams
  for s in jax.tree.leaves(opt_state, is_leaf=is_injected):
    if is_injected(s):
      return {DEFAULT_GROUP: s.hyperparams["learning_rate"]}
  raise ValueError("optimizer state has no injected learning rate "
                   "(build it with optax.inject_hyperparams)")


def current_learning_rate(opt_state: Any) -> Any:
  """The learning rate the last update used, of the default group (the parameters no
  ``optimizer.groups`` pattern matches); read from the injected hyperparameters."""
  rates = current_learning_rates(opt_state)
  return rates[DEFAULT_GROUP] if DEFAULT_GROUP in rates else next(iter(rates.values()))
