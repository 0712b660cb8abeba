"""2-D convolution used by every encoder, with a CPU-fast backward pass where it helps.

:class:`Conv` has the constructor (a subset) and exactly the parameters of :class:`flax.nnx.Conv`
(``kernel`` ``[kh, kw, in, out]``, ``bias`` ``[out]``, the same initializers and the same order of
RNG draws), so a checkpoint does not depend on which implementation ran, and the forward values
are the same ``lax.conv_general_dilated`` on every path. What differs is the backward pass.

Why a custom VJP: on XLA:CPU (jax 0.10.2, YNNPACK convolutions) the autodiff backward of a
convolution whose windows do not overlap -- a 1x1 convolution (ResNet bottlenecks and projection
shortcuts) or a patchify convolution with ``kernel_size == strides`` (the ViT patch embedding) --
computes the kernel gradient as a convolution with a window the size of the whole image: forward +
backward is 5-14x the forward. Those kernel gradients are one GEMM over non-overlapping patches, the
input gradient is one GEMM plus a reshape. :func:`conv2d` with ``impl="custom"`` does that for
non-overlapping windows (measured 2-7x faster forward + backward for these layers, see
``benchmarks/conv_cpu.py``).

For overlapping windows (3x3, 7x7) the custom VJP computes the input gradient as a forward
convolution of the (stride-dilated) cotangent with the spatially flipped, in/out-transposed kernel
and the kernel gradient as ``kh * kw`` GEMMs over shifted, strided views of the padded input. It is
exact, but on this stack it was measured *slower* than XLA's own backward (XLA already maps both
gradients onto fast convolutions), so ``impl="auto"`` uses it only for non-overlapping windows on
the CPU backend and leaves every other case, and every other backend, to XLA.

Measured with ``benchmarks/conv_cpu.py`` (jax 0.10.2, 2 CPU cores shared with other jobs, so
+-30% noise; medians of interleaved runs):

* The backward is not ~20x the forward on this stack: the 3x3 64->64 layer (batch 64, 32x32)
  takes ~50-65 ms forward (75-95 GFLOP/s) and ~190-240 ms forward + backward; ResNet-18 (CIFAR
  stem, batch 64) forward + backward is ~3.2x its forward (~2.1 s).
* Non-overlapping windows, forward + backward, autodiff -> custom VJP: 1x1 64->256 365 -> 57 ms,
  1x1 stride-2 shortcut 37 -> 20 ms, ViT-S/16 patch embedding (16x224x224x3) 225 -> 38 ms;
  ResNet-50 (CIFAR stem, batch 32) 8.4 -> 6.1 s. ResNet-18 is unchanged (3x3-dominated).
* Overlapping windows with the GEMM kernel gradient: 3x3 ~2x slower than autodiff, 7x7 stem
  about equal; hence ``"auto"`` leaves them to XLA.
* XLA flags: ``--xla_cpu_experimental_ynn_fusion_type=`` (no YNNPACK fusions, back to XLA's
  own convolutions) made the 3x3 layer ~1.6x faster forward and ~2.2x forward + backward, removed
  the slow 1x1 weight gradient, and made ResNet-18 forward + backward ~20% faster; with it the
  custom VJP still wins for strided 1x1 (2.4x) and patchify (6.6x) and ties on stride-1 1x1.
  The train step now compiles without YNNPACK's convolutions by default, as an option of its
  own program (``config.cpu_kernels``, :mod:`ssl_jax.train.xla_options`; on an AVX2 CPU the 3x3
  layer's forward + backward went from 2151 to 155-173 ms).
  ``--xla_cpu_use_onednn=true`` added nothing, ``--xla_cpu_multi_thread_eigen=false`` and
  ``--xla_cpu_enable_fast_math=true`` did not help; NCHW or CHWN layouts instead of NHWC made no
  difference (XLA re-lays them out).

Choosing the implementation (decided at trace time):

* ``Conv(..., impl="xla" | "custom" | "auto")`` per layer;
* ``impl=None`` (the default) uses the process default: :func:`set_default_impl`, initially
  ``$SSL_JAX_CONV_IMPL`` or ``"auto"``. The dense layers and attention of
  :mod:`ssl_jax.models.dense` and :mod:`ssl_jax.models.attention` share this default (``"xla"``
  turns off every custom backward pass).

Limitation: the custom path is a ``jax.custom_vjp``, so forward-mode differentiation
(``jax.jvp``, ``jax.jacfwd``, ``jax.linearize``) through it raises; use ``impl="xla"`` for that.
Reverse-over-reverse (``jax.grad`` of ``jax.grad``) works: the backward rule is ordinary JAX code.
"""

