"""Properties every loss in ssl_jax.losses shares, swept over all of them (as optax's tests do)."""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax import losses

_SUPPORT = np.random.default_rng(11).normal(size=(10, 8)).astype(np.float32)

# Each entry: the loss of two [n, 8] views with its hyperparameters and extra arrays bound.
LOSSES = {
    "ntxent": lambda a, b, **kw: losses.ntxent(a, b, temperature=0.1, **kw),
    "infonce": lambda a, b, **kw: losses.infonce(a, b, temperature=0.2, **kw),
    "infonce_queue": lambda a, b, **kw: losses.infonce(a, b, _SUPPORT, temperature=0.2, **kw),
    "nnclr": lambda a, b, **kw: losses.nnclr(a, b, _SUPPORT, temperature=0.1, **kw),
    "negative_cosine": lambda a, b, **kw: losses.negative_cosine(a, b, **kw),
    "byol_loss": lambda a, b, **kw: losses.byol_loss(a, b, **kw),
    "barlow_twins": lambda a, b, **kw: losses.barlow_twins(a, b, **kw),
    "vicreg": lambda a, b, **kw: losses.vicreg(a, b, **kw),
    "simcse": lambda a, b, **kw: losses.simcse(a, b, temperature=0.05, **kw),
}
# Token-level language losses take logits and integer targets, not two views: their shared
# properties are swept in tests/losses/test_text.py.
TOKEN_LOSSES = {"masked_lm", "causal_lm", "next_sentence"}
every_loss = pytest.mark.parametrize("name", sorted(LOSSES))


def _views(dtype=np.float32, seed=0):
  rng = np.random.default_rng(seed)
  a = rng.normal(size=(16, 8))
  return jnp.asarray(a, dtype), jnp.asarray(a + rng.normal(size=(16, 8)), dtype)


def test_sweep_covers_every_exported_loss():
  assert ({name for name in LOSSES if name != "infonce_queue"} | {"nearest_neighbour"}
          | TOKEN_LOSSES) == set(losses.__all__)


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
