"""XLA compile options of the train step: which libraries run its convolutions and products on CPU.

XLA:CPU (jax 0.10.2) hands convolutions, ``dot`` operations and reductions to YNNPACK where it can
(its default library fusions: individual dots, reductions, individual convolutions), the other
products (the dense layers' weight gradients, contracting the leading axis of both operands) to
Eigen, and has oneDNN fusions, off by default. ``config.cpu_kernels`` picks
(:func:`step_compiler_options`, :data:`KERNEL_OPTIONS`):

* ``"eigen_convs"`` (the default): XLA's defaults without YNNPACK's convolutions, which go back to
  XLA's own (Eigen) convolution. YNNPACK's convolution backward is very slow on CPUs without
  AVX-512: on a 2-vCPU AMD EPYC Zen 3 (AVX2) a 3x3 64->64 convolution at batch 64, 32x32, took
  2151 ms forward + backward in YNNPACK against 155-173 ms without it; the ResNet-18 SimCLR step
  (batch 64) 23.9 s against 5.8 s (PyTorch: 5.2 s), the default digits CNN's step 261-295 against
  162-175 ms. On an AMD EPYC Zen 4 (AVX-512) the same layer measured ~2.2x faster without
  YNNPACK (``ssl_jax/models/conv.py``) and the ResNet-18 SimCLR step 4.3 s against 5.6-5.9 s
  (two interleaved pairs); ViT-Tiny (a patchify convolution only) and BERT were unchanged.
* ``"onednn_dots"`` (``experiments/mlm_pydoc.py``, ``clm_pydoc.py``): also every product in
  oneDNN (``xla_cpu_use_onednn``, oneDNN fusions for dots; XLA then picks oneDNN before YNNPACK),
  YNNPACK for reductions only. For small Transformers oneDNN's batched products are much faster:
  BERT-tiny's attention products alone (batch 64, 4 heads, 128 tokens, head width 32, Zen 3, best
  of 15) ``Q K^T`` 9.4 ms in YNNPACK, 8.2 ms on Eigen, 2.8 ms in oneDNN (``torch.bmm``: 4.3 ms);
  ``P V`` 9.9, 7.7 and 4.0 ms (4.5 ms); ``Q^T dS`` 9.8, 5.7 and 3.6 ms. In the whole BERT-tiny MLM
  step (profiler trace) the attention products went from 106 to 49 ms a step and the dense layers'
  from 173 to 201 ms (oneDNN also takes the weight gradients); five interleaved pairs of runs:
  medians 434/424/436/423/472 against 369/397/409/418/470 ms. GPT-tiny CLM: 244/244/242/231/218
  against 240/194/230/205/195 ms. Other YNNPACK sets beside oneDNN's products, one run each of
  the BERT step: elementwise and reductions 437 ms, elementwise alone 533 ms (YNNPACK's
  elementwise fusions materialize every broadcast operand), none 459 ms.
* ``"xla_default"``: XLA's own choice, no options.

These are options of one compiled program (``jax.jit(..., compiler_options=...)``), not
process-wide ``XLA_FLAGS``: nothing else in the process changes (evaluation's forward passes keep
XLA's defaults), and an option this jaxlib does not know is an error of one compile call rather than
an abort of the process at start-up (what XLA does with an unknown flag in ``XLA_FLAGS``).
:func:`usable` checks each choice once per process by compiling a small convolution and product; a
choice this jaxlib refuses, or that does not run the product in oneDNN (a build without oneDNN, a
non-x86 CPU), falls back (``onednn_dots`` -> ``eigen_convs`` -> ``xla_default``) with a warning.
Other backends get no options. ``jax.pmap`` takes no compiler options, so the ``pmap`` mode always
runs XLA's defaults.

**Backend optimization.** ``eigen_convs`` and ``onednn_dots`` also compile with LLVM at level 1
(``xla_backend_optimization_level=1``) rather than XLA's default: the products and convolutions
run in libraries either way, XLA emits its elementwise loops already vectorized, and LLVM's higher
levels mostly cost compile time, most of it in the views' random-number code (threefry; one
``jax.random.normal`` of 256x8x8 compiled in 6.7 s at the default level, 1.3 s at level 0).
Measured on a 2-vCPU AMD EPYC shared with other jobs (so single runs, not benchmarks), compile /
median step at the default level against level 1: the digits SimCLR step 23.2 / 384 ms against
13.7 / 343 ms, the BERT-tiny MLM step (oneDNN) 17.9 s / 1.50 s against 13.0 s / 1.47 s, a ViT-micro
MoCo v3 step 34.9 s / 109 ms against 30.7 s / 95 ms. Level 0 compiles faster still but the digits
step ran 1.6-2.6x slower. ResNet-18 was not re-measured.

**What jaxlib 0.10.2 gets wrong in oneDNN, and the check.** XLA grows a oneDNN fusion from the dot
into neighbouring elementwise operations, and those fusions are broken:

* a ``multiply`` by a broadcast operand fused *after* the product (``(x @ w) * c``: a scale, a
  temperature) computes wrong values (errors of 150-2000 on outputs of order 1-10, measured);
* an elementwise operation fused *before* it (``(x * s) @ w``, ``exp(p) @ v``) fails to compile in
  oneDNN ("partition compile failed") and the process dies with SIGILL when the step runs.

So with ``onednn_dots`` :class:`ssl_jax.train.parallel.Engine` compiles the step before it first
runs and, if any oneDNN fusion holds more than the product (:func:`unsafe_onednn_fusions`; an
``add`` after it computed right in our tests, but is not trusted either), compiles it again with
:data:`ONEDNN_FALLBACK`'s options, with a warning (one extra compilation). The models avoid such
patterns where it matters: attention scales its logits inside the softmax's exponent rather than
on a product. SimCSE's, NSP's and the image methods' steps (a temperature, a classifier's bias, a
normalization before a product) fall back. Executables with oneDNN fusions cannot be written to
JAX's persistent compilation cache ("ToProto is not implemented": a warning, and the step is
compiled each run). XLA hands oneDNN float32 products only (bfloat16 ones on CPUs with
AVX512-BF16, per its support check).
"""

