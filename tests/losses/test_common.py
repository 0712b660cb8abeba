"""Properties every loss in ssl_jax.losses shares, swept over all of them (as optax's tests do)."""

import inspect
import re
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax import losses

_SUPPORT = np.random.default_rng(11).normal(size=(10, 8)).astype(np.float32)

_T, _V = 4, 5  # length and vocabulary of the token losses' arrays


def _tokens(n, seed=0):
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(n, _T, _V)).astype(np.float32),
          rng.integers(0, _V, size=(n, _T)).astype(np.int32))


# Losses that are not a loss of two views, with their positional arrays for a batch of n examples
# and the class count of those that are integer labels: token-level language losses take logits
# and integer targets (their other shared properties are swept in tests/losses/test_text.py);
# nearest_neighbour is NNCLR's support-set lookup, not a loss.
OTHER_CASES = {
    "masked_lm": lambda n: ({"logits": _tokens(n)[0], "labels": _tokens(n)[1],
                             "mask": (np.arange(n * _T).reshape(n, _T) % 2).astype(np.float32)},
                            {"labels": _V}),
    "causal_lm": lambda n: (dict(zip(("logits", "tokens"), _tokens(n))), {"tokens": _V}),
    "next_sentence": lambda n: ({"logits": _tokens(n)[0][:, 0, :2],
                                 "is_next": (np.arange(n) % 2).astype(np.int32)}, {"is_next": 2}),
    "nearest_neighbour": lambda n: ({"z": np.asarray(_views()[0])[:n], "support": _SUPPORT}, {}),
}
NOT_TWO_VIEW = set(OTHER_CASES)
# Argument builders, only for losses that need more than two [n, 8] views: each entry binds the
# hyperparameters without a default (overridable) and the extra arrays.
BUILDERS = {
    "ntxent": lambda a, b, temperature=0.1, **kw: losses.ntxent(a, b, temperature=temperature,
                                                               **kw),
    "infonce": lambda a, b, temperature=0.2, **kw: losses.infonce(a, b, temperature=temperature,
                                                                 **kw),
    "nnclr": lambda a, b, temperature=0.1, **kw: losses.nnclr(a, b, _SUPPORT,
                                                             temperature=temperature, **kw),
}
# Variants swept beside the exported losses: the loss they call and the fewest examples they need.
VARIANTS = {
    "infonce_queue": lambda a, b, temperature=0.2, **kw: losses.infonce(
        a, b, _SUPPORT, temperature=temperature, **kw),
}
VARIANT_OF = {"infonce_queue": ("infonce", 1)}  # a queue holds the negatives: one query will do


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


# The input policy (ssl_jax/losses/utils.py), swept over every name of ssl_jax.losses.__all__ and
# the variants: minimum batch, lists and NumPy arrays, dtypes, labels, shape messages, traced
# hyperparameters.
POLICY = sorted(set(losses.__all__) | set(VARIANTS))


def _case(name: str, n: int = 16) -> types.SimpleNamespace:
  """The call of ``name`` on a batch of ``n`` examples: ``call(*arrays.values(), **hyper)``;
  ``labels`` maps the integer-label arrays to their class counts; ``floats`` names the arrays that
  must be floating point; ``loss`` is the exported function (its name starts the messages)."""
  loss, minimum = VARIANT_OF.get(name, (name, None))
  fn = getattr(losses, loss)
  if name in OTHER_CASES:
    arrays, labels = OTHER_CASES[name](n)
    call = fn
    floats = [arg for arg in arrays if arg not in labels and arg != "mask"]
  else:
    call = LOSSES[name]
    params = [p.name for p in inspect.signature(fn).parameters.values()]
    arrays, labels = dict(zip(params[:2], (np.asarray(x)[:n] for x in _views()))), {}
    floats = list(arrays)
  hyper = {p.name: p.default for p in inspect.signature(call).parameters.values()
           if isinstance(p.default, (int, float)) and not isinstance(p.default, bool)}
  return types.SimpleNamespace(loss=loss, call=call, arrays=arrays, labels=labels, floats=floats,
                               hyper=hyper, minimum=minimum or fn.min_examples)


