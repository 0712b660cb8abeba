"""Properties every loss in ssl_jax.losses shares, swept over all of them (as optax's tests do)."""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax import losses

_SUPPORT = np.random.default_rng(11).normal(size=(10, 8)).astype(np.float32)

# Losses that are not a loss of two views: token-level language losses take logits and integer
# targets (their shared properties are swept in tests/losses/test_text.py); nearest_neighbour is
# NNCLR's support-set lookup, not a loss.
NOT_TWO_VIEW = {"masked_lm", "causal_lm", "next_sentence", "nearest_neighbour"}
# Argument builders, only for losses that need more than two [n, 8] views: each entry binds the
# hyperparameters without a default and the extra arrays.
BUILDERS = {
    "ntxent": lambda a, b, **kw: losses.ntxent(a, b, temperature=0.1, **kw),
    "infonce": lambda a, b, **kw: losses.infonce(a, b, temperature=0.2, **kw),
    "nnclr": lambda a, b, **kw: losses.nnclr(a, b, _SUPPORT, temperature=0.1, **kw),
}
# Variants swept beside the exported losses.
VARIANTS = {
    "infonce_queue": lambda a, b, **kw: losses.infonce(a, b, _SUPPORT, temperature=0.2, **kw),
}


def _needs_builder(fn) -> bool:
  """Whether ``fn`` needs more than two arrays or a hyperparameter that has no default."""
  required = [p for p in inspect.signature(fn).parameters.values()
              if p.default is inspect.Parameter.empty]
  return (len(required) != 2
          or any(p.kind is inspect.Parameter.KEYWORD_ONLY for p in required))


def _two_view_losses() -> dict:
  """Every exported loss of two views (``ssl_jax.losses.__all__``), bound by its builder or
  called as it is, and the variants."""
  out = {}
  for name in sorted(set(losses.__all__) - NOT_TWO_VIEW):
    fn = getattr(losses, name)
    out[name] = BUILDERS.get(name) or fn
  return {**out, **VARIANTS}


LOSSES = _two_view_losses()
every_loss = pytest.mark.parametrize("name", sorted(LOSSES))


def _views(dtype=np.float32, seed=0):
  rng = np.random.default_rng(seed)
  a = rng.normal(size=(16, 8))
  return jnp.asarray(a, dtype), jnp.asarray(a + rng.normal(size=(16, 8)), dtype)


def test_every_two_view_loss_that_needs_arguments_has_a_builder():
  missing = [name for name in set(losses.__all__) - NOT_TWO_VIEW - set(BUILDERS)
             if _needs_builder(getattr(losses, name))]
  assert not missing, f"add an argument builder to BUILDERS for {missing}"
  assert all(_needs_builder(getattr(losses, name)) for name in BUILDERS)  # none is superfluous
  assert set(BUILDERS) | NOT_TWO_VIEW <= set(losses.__all__)  # no stale name


@pytest.mark.parametrize("name", sorted(set(losses.__all__) - {"nearest_neighbour"}))
def test_signature_conventions(name):
  params = inspect.signature(getattr(losses, name)).parameters
  assert params["axis_name"].kind is inspect.Parameter.KEYWORD_ONLY
  assert params["axis_name"].default is None
  for p in params.values():  # hyperparameters are keyword-only: only arrays are positional
    if p.kind is not inspect.Parameter.KEYWORD_ONLY:
      assert p.name in {"z_a", "z_b", "query", "key", "negatives", "support", "p", "z", "logits",
                        "labels", "mask", "tokens", "is_next"}
  doc = getattr(losses, name).__doc__
  assert "https://" in doc and ">>> " in doc  # a paper reference and a doctested example


@every_loss
def test_scalar_float32_finite_and_jittable(name):
  a, b = _views()
  value = LOSSES[name](a, b)
  assert value.shape == () and value.dtype == jnp.float32
  assert np.isfinite(value)
  np.testing.assert_allclose(jax.jit(LOSSES[name])(a, b), value, rtol=1e-5)
  grads = jax.grad(LOSSES[name], argnums=(0, 1))(a, b)
  assert all(np.all(np.isfinite(g)) for g in grads)


@every_loss
def test_bfloat16_inputs_give_float32_loss(name):
  # Numerics: losses, normalizations and statistics in float32 whatever the compute dtype.
  a, b = _views(jnp.bfloat16)
  value = LOSSES[name](a, b)
  assert value.dtype == jnp.float32
  np.testing.assert_allclose(value, LOSSES[name](a.astype(jnp.float32), b.astype(jnp.float32)),
                             rtol=1e-5)


@every_loss
def test_rank_one_and_mismatched_inputs_raise(name):
  a, b = _views()
  with pytest.raises(ValueError, match="2-D"):
    LOSSES[name](a[0], b[0])
  with pytest.raises(ValueError, match="same shape"):
    LOSSES[name](a, b[:8])
