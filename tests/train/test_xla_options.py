"""The train step's XLA:CPU compile options (``config.cpu_kernels``): which libraries run the
convolutions and products, each choice checked once, with fallbacks. (The engine compiling its step
with them: ``test_parallel.py``; the MLM recipe in oneDNN: ``tests/methods/test_mlm.py``.)"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax.train import xla_options
from ssl_jax.train.xla_options import KERNEL_OPTIONS, kernels_name, step_compiler_options


def test_choices_and_backends():
  assert jax.default_backend() == "cpu"
  for kernels in xla_options.CPU_KERNELS:
    assert step_compiler_options(kernels) == KERNEL_OPTIONS[kernels]
    assert kernels_name(step_compiler_options(kernels)) == kernels
    assert step_compiler_options(kernels, backend="gpu") is None  # CPU options, CPU backend only
  with pytest.raises(ValueError, match="cpu_kernels='mkl'.*eigen_convs, onednn_dots, xla_default"):
    step_compiler_options("mkl")


def _libraries(options, *args):
  """The library fusions of ``probe`` compiled with ``options``, and its outputs."""
  compiled = jax.jit(xla_options.probe, compiler_options=options).lower(*args).compile()
  return sorted(re.findall(r'"kind":"__(\w+)_fusion"', compiled.as_text())), compiled(*args)


def test_each_choice_moves_only_its_kernels():
  """A 3x3 convolution (big enough for YNNPACK to take it) and a batched product: XLA's default
  runs both in YNNPACK; eigen_convs leaves the convolution to XLA and keeps the product in
  YNNPACK; onednn_dots runs the product in oneDNN. Every choice gives the same values."""
  keys = jax.random.split(jax.random.key(0), 3)
  args = (jax.random.normal(keys[0], (8, 16, 16, 64)),
          jax.random.normal(keys[1], (3, 3, 64, 64)) * 0.05,
          jax.random.normal(keys[2], (4, 32, 16)))
  kinds, reference = _libraries(None, *args)
  assert kinds == ["ynn", "ynn"]
  expected = {"eigen_convs": ["ynn"], "onednn_dots": ["onednn"]}
  for kernels, libraries in expected.items():
    kinds, out = _libraries(KERNEL_OPTIONS[kernels], *args)
    assert kinds == libraries, kernels
    for a, b in zip(out, reference):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_unusable_options_fall_back_with_a_warning(monkeypatch):
  xla_options.usable.cache_clear()
  bogus = {"xla_cpu_no_such_option": True}
  monkeypatch.setitem(KERNEL_OPTIONS, "onednn_dots",
                      {**KERNEL_OPTIONS["onednn_dots"], **bogus})
  try:
    ok, why = xla_options.usable("onednn_dots")
    assert not ok and "refuses its options" in why
    with pytest.warns(RuntimeWarning, match="cpu_kernels='onednn_dots'.*runs 'eigen_convs'"):
      assert step_compiler_options("onednn_dots") == KERNEL_OPTIONS["eigen_convs"]
    monkeypatch.setitem(KERNEL_OPTIONS, "eigen_convs", bogus)
    xla_options.usable.cache_clear()
    with pytest.warns(RuntimeWarning, match="runs 'xla_default'"):
      assert step_compiler_options("eigen_convs") is None
  finally:
    xla_options.usable.cache_clear()


def test_products_with_anything_fused_are_unsafe():
  """jaxlib 0.10.2 fuses a scale after a product into its oneDNN fusion and computes it wrong:
  the check names that fusion and passes a plain product."""
  x, w = jnp.ones((64, 32)), jnp.ones((32, 16))
  options = KERNEL_OPTIONS["onednn_dots"]
  text = lambda f: jax.jit(f, compiler_options=options).lower(x, w).compile().as_text()
  unsafe = xla_options.unsafe_onednn_fusions(text(lambda x, w: (x @ w) * 0.3))
  assert list(unsafe.values()) == [["parameter", "parameter", "dot", "parameter", "multiply"]]
  assert xla_options.unsafe_onednn_fusions(text(lambda x, w: x @ w)) == {}