from __future__ import annotations

import contextlib
import functools
import os
from typing import Iterator, Literal, Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from flax.nnx.nn import dtypes as nnx_dtypes
from flax.nnx.nn import initializers
from jax import lax

Impl = Literal["auto", "xla", "custom"]
PaddingLike = str | int | Sequence[int | tuple[int, int]]
Pads = tuple[tuple[int, int], tuple[int, int]]

IMPLS: tuple[str, ...] = ("auto", "xla", "custom")
_DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")
_default_impl: str = os.environ.get("SSL_JAX_CONV_IMPL", "auto")


def check_impl(impl: str) -> str:
  """``impl`` if it is one of :data:`IMPLS` (conv, dense and attention), else a ``ValueError``."""
  if impl not in IMPLS:
    raise ValueError(f"Unknown layer impl {impl!r}; valid: {', '.join(IMPLS)}.")
  return impl


check_impl(_default_impl)


def get_default_impl() -> str:
  """The implementation used by layers built with ``impl=None``."""
  return _default_impl


def set_default_impl(impl: Impl) -> str:
  """Sets the process-wide default implementation; returns the previous one.

  Takes effect for functions traced afterwards (already compiled functions keep their choice).
  """
  global _default_impl
  previous, _default_impl = _default_impl, check_impl(impl)
  return previous


@contextlib.contextmanager
def default_impl(impl: Impl) -> Iterator[None]:
  """Context manager form of :func:`set_default_impl`."""
  previous = set_default_impl(impl)
  try:
    yield
  finally:
    set_default_impl(previous)  # type: ignore[arg-type]


def _pair(v: int | Sequence[int], name: str) -> tuple[int, int]:
  if isinstance(v, int):
    return (v, v)
  v = tuple(int(i) for i in v)
  if len(v) != 2:
    raise ValueError(f"{name} must be an int or a pair of ints, got {v!r}.")
  return v  # type: ignore[return-value]


def resolve_padding(padding: PaddingLike, in_hw: Sequence[int], kernel_hw: Sequence[int],
                    strides: Sequence[int]) -> Pads:
  """Explicit ``((top, bottom), (left, right))`` padding, as ``nnx.Conv`` interprets ``padding``.

  Args:
    padding: ``"SAME"``, ``"VALID"``, an int (both sides of both dims), or a pair whose entries
      are ints (both sides) or ``(low, high)`` pairs.
    in_hw: input height and width.
    kernel_hw: kernel height and width.
    strides: strides along height and width.
  """
  if isinstance(padding, str):
    if padding.upper() not in ("SAME", "VALID"):
      raise ValueError(f"Unsupported padding {padding!r}; valid: 'SAME', 'VALID', ints or pairs.")
    pads = lax.padtype_to_pads(tuple(in_hw), tuple(kernel_hw), tuple(strides), padding.upper())
    return tuple((int(lo), int(hi)) for lo, hi in pads)  # type: ignore[return-value]
  if isinstance(padding, int):
    return ((padding, padding), (padding, padding))
  padding = tuple(padding)
  if len(padding) == 2:
    out = []
    for p in padding:
      if isinstance(p, int):
        out.append((p, p))
      elif len(p) == 2:
        out.append((int(p[0]), int(p[1])))
      else:
        break
    else:
      return tuple(out)  # type: ignore[return-value]
  raise ValueError(f"Invalid padding {padding!r}: use 'SAME', 'VALID', an int, or two ints/pairs.")


def _xla_conv(x: jax.Array, kernel: jax.Array, strides: tuple[int, int], pads: Pads) -> jax.Array:
  return lax.conv_general_dilated(x, kernel, strides, pads, dimension_numbers=_DIMENSION_NUMBERS)


