"""XLA compile options of the train step: on the CPU backend, matrix products in oneDNN.

XLA:CPU (jax 0.10.2) runs the ``dot`` operations it can in YNNPACK and the rest (the dense layers'
weight gradients, which contract the leading axis of both operands) on Eigen; its oneDNN fusions are
off by default. For the products of small Transformers oneDNN is much faster. Measured on a 2-vCPU
AMD EPYC (Zen 3, AVX2), BERT-tiny's attention products alone (batch 64, 4 heads, 128 tokens, head
width 32, best of 15):

* ``Q K^T`` [256 x 128x32 @ 32x128]: 9.4 ms in YNNPACK, 8.2 ms on Eigen, 2.8 ms in oneDNN
  (``torch.bmm``: 4.3 ms);
* ``P V`` [256 x 128x128 @ 128x32]: 9.9, 7.7 and 4.0 ms (``torch.bmm``: 4.5 ms);
* ``dK^T = Q^T dS`` [256 x 32x128 @ 128x128]: 9.8, 5.7 and 3.6 ms.

In the whole BERT-tiny MLM train step (a profiler trace, per step) the attention products went
from 106 to 49 ms, the dense layers' products from 173 to 201 ms (oneDNN now takes the weight
gradients too), the rest about even; five interleaved pairs of runs: medians 434/424/436/423/472
against 369/397/409/418/470 ms. The GPT-tiny CLM step: 244/244/242/231/218 against
240/194/230/205/195 ms. ``benchmarks/README.md`` has the side by side with PyTorch.

``config.cpu_dots`` picks (:func:`step_compiler_options`):

* ``"default"``: XLA's own choice.
* ``"onednn"`` (``experiments/mlm_pydoc.py``, ``clm_pydoc.py``): the step is compiled with
  ``xla_cpu_use_onednn``, oneDNN fusions for dots (``xla_cpu_experimental_onednn_fusion_type =
  [DOT]``; XLA then picks oneDNN before YNNPACK for every dot) and YNNPACK for reductions only
  (``xla_cpu_experimental_ynn_fusion_type = [REDUCE]``: with YNNPACK's elementwise fusions, which
  materialize every broadcast operand, the elementwise work left outside the products grew by ~60
  ms a step; with no YNNPACK fusions at all the step was slower than the default).

These are options of one compiled program (``jax.jit(..., compiler_options=...)``), not
process-wide ``XLA_FLAGS``: nothing else in the process changes, and an option this jaxlib does not
know is an error of one compile call rather than an abort of the process at start-up (what XLA
does with an unknown flag in ``XLA_FLAGS``). :func:`onednn_dot_options` checks them once per
process by compiling a small product: if this jaxlib refuses them or does not run the product in
oneDNN (a build without oneDNN, a non-x86 CPU), the step gets XLA's default and a warning.

**What jaxlib 0.10.2 gets wrong, and the check.** XLA grows a oneDNN fusion from the dot into
neighbouring elementwise operations, and those fusions are broken:

* a ``multiply`` by a broadcast operand fused *after* the product (``(x @ w) * c``, a scale or a
  temperature) computes wrong values (errors of 150-2000 on outputs of order 1-10, measured);
* an elementwise operation fused *before* it (``(x * s) @ w``, ``exp(p) @ v``) fails to compile in
  oneDNN ("partition compile failed") and the process dies with SIGILL when the step runs.

So :class:`ssl_jax.train.parallel.Engine` compiles the step before it first runs and, if any oneDNN
fusion holds more than the product (:func:`unsafe_onednn_fusions`; an ``add`` after it computed
right in our tests, but is not trusted either), compiles it again without the options, with a
warning (one extra compilation). The models avoid such patterns where it matters: attention scales
its logits inside the softmax's exponent rather than on a product. SimCSE's and NSP's steps (a
temperature, a classifier's bias) fall back. Other notes: executables with oneDNN fusions cannot be
written to JAX's persistent compilation cache ("ToProto is not implemented": a warning, the step
is compiled each run); XLA hands oneDNN float32 products only (bfloat16 ones on CPUs with
AVX512-BF16, per its support check). Other backends get no options. ``jax.pmap`` takes no compiler options, so the ``pmap`` mode always
runs XLA's default.
"""

from __future__ import annotations

import functools
import re
import warnings

import jax
import jax.numpy as jnp

CPU_DOTS = ("default", "onednn")

ONEDNN_DOT_OPTIONS = {
    "xla_cpu_use_onednn": True,
    "xla_cpu_experimental_onednn_fusion_type": "LIBRARY_FUSION_TYPE_DOT",
    "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_REDUCE",
}


@functools.lru_cache(maxsize=None)
def onednn_dot_options() -> tuple[dict | None, str]:
  """``(options, why)``: :data:`ONEDNN_DOT_OPTIONS` when a small batched product compiled with
  them on the CPU backend runs as a oneDNN fusion, else ``(None, the reason)``. Checked once per
  process (one small compile)."""
  a = jax.ShapeDtypeStruct((2, 8, 16), jnp.float32)
  try:
    compiled = jax.jit(lambda x, y: jnp.einsum("bij,bkj->bik", x, y), backend="cpu",
                       compiler_options=ONEDNN_DOT_OPTIONS).lower(a, a).compile()
  except Exception as e:  # pylint: disable=broad-except  (XLA raises JaxRuntimeError)
    return None, f"this jaxlib refuses the options ({type(e).__name__}: {str(e)[:200]})"
  if "__onednn_fusion" not in compiled.as_text():
    return None, "this jaxlib ran the test product outside oneDNN with them"
  return dict(ONEDNN_DOT_OPTIONS), ""


def step_compiler_options(cpu_dots: str, backend: str | None = None) -> dict | None:
  """The ``compiler_options`` of a train step on ``backend`` (default: JAX's default backend)
  for ``config.cpu_dots`` (:data:`CPU_DOTS`); None: XLA's defaults."""
  if cpu_dots not in CPU_DOTS:
    raise ValueError(f"config.cpu_dots={cpu_dots!r} is not valid; choose one of: "
                     f"{', '.join(CPU_DOTS)}.")
  if cpu_dots == "default" or (backend or jax.default_backend()) != "cpu":
    return None
  options, why = onednn_dot_options()
  if options is None:
    warnings.warn(f"config.cpu_dots='onednn': {why}; the step uses XLA:CPU's default products.",
                  RuntimeWarning, stacklevel=2)
  return options


_FUSION = re.compile(r"%(onednn_fusion[\w.\-]*) = [^\n]*?calls=%([\w.\-]+)")
_BODY = r"\n%{} \([^\n]*\) -> [^\n]*\{{\n(.*?)\n\}}"
_OP = re.compile(r"= \S+ (\w[\w\-]*)\(")


def unsafe_onednn_fusions(hlo_text: str) -> dict[str, list[str]]:
  """The oneDNN fusions of a compiled program (``compiled.as_text()``) that hold anything but
  one product: ``{fusion name: the opcodes of its instructions}`` for every fusion with an opcode
  other than ``parameter`` and ``dot`` (module docstring: jaxlib 0.10.2 gets those wrong)."""
  out = {}
  for name, computation in _FUSION.findall(hlo_text):
    body = re.search(_BODY.format(re.escape(computation)), hlo_text, re.S)
    ops = _OP.findall(body.group(1)) if body else ["<body not found>"]
    if set(ops) - {"parameter", "dot"}:
      out[name] = ops
  return out
