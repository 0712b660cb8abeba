"""Dense layer with a CPU-fast backward pass for sequence inputs.

:class:`Linear` is :class:`flax.nnx.Linear` (same constructor, parameters, initializers, RNG
draws, dtype promotion and forward values) plus ``impl``, which picks how the product's gradients
are computed. Checkpoints do not depend on it.

Why a custom VJP: on XLA:CPU (jax 0.10.2) autodiff of ``x [B, T, D] @ W [D, F]`` computes the kernel
gradient as a ``dot_general`` contracting both leading axes of ``x`` and of the output cotangent,
and XLA:CPU runs it by first copying the whole cotangent ``[B, T, F]`` into a transposed
``[F, B*T]`` layout (a ``copy_bitcast`` fusion per layer in a ``jax.profiler`` trace). The custom
VJP flattens the leading axes and contracts the first axis of both operands,
``dW = x2^T @ g2``, which the GEMM takes without a copy; the input gradient is ``g @ W^T`` as in
autodiff. Both are the same sums in the same float32 (or ``dtype``) products; the tests compare them
with autodiff.

Measured on a 2-vCPU AMD EPYC (medians of interleaved runs, glibc's huge-page malloc tunable set,
see ``ssl_jax.cli``): the 2-layer ``bert_tiny`` encoder forward + backward (batch 64 x 128
tokens) from 290-320 to 237-254 ms; the ViT-Tiny/4 encoder (batch 128) from 2217-2230 to
2041-2114 ms. Inputs with one leading axis (``[N, D]``, the MLP heads) already get ``x^T @ g``
from autodiff, so ``impl="auto"`` uses the custom VJP only for inputs of 3 or more axes, only on
the CPU backend.

``Linear(x, activation="gelu")`` applies the exact (erf) GELU to ``x @ W + b`` and, on the custom
path, differentiates the bias and the GELU together (:func:`bias_gelu`): the backward pass
recomputes ``h = y + b`` and the GELU's derivative ``Phi(h) + h phi(h)`` from the saved matmul
output in one elementwise pass. Autodiff of ``jax.nn.gelu`` instead keeps intermediates of the
forward pass (its ``erf`` and ``exp`` terms, each the size of ``h``), which XLA:CPU writes and
reads back as separate loop fusions: in the BERT MLM step trace, the GELU work of the two MLPs went
from 15 to 11 ms.

``impl=None`` follows the process default shared with :mod:`ssl_jax.models.conv`
(:func:`~ssl_jax.models.conv.set_default_impl`, ``$SSL_JAX_CONV_IMPL``): ``"xla"`` there turns
off every custom backward pass. Like the convolution's, the custom path does not support
forward-mode differentiation (``jax.jvp``); use ``impl="xla"`` for that.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import lax

from ssl_jax.models import conv as conv_lib

Impl = conv_lib.Impl


def uses_custom_vjp(impl: str | None, ndim: int) -> bool:
  """Whether :func:`matmul` of an ``ndim``-axis input runs the custom VJP (``None``: default)."""
  return conv_lib.wants_custom_vjp(impl, helps_on_cpu=ndim >= 3)


def matmul(x: jax.Array, kernel: jax.Array, *, impl: Impl | None = None,
           precision: lax.PrecisionLike = None) -> jax.Array:
  """``x [..., D] @ kernel [D, F] -> [..., F]`` with the backward pass chosen by ``impl``.

  Args:
    x: input of any number of leading axes, last axis ``D``.
    kernel: ``[D, F]``, of the same dtype as ``x``.
    impl: ``"xla"`` (autodiff), ``"custom"`` (custom VJP), ``"auto"`` (custom VJP on CPU for inputs
      of 3 or more axes) or ``None`` (the process default).
    precision: passed to every ``lax.dot_general``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> x, w = jnp.ones((2, 3, 4)), jnp.ones((4, 5))
    >>> g = jax.grad(lambda w: matmul(x, w, impl="custom").sum())(w)
    >>> g.shape, float(g[0, 0])
    ((4, 5), 6.0)
  """
  if jnp.ndim(kernel) != 2 or jnp.ndim(x) < 1 or jnp.shape(x)[-1] != jnp.shape(kernel)[0]:
    raise ValueError(f"matmul expects x [..., D] and kernel [D, F], got {jnp.shape(x)} and "
                     f"{jnp.shape(kernel)}.")
  if uses_custom_vjp(impl, jnp.ndim(x)):
    return _custom_matmul(*conv_lib.vary_alike(x, kernel), precision)
  return _xla_matmul(x, kernel, precision)


def _xla_matmul(x, kernel, precision):
  return lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())), precision=precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _custom_matmul(x, kernel, precision):
  return _xla_matmul(x, kernel, precision)


def _custom_matmul_fwd(x, kernel, precision):
  return _xla_matmul(x, kernel, precision), (x, kernel)


def _custom_matmul_bwd(precision, residuals, g):
  x, kernel = residuals
  dx = lax.dot_general(g, kernel, (((g.ndim - 1,), (1,)), ((), ())), precision=precision)
  x2, g2 = x.reshape(-1, x.shape[-1]), g.reshape(-1, g.shape[-1])
  dk = lax.dot_general(x2, g2, (((0,), (0,)), ((), ())), precision=precision)
  return dx.astype(x.dtype), dk.astype(kernel.dtype)


_custom_matmul.defvjp(_custom_matmul_fwd, _custom_matmul_bwd)

ACTIVATIONS = (None, "gelu")


def bias_gelu(y: jax.Array, bias: jax.Array | None, *, impl: Impl | None = None) -> jax.Array:
  """Exact (erf) GELU of ``y [..., F] + bias [F]``, in ``y``'s dtype.

  ``impl``: ``"xla"`` is ``jax.nn.gelu(y + bias, approximate=False)`` and autodiff; ``"custom"``
  computes in float32 and recomputes the derivative from ``y`` and ``bias`` in the backward pass
  (module docstring); ``"auto"`` / ``None`` as for :func:`matmul` (custom on CPU).

  Example:
    >>> import jax.numpy as jnp
    >>> y = jnp.array([[-1.0, 0.0, 2.0]])
    >>> bool(jnp.allclose(bias_gelu(y, jnp.zeros(3), impl="custom"),
    ...                   jax.nn.gelu(y, approximate=False), atol=1e-6))
    True
  """
  if bias is not None and (jnp.ndim(bias) != 1 or jnp.shape(bias)[0] != jnp.shape(y)[-1]):
    raise ValueError(f"bias_gelu expects y [..., F] and bias [F], got {jnp.shape(y)} and "
                     f"{jnp.shape(bias)}.")
  if not conv_lib.wants_custom_vjp(impl, helps_on_cpu=True):
    out = jax.nn.gelu(y if bias is None else y + bias, approximate=False)
    return out.astype(jnp.result_type(y))
  if bias is None:
    bias = jnp.zeros(jnp.shape(y)[-1:], jnp.result_type(y))
  return _bias_gelu(*conv_lib.vary_alike(y, bias))


_SQRT_HALF = np.float32(np.sqrt(0.5))
_INV_SQRT_2PI = np.float32(1.0 / np.sqrt(2.0 * np.pi))


def _preactivation_and_cdf(y, bias):
  """``h = y + bias`` and the standard normal CDF ``Phi(h)``, in float32."""
  h = y.astype(jnp.float32) + bias.astype(jnp.float32)
  return h, 0.5 * (1.0 + lax.erf(h * _SQRT_HALF))


@jax.custom_vjp
def _bias_gelu(y, bias):
  h, cdf = _preactivation_and_cdf(y, bias)
  return (h * cdf).astype(y.dtype)


def _bias_gelu_fwd(y, bias):
  return _bias_gelu(y, bias), (y, bias)


def _bias_gelu_bwd(residuals, g):
  y, bias = residuals
  h, cdf = _preactivation_and_cdf(y, bias)
  slope = cdf + h * jnp.exp(-0.5 * h * h) * _INV_SQRT_2PI
  dh = g.astype(jnp.float32) * slope
  dbias = jnp.sum(dh.reshape(-1, dh.shape[-1]), axis=0)
  return dh.astype(y.dtype), dbias.astype(bias.dtype)


_bias_gelu.defvjp(_bias_gelu_fwd, _bias_gelu_bwd)


class Linear(nnx.Linear):
  """:class:`flax.nnx.Linear` with the backward pass chosen by ``impl`` (module docstring).

  Takes every argument of :class:`flax.nnx.Linear` plus ``impl`` (``"auto"``, ``"xla"``,
  ``"custom"`` or ``None`` for the process default). A custom ``dot_general``,
  ``preferred_element_type`` or ``out_sharding`` runs Flax's own forward and autodiff.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> layer = Linear(4, 3, rngs=nnx.Rngs(0))
    >>> layer.kernel.shape, layer(jnp.ones((2, 5, 4))).shape
    ((4, 3), (2, 5, 3))
  """

  def __init__(self, in_features: int, out_features: int, *, impl: Impl | None = None, **kwargs):
    if impl is not None:
      conv_lib.check_impl(impl)
    super().__init__(in_features, out_features, **kwargs)
    self.impl = impl

  def __call__(self, inputs: jax.Array, out_sharding=None, *,
               activation: str | None = None) -> jax.Array:
    """``inputs @ kernel + bias``, then ``activation`` (None or ``"gelu"``, exact erf GELU)."""
    if activation not in ACTIVATIONS:
      raise ValueError(f"Unknown activation {activation!r}; valid: None, gelu.")
    if (self.dot_general is not lax.dot_general or self.preferred_element_type is not None
        or out_sharding is not None or not uses_custom_vjp(self.impl, jnp.ndim(inputs))):
      y = super().__call__(inputs, out_sharding)
      return y if activation is None else bias_gelu(y, None, impl="xla")
    bias = self.bias[...] if self.bias is not None else None
    inputs, kernel, bias = self.promote_dtype((inputs, self.kernel[...], bias), dtype=self.dtype)
    y = matmul(inputs, kernel, impl="custom", precision=self.precision)
    if activation == "gelu":
      return bias_gelu(y, bias, impl="custom")
    return y if bias is None else y + bias