def _non_overlapping(kernel_hw: Sequence[int], strides: Sequence[int], pads: Pads) -> bool:
  """Whether every input pixel falls in at most one window (1x1 convs, patchify convs)."""
  no_pad = all(lo == 0 and hi == 0 for lo, hi in pads)
  return no_pad and kernel_hw[0] <= strides[0] and kernel_hw[1] <= strides[1]


def wants_custom_vjp(impl: str | None, *, helps_on_cpu: bool) -> bool:
  """Whether a layer with implementation ``impl`` (``None``: the process default) runs its custom
  VJP: always for ``"custom"``, never for ``"xla"``, and for ``"auto"`` on the CPU backend where
  ``helps_on_cpu`` (the layer's measured condition). Shared by the conv, dense and attention
  layers."""
  impl = check_impl(_default_impl if impl is None else impl)
  if impl == "auto":
    return helps_on_cpu and jax.default_backend() == "cpu"
  return impl == "custom"


def uses_custom_vjp(impl: str | None, kernel_hw: Sequence[int], strides: Sequence[int],
                    pads: Pads) -> bool:
  """Whether :func:`conv2d` with these arguments runs the custom VJP (``None``: the default)."""
  return wants_custom_vjp(impl, helps_on_cpu=_non_overlapping(kernel_hw, strides, pads))


def conv2d(x: jax.Array, kernel: jax.Array, strides: int | Sequence[int] = 1,
           padding: PaddingLike = "SAME", *, impl: Impl | None = None) -> jax.Array:
  """NHWC/HWIO 2-D convolution (cross-correlation, as ``lax.conv_general_dilated``).

  Args:
    x: ``[N, H, W, C]`` input.
    kernel: ``[kh, kw, C, O]`` kernel of the same dtype as ``x``.
    strides: int or ``(sh, sw)``.
    padding: see :func:`resolve_padding`.
    impl: ``"xla"`` (plain autodiff), ``"custom"`` (custom VJP everywhere), ``"auto"`` (custom VJP
      for non-overlapping windows on CPU), or ``None`` for the process default.

  Returns:
    ``[N, Ho, Wo, O]`` with ``Ho = (H + pad_top + pad_bottom - kh) // sh + 1`` (same for W).
  """
  if x.ndim != 4 or kernel.ndim != 4:
    raise ValueError(f"conv2d expects x [N,H,W,C] and kernel [kh,kw,C,O], got {x.shape}, "
                     f"{kernel.shape}.")
  strides = _pair(strides, "strides")
  pads = resolve_padding(padding, x.shape[1:3], kernel.shape[:2], strides)
  if uses_custom_vjp(impl, kernel.shape[:2], strides, pads):
    return _custom_conv(*vary_alike(x, kernel), strides, pads)
  return _xla_conv(x, kernel, strides, pads)


def vary_alike(*arrays: jax.Array) -> tuple[jax.Array, ...]:
  """Marks each array as varying over every manual mesh axis any of them varies over.

  Inside ``shard_map`` with ``check_vma=True`` (the engine's default) the kernel is replicated
  while the activations vary over the data axis, so the kernel gradient the backward rule computes
  varies too, and a custom VJP must return gradients of its inputs' exact types. Casting the kernel
  to varying *outside* the custom VJP makes the types agree; the transpose of that cast is the
  ``psum`` over devices that plain autodiff would insert. A no-op outside ``shard_map``.
  """
  axes = frozenset().union(*(jax.typeof(a).mat.varying for a in arrays))
  return tuple(lax.pcast(a, tuple(axes - jax.typeof(a).mat.varying), to="varying")
               for a in arrays)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _custom_conv(x: jax.Array, kernel: jax.Array, strides: tuple[int, int],
                 pads: Pads) -> jax.Array:
  return _xla_conv(x, kernel, strides, pads)


def _custom_conv_fwd(x, kernel, strides, pads):
  return _xla_conv(x, kernel, strides, pads), (x, kernel)


def _custom_conv_bwd(strides, pads, residuals, g):
  x, kernel = residuals
  if _non_overlapping(kernel.shape[:2], strides, pads):
    return _patch_grads(x, kernel, g, strides)
  return _input_grad(x, kernel, g, strides, pads), _kernel_grad(x, kernel, g, strides, pads)