from __future__ import annotations

import functools
import re
import warnings

import jax
import jax.numpy as jnp

_T = "LIBRARY_FUSION_TYPE_"
# LLVM's level 1 instead of XLA's default (see the module docstring, "Backend optimization").
_O1 = {"xla_backend_optimization_level": 1}
# config.cpu_kernels -> the train step's compiler options on the CPU backend.
KERNEL_OPTIONS: dict[str, dict | None] = {
    "eigen_convs": {"xla_cpu_experimental_ynn_fusion_type": f"{_T}INDIVIDUAL_DOT,{_T}REDUCE",
                    **_O1},
    "onednn_dots": {"xla_cpu_use_onednn": True,
                    "xla_cpu_experimental_onednn_fusion_type": f"{_T}DOT",
                    "xla_cpu_experimental_ynn_fusion_type": f"{_T}REDUCE", **_O1},
    "xla_default": None,
}
CPU_KERNELS = tuple(KERNEL_OPTIONS)
# What "onednn_dots" falls back to (a jaxlib without oneDNN, a step the engine finds unsafe).
ONEDNN_FALLBACK = "eigen_convs"


def probe(x, w, m):
  """A small 3x3 convolution and batched product: what the options must compile."""
  y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))
  return y, jnp.einsum("bij,bkj->bik", m, m)


@functools.lru_cache(maxsize=None)
def usable(kernels: str) -> tuple[bool, str]:
  """``(ok, why not)``: whether this jaxlib compiles :func:`probe` on the CPU backend with
  ``kernels``' options, and for ``"onednn_dots"`` runs its product in oneDNN. Checked once per
  process and choice (one small compile)."""
  options = KERNEL_OPTIONS[kernels]
  if options is None:
    return True, ""
  on_cpu = jax.sharding.SingleDeviceSharding(jax.local_devices(backend="cpu")[0])
  args = (jax.ShapeDtypeStruct((1, 8, 8, 4), jnp.float32, sharding=on_cpu),
          jax.ShapeDtypeStruct((3, 3, 4, 4), jnp.float32, sharding=on_cpu),
          jax.ShapeDtypeStruct((2, 8, 16), jnp.float32, sharding=on_cpu))
  try:
    compiled = jax.jit(probe).lower(*args).compile(compiler_options=options)
  except Exception as e:  # pylint: disable=broad-except  (XLA raises JaxRuntimeError)
    return False, f"this jaxlib refuses its options ({type(e).__name__}: {str(e)[:200]})"
  if "onednn" in kernels and "__onednn_fusion" not in compiled.as_text():
    return False, "this jaxlib ran the test product outside oneDNN with its options"
  return True, ""


def step_compiler_options(kernels: str, backend: str | None = None) -> dict | None:
  """The ``compiler_options`` of a train step on ``backend`` (default: JAX's default backend)
  for ``config.cpu_kernels`` (:data:`CPU_KERNELS`); None: XLA's defaults. A choice this jaxlib
  cannot run (:func:`usable`) falls back (``onednn_dots`` -> ``eigen_convs`` -> XLA's default)
  with a warning."""
  if kernels not in KERNEL_OPTIONS:
    raise ValueError(f"--config.cpu_kernels={kernels!r} is not valid; choose one of: "
                     f"{', '.join(CPU_KERNELS)}.")
  if (backend or jax.default_backend()) != "cpu":
    return None
  chosen = kernels
  while True:
    ok, why = usable(chosen)
    if ok:
      return KERNEL_OPTIONS[chosen]
    fallback = ONEDNN_FALLBACK if chosen == "onednn_dots" else "xla_default"
    warnings.warn(f"--config.cpu_kernels={kernels!r}: {why}; the step runs {fallback!r}.",
                  RuntimeWarning, stacklevel=2)
    chosen = fallback


def one_shot_compiler_options(backend: str | None = None) -> dict | None:
  """The ``compiler_options`` of a program that runs once (the state's initialization): on CPU,
  no LLVM backend optimization (``xla_backend_optimization_level=0``), None elsewhere.

  Optimizing machine code that runs once only costs time: the initializers' random-number code
  (threefry per parameter, truncated normals) is most of it. Measured on a 2-vCPU AMD EPYC
  (jaxlib 0.10.2): the BYOL ImageNet recipe's ``runlocal`` state (ResNet-tiny, LARS) compiled in
  10.2 s at XLA's default level and 2.7 s at level 0; the digits SimCLR state in 8.7 against 3.9 s.
  The values are the same integer RNG streams and the same elementwise float operations (no
  fusion-dependent reassociation in an initializer).
  """
  return {"xla_backend_optimization_level": 0} if (backend or jax.default_backend()) == "cpu" \
      else None


def kernels_name(options: dict | None) -> str:
  """The :data:`CPU_KERNELS` entry whose options are ``options`` (what an engine compiled with)."""
  return next((k for k, v in KERNEL_OPTIONS.items() if v == options), "other")


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