def _run(case, arrays=None, jit=False, **hyper):
  call = lambda *a: case.call(*a, **{**case.hyper, **hyper})
  out = (jax.jit(call) if jit else call)(*(case.arrays if arrays is None else arrays).values())
  return jax.tree.leaves(out)


@pytest.mark.parametrize("name", POLICY)
def test_fewer_examples_than_the_declared_minimum_raise_naming_it(name):
  case = _case(name)
  assert isinstance(case.minimum, int) and case.minimum >= 1
  for n in sorted({0, case.minimum - 1}):
    small = _case(name, n)
    message = f"{case.loss} needs at least {case.minimum} example"
    for jit in (False, True):
      with pytest.raises(ValueError, match=message):
        _run(small, jit=jit)
  assert all(np.all(np.isfinite(x)) for x in _run(_case(name, case.minimum), jit=True))


@pytest.mark.parametrize("name", POLICY)
def test_lists_and_numpy_arrays_are_accepted(name):
  case = _case(name)
  forms = [{k: convert(x) for k, x in case.arrays.items()}
           for convert in (jnp.asarray, np.asarray, lambda x: x.tolist())]
  # The loss receives the lists and NumPy arrays as they are (constants of one compiled program:
  # the conversion is the loss's first step, whether under jit or not).
  expected, *others = jax.jit(lambda: [_run(case, arrays) for arrays in forms])()
  for got in others:
    for x, want in zip(got, expected):
      np.testing.assert_allclose(x, want, rtol=1e-6)


@pytest.mark.parametrize("name", POLICY)
def test_integer_inputs_where_floats_are_expected_raise_naming_the_argument(name):
  case = _case(name)
  assert case.floats
  for arg in case.floats:
    for dtype in (np.int32, np.bool_):
      with pytest.raises(TypeError, match=f"{case.loss}: {arg} must be a floating-point array"):
        _run(case, {**case.arrays, arg: case.arrays[arg].astype(dtype)})


@pytest.mark.parametrize("name", [n for n in POLICY if _case(n).labels])
def test_labels_must_be_integer_and_in_range_outside_jit(name):
  case = _case(name)
  for arg, classes in case.labels.items():
    with pytest.raises(TypeError, match=f"{case.loss}: {arg} must be an integer array"):
      _run(case, {**case.arrays, arg: case.arrays[arg].astype(np.float32)})
    for bad in (-1, classes):
      arrays = {**case.arrays, arg: np.full_like(case.arrays[arg], bad)}
      with pytest.raises(ValueError, match=re.escape(f"{arg} must lie in [0, {classes})")):
        _run(case, arrays)
      _run(case, arrays, jit=True)  # traced: not checked (and not refused)


@pytest.mark.parametrize("name", POLICY)
def test_shape_errors_name_each_argument_with_its_shape_in_argument_order(name):
  case = _case(name)
  (first, a), (second, b) = list(case.arrays.items())[:2]
  b = b[..., :-1]
  message = f"{first} has shape {a.shape} and {second} has shape {b.shape}"
  with pytest.raises(ValueError, match=re.escape(message)):
    _run(case, {**case.arrays, second: b})


@pytest.mark.parametrize("name", [n for n in POLICY if _case(n).hyper])
def test_scalar_hyperparameters_may_be_traced_and_are_checked_when_concrete(name):
  case = _case(name)
  arrays = tuple(case.arrays.values())
  # One program: the hyperparameters as traced arguments and as constants.
  traced, constant = jax.jit(lambda hyper: (case.call(*arrays, **hyper),
                                            case.call(*arrays, **case.hyper)))(case.hyper)
  np.testing.assert_allclose(traced, constant, rtol=1e-6)
  for key in case.hyper:
    for bad in (-1.0, float("nan")):
      with pytest.raises(ValueError, match=f"{case.loss}: {key} must be finite"):
        _run(case, **{key: bad})