_custom_conv.defvjp(_custom_conv_fwd, _custom_conv_bwd)


def _fit(a: jax.Array, axis: int, size: int) -> jax.Array:
  """Crops or zero-pads ``a`` at the end of ``axis`` to ``size``."""
  n = a.shape[axis]
  if n > size:
    return lax.slice_in_dim(a, 0, size, axis=axis)
  if n < size:
    widths = [(0, 0)] * a.ndim
    widths[axis] = (0, size - n)
    return jnp.pad(a, widths)
  return a


def _patch_grads(x, kernel, g, strides):
  """Both gradients for non-overlapping windows (no padding, ``kh <= sh``, ``kw <= sw``).

  Row ``ho * sh + i`` of the input feeds output row ``ho`` through kernel row ``i < kh`` and no
  other output, so viewing the input as ``[N, Ho, sh, Wo, sw, C]`` and keeping ``[:kh, :kw]``
  gives the patches. Both gradients are then single GEMMs (contractions) over them.
  """
  n, h, w, c = x.shape
  kh, kw, _, o = kernel.shape
  (sh, sw), (ho, wo) = strides, g.shape[1:3]
  f32 = jnp.float32
  xs = _fit(_fit(x, 1, ho * sh), 2, wo * sw).reshape(n, ho, sh, wo, sw, c)
  patches = xs[:, :, :kh, :, :kw, :]  # [N, Ho, kh, Wo, kw, C]
  # dK[i, j, c, o] = sum_{n, ho, wo} patches[n, ho, i, wo, j, c] * g[n, ho, wo, o]
  dk = lax.dot_general(patches, g, (((0, 1, 3), (0, 1, 2)), ((), ())), preferred_element_type=f32)
  # dP[n, ho, wo, i, j, c] = sum_o g[n, ho, wo, o] * K[i, j, c, o]
  dp = lax.dot_general(g, kernel, (((3,), (3,)), ((), ())), preferred_element_type=f32)
  dp = dp.astype(x.dtype).transpose(0, 1, 3, 2, 4, 5)  # [N, Ho, kh, Wo, kw, C]
  dp = jnp.pad(dp, ((0, 0), (0, 0), (0, sh - kh), (0, 0), (0, sw - kw), (0, 0)))
  dx = _fit(_fit(dp.reshape(n, ho * sh, wo * sw, c), 1, h), 2, w)
  return dx, dk.astype(kernel.dtype)


def _input_grad(x, kernel, g, strides, pads):
  """dL/dx as a forward convolution: the cotangent, dilated by the strides (``lhs_dilation``, no
  zeros materialized), correlated with the flipped, in/out-transposed kernel.

  With ``Hp = H + top + bottom`` and ``r = Hp - ((Ho - 1) * sh + kh)`` trailing input rows that
  no window reaches, the full correlation of the dilated cotangent padded by ``kh - 1`` on both
  sides covers padded-input rows ``[0, Hp - r)``; dropping the ``top`` padding rows and appending
  the ``r`` unreached ones gives padding ``(kh - 1 - top, kh - 1 - bottom + r)`` (negative values
  crop).
  """
  (h, w), (kh, kw), (ho, wo) = x.shape[1:3], kernel.shape[:2], g.shape[1:3]
  (top, bottom), (left, right) = pads
  r_h = h + top + bottom - ((ho - 1) * strides[0] + kh)
  r_w = w + left + right - ((wo - 1) * strides[1] + kw)
  flipped = jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2)  # [kh, kw, O, C]
  return lax.conv_general_dilated(
      g, flipped, (1, 1),
      ((kh - 1 - top, kh - 1 - bottom + r_h), (kw - 1 - left, kw - 1 - right + r_w)),
      lhs_dilation=strides, dimension_numbers=_DIMENSION_NUMBERS)


