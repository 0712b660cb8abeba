"""The train step's XLA:CPU compile options: products in oneDNN, checked once, with a fallback.
(The engine compiling its step with them: ``test_parallel.py``.)"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax.train import xla_options
from ssl_jax.train.xla_options import step_compiler_options


def test_choices_and_backends():
  assert jax.default_backend() == "cpu"
  assert step_compiler_options("default") is None
  assert step_compiler_options("onednn") == xla_options.ONEDNN_DOT_OPTIONS
  assert step_compiler_options("onednn", backend="gpu") is None  # CPU options, CPU backend only
  with pytest.raises(ValueError, match="cpu_dots='mkl'.*default, onednn"):
    step_compiler_options("mkl")


def test_options_change_only_the_library():
  """A batched product and a weight-gradient-shaped one: oneDNN fusions with the options (none
  without), the same values."""
  x, y = (jax.random.normal(k, (4, 32, 16)) for k in jax.random.split(jax.random.key(0)))
  f = lambda x, y: (jnp.einsum("bij,bkj->bik", x, y), jnp.einsum("bij,bik->jk", x, y))
  options = step_compiler_options("onednn")
  with_options = jax.jit(f, compiler_options=options).lower(x, y).compile()
  assert with_options.as_text().count("__onednn_fusion") == 2
  assert "__onednn_fusion" not in jax.jit(f).lower(x, y).compile().as_text()
  for a, b in zip(with_options(x, y), jax.jit(f)(x, y)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_unusable_options_fall_back_to_the_default_with_a_warning(monkeypatch):
  xla_options.onednn_dot_options.cache_clear()
  monkeypatch.setattr(xla_options, "ONEDNN_DOT_OPTIONS",
                      {**xla_options.ONEDNN_DOT_OPTIONS, "xla_cpu_no_such_option": True})
  try:
    options, why = xla_options.onednn_dot_options()
    assert options is None and "refuses the options" in why
    with pytest.warns(RuntimeWarning, match="cpu_dots='onednn'.*XLA:CPU's default"):
      assert step_compiler_options("onednn") is None
  finally:
    xla_options.onednn_dot_options.cache_clear()
