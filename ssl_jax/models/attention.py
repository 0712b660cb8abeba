"""Multi-head dot-product attention with a CPU-fast backward pass.

:func:`dot_product_attention` computes what :func:`jax.nn.dot_product_attention` computes for the
arguments the encoders use (``[B, T, H, Dh]`` heads, an optional boolean mask, float32 logits and
softmax, probabilities cast to the value dtype). ``impl`` picks the backward pass:

* ``"xla"``: :func:`jax.nn.dot_product_attention` and autodiff (the backend picks its kernel).
* ``"custom"``: a ``jax.custom_vjp`` that keeps the softmax probabilities ``P`` from the forward
  pass and computes the backward as FlashAttention does (Dao et al., 2022,
  https://arxiv.org/abs/2205.14135, section 3.1 / appendix B.2) but without tiling:
  ``dV = P^T dO``, ``dP = dO V^T``, ``dS = P * (dP - rowsum(dO * O))``, ``dQ = dS K``,
  ``dK = dS^T Q`` (times the scale). The mask is applied in the forward pass only (masked
  probabilities are exactly 0, so they stay 0 in ``dS``), and ``rowsum(dO * O)`` replaces the
  ``[T, S]``-sized softmax-backward reduction of autodiff. ``dK`` and ``dV`` are computed
  transposed, as ``Q^T dS`` and ``dO^T P``, so that each product's large ``[T, S]`` operand is in
  its natural layout (XLA:CPU runs these in YNNPACK, where ``dS^T Q`` and ``P^T dO`` went to
  Eigen at half the speed). The ``1 / sqrt(Dh)`` scale is applied inside the elementwise passes
  that compute ``P`` (``exp((logits - max) * scale)``) and ``dS``, never to a product's operand or
  output: XLA:CPU fuses such a multiply into a oneDNN product, which jaxlib 0.10.2 computes wrong
  or cannot compile (:mod:`ssl_jax.train.xla_options`), and a scale on ``dS`` or on the logits
  after the product costs no extra pass here.
* ``"auto"`` (default through ``impl=None``): ``"custom"`` on the CPU backend, ``"xla"`` elsewhere.

Measured on XLA:CPU (jax 0.10.2, a 2-vCPU AMD EPYC, medians of interleaved runs, with the custom
dense backward of :mod:`ssl_jax.models.dense` and glibc's huge-page tunable): the 2-layer
``bert_tiny`` encoder forward + backward (batch 64 x 128 tokens, 4 heads, packed-document mask)
from 241-242 to 204-234 ms, ViT-Tiny/4 (batch 128, 65 tokens, 3 heads) from 2016-2061 to
1930-1958 ms. The transposed ``dK`` / ``dV`` products and the moved scale then took the four
attention-gradient products of the BERT MLM step from 24 ms on Eigen to 14 ms in YNNPACK and
removed a 5 ms ``[B, H, T, S]`` broadcast (profiler trace of the whole step; the scale, then on
the ``[T, Dh]`` results, has since moved into the softmax and ``dS`` passes, which measured the same
with XLA's default products: 437 against 431-434 ms a step). Saving ``P`` costs
``B * H * T * S`` float32 per layer (16 MiB for ``bert_tiny`` at batch 64), which autodiff of the
XLA path keeps too.

``impl=None`` follows the process default shared with :mod:`ssl_jax.models.conv`
(``set_default_impl``, ``$SSL_JAX_CONV_IMPL``). Like the other custom backward passes, the custom
path does not support forward-mode differentiation; use ``impl="xla"`` for that.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax.models import conv as conv_lib

Impl = conv_lib.Impl
_NEG = -0.7 * float(np.finfo(np.float32).max)  # masked logits (as jax.nn's XLA attention)


def uses_custom_vjp(impl: str | None) -> bool:
  """Whether :func:`dot_product_attention` runs the custom VJP (``None``: the default)."""
  return conv_lib.wants_custom_vjp(impl, helps_on_cpu=True)


def dot_product_attention(query: jax.Array, key: jax.Array, value: jax.Array, *,
                          mask: jax.Array | None = None, impl: Impl | None = None) -> jax.Array:
  """Softmax attention of ``query`` ``[B, T, H, Dh]`` over ``key``/``value`` ``[B, S, H, Dh]``.

  Args:
    query, key, value: one dtype; logits and softmax are float32, the probabilities are cast to
      the value dtype for the product with the values.
    mask: optional bool, broadcastable to ``[B, H, T, S]``: True where query ``t`` may attend key
      ``s``. A row with no allowed key attends uniformly (as :func:`jax.nn.dot_product_attention`).
    impl: ``"auto"``, ``"xla"``, ``"custom"`` or ``None`` (the process default); see the module
      docstring.

  Returns:
    ``[B, T, H, Dh]`` in the value dtype, scaled by ``1 / sqrt(Dh)`` as usual.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> q = jax.random.normal(jax.random.key(0), (2, 5, 3, 4))
    >>> out = dot_product_attention(q, q, q, impl="custom")
    >>> out.shape, bool(jnp.allclose(out, jax.nn.dot_product_attention(q, q, q), atol=1e-6))
    ((2, 5, 3, 4), True)
  """
  if query.ndim != 4 or key.shape != value.shape or query.shape[0] != key.shape[0] \
      or query.shape[2:] != key.shape[2:]:
    raise ValueError(f"attention expects query [B, T, H, Dh] and key, value [B, S, H, Dh], got "
                     f"{query.shape}, {key.shape}, {value.shape}.")
  if not uses_custom_vjp(impl):
    return jax.nn.dot_product_attention(query, key, value, mask=mask)
  if mask is None:
    mask = jnp.ones((1, 1, 1, 1), bool)
  return _attention(query, key, value, jnp.asarray(mask, bool))


def _heads_first(a):
  return jnp.swapaxes(a, 1, 2)  # [B, T, H, Dh] <-> [B, H, T, Dh]


def _minor_swap(a):
  return jnp.swapaxes(a, 2, 3)  # [B, H, T, Dh] -> [B, H, Dh, T]


def _from_minor(a):
  return jnp.transpose(a, (0, 3, 1, 2))  # [B, H, Dh, S] -> [B, S, H, Dh]


def _forward(q, k, v, mask):
  scale = np.float32(1.0 / np.sqrt(q.shape[-1]))
  qh, kh, vh = _heads_first(q), _heads_first(k), _heads_first(v)
  logits = jnp.einsum("bhtd,bhsd->bhts", qh, kh, preferred_element_type=jnp.float32)
  # softmax(scale * logits), the scale inside the exponent: no product's output is multiplied
  # by a constant (see _attention_bwd).
  logits = jnp.where(mask, logits, _NEG)
  e = jnp.exp((logits - jnp.max(logits, axis=-1, keepdims=True)) * scale)
  p = e / jnp.sum(e, axis=-1, keepdims=True)
  out = jnp.einsum("bhts,bhsd->bhtd", p.astype(v.dtype), vh)
  return _heads_first(out), (qh, kh, vh, p, out)


@jax.custom_vjp
def _attention(q, k, v, mask):
  return _forward(q, k, v, mask)[0]


def _attention_fwd(q, k, v, mask):
  return _forward(q, k, v, mask)


def _attention_bwd(residuals, g):
  qh, kh, vh, p, out = residuals
  scale = np.float32(1.0 / np.sqrt(qh.shape[-1]))
  f32 = jnp.float32
  gh = _heads_first(g)
  dp = jnp.einsum("bhtd,bhsd->bhts", gh, vh, preferred_element_type=f32)
  delta = jnp.sum(gh.astype(f32) * out.astype(f32), axis=-1, keepdims=True)
  # The gradient of the unscaled logits, the scale applied in the same elementwise pass. Not on a
  # product's operand or output: XLA:CPU fuses such a multiply into a oneDNN product
  # (ssl_jax.train.xla_options), and a multiply there is computed wrong (output) or fails to
  # compile (operand) in jaxlib 0.10.2.
  ds = (p * (dp - delta) * scale).astype(qh.dtype)
  dq = jnp.einsum("bhts,bhsd->bhtd", ds, kh, preferred_element_type=f32)
  # dK and dV contract over the queries. Written as [Dh, T] @ [T, S] products (the small operand
  # transposed), XLA:CPU runs them as plain matmuls in YNNPACK; as dS^T Q and P^T dO it ran
  # transposed-operand products on Eigen at about half the speed.
  dk = jnp.einsum("bhdt,bhts->bhds", _minor_swap(qh), ds, preferred_element_type=f32)
  dv = jnp.einsum("bhdt,bhts->bhds", _minor_swap(gh), p.astype(gh.dtype))
  return (_heads_first(dq).astype(qh.dtype), _from_minor(dk).astype(kh.dtype),
          _from_minor(dv).astype(vh.dtype), None)


_attention.defvjp(_attention_fwd, _attention_bwd)