def _kernel_grad(x, kernel, g, strides, pads):
  """dL/dK as ``kh * kw`` GEMMs: ``dK[i, j] = view_ij(x_padded)^T @ g`` where ``view_ij`` is the
  strided ``[N, Ho, Wo, C]`` window of the padded input that kernel tap ``(i, j)`` sees."""
  n, _, _, c = x.shape
  kh, kw, _, _ = kernel.shape
  (sh, sw), (ho, wo) = strides, g.shape[1:3]
  xp = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
  taps = []
  for i in range(kh):
    for j in range(kw):
      view = lax.slice(xp, (0, i, j, 0), (n, i + (ho - 1) * sh + 1, j + (wo - 1) * sw + 1, c),
                       (1, sh, sw, 1))
      taps.append(lax.dot_general(view, g, (((0, 1, 2), (0, 1, 2)), ((), ())),
                                  preferred_element_type=jnp.float32))
  return jnp.stack(taps).reshape(kernel.shape).astype(kernel.dtype)


class Conv(nnx.Module):
  """2-D convolution layer, a drop-in for :class:`flax.nnx.Conv` (NHWC).

  Same constructor (the subset below), same ``kernel`` ``[kh, kw, in, out]`` and ``bias``
  ``[out]`` parameters, same default initializers and RNG order (so the same ``rngs`` give the
  same values), same dtype promotion. Differences: 2-D only (an int ``kernel_size`` means a square
  kernel, not a 1-D one), no dilation/groups/masks, and the backward pass is chosen by ``impl``
  (see the module docstring).

  Args:
    in_features: input channels ``C``.
    out_features: output channels ``O``.
    kernel_size: int or ``(kh, kw)``.
    strides: int or ``(sh, sw)``.
    padding: ``"SAME"``, ``"VALID"``, an int, or two ints / ``(low, high)`` pairs.
    use_bias: whether to add a bias.
    dtype: compute dtype (``None``: promote input and parameters).
    param_dtype: parameter dtype.
    kernel_init: kernel initializer.
    bias_init: bias initializer.
    impl: ``"auto"``, ``"xla"``, ``"custom"`` or ``None`` (process default).
    rngs: random number generators (one ``params`` draw for the kernel, one for the bias).

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> layer = Conv(3, 8, 3, strides=2, rngs=nnx.Rngs(0))
    >>> layer.kernel.shape, layer(jnp.ones((2, 9, 9, 3))).shape
    ((3, 3, 3, 8), (2, 5, 5, 8))
  """

  def __init__(self, in_features: int, out_features: int, kernel_size: int | Sequence[int],
               strides: int | Sequence[int] = 1, *, padding: PaddingLike = "SAME",
               use_bias: bool = True, dtype: jnp.dtype | None = None,
               param_dtype: jnp.dtype = jnp.float32,
               kernel_init: nnx.Initializer = initializers.lecun_normal(),
               bias_init: nnx.Initializer = initializers.zeros_init(),
               impl: Impl | None = None, rngs: nnx.Rngs):
    kernel_size = _pair(kernel_size, "kernel_size")
    if impl is not None:
      check_impl(impl)
    self.kernel_shape = kernel_size + (in_features, out_features)
    self.kernel = nnx.Param(kernel_init(rngs.params(), self.kernel_shape, param_dtype))
    self.bias: nnx.Param | None
    if use_bias:
      self.bias = nnx.Param(bias_init(rngs.params(), (out_features,), param_dtype))
    else:
      self.bias = nnx.data(None)
    self.in_features = in_features
    self.out_features = out_features
    self.kernel_size = kernel_size
    self.strides = _pair(strides, "strides")
    # Hashable (a static attribute of the graph definition).
    self.padding = padding if isinstance(padding, (str, int)) else tuple(
        p if isinstance(p, int) else tuple(p) for p in padding)
    self.use_bias = use_bias
    self.dtype = dtype
    self.param_dtype = param_dtype
    self.impl = impl

  def __call__(self, x: jax.Array) -> jax.Array:
    """``[..., H, W, C] -> [..., Ho, Wo, O]`` (leading dims are flattened into one batch)."""
    batch_shape = x.shape[:-3]
    x = x.reshape((-1,) + x.shape[-3:])
    bias = self.bias[...] if self.bias is not None else None
    x, kernel, bias = nnx_dtypes.promote_dtype((x, self.kernel[...], bias), dtype=self.dtype)
    y = conv2d(x, kernel, self.strides, self.padding, impl=self.impl)
    if bias is not None:
      y = y + bias
    return y.reshape(batch_shape + y.shape[1:])
