"""On-device image augmentation: per-example keyed, jittable, vmapped.

Three layers:

* **Ops** ``op(key, image, **params) -> image`` act on ONE float32 image ``[H, W, C]`` with values
  in ``[0, 1]`` (except :func:`normalize`, which is meant to be last). Parameters are Python
  constants, so every shape is static and everything jits. Randomness comes only from ``key``.
  Ops applied "with probability ``p``" compute the transformed image and select it with a
  per-image Bernoulli draw (under ``vmap`` a ``cond`` becomes a select anyway).
* **Recipes** are config strings in the style of big_vision's preprocessing strings, ops joined by
  ``|`` and applied left to right, e.g.
  ``"random_resized_crop(size=8, scale=(0.5, 1.0))|random_affine(degrees=15)|normalize(0.5, 0.5)"``.
  :func:`parse_recipe` reads them with :mod:`ast` (arguments through ``ast.literal_eval``; nothing
  is ever ``eval``-ed), so they can be overridden from the command line.
* **Views** :func:`make_views` turns ``{name: recipe}`` into a batched function. The key of example
  ``i`` is ``fold_in(key, index[i])`` with ``index`` its *global dataset index*, and view ``v`` (the
  view's position in sorted name order) uses ``fold_in(k_i, v)``: augmentations do not depend on
  the device count or on where the example sits in the batch.

Where dm-pix has an op it is used (flip, contrast, saturation, hue, grayscale, blur, solarize,
elastic deformation, random crop, center crop); resampling (crops, affine warps) goes through
``jax.scipy.ndimage.map_coordinates``. Hand-written parts say why in their docstrings.

References:
  Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations" (SimCLR),
  ICML 2020, appendix A. Grill et al., "Bootstrap Your Own Latent" (BYOL), NeurIPS 2020, table 6.
  Szegedy et al., "Going Deeper with Convolutions", CVPR 2015 (random resized crop).
  Zhong et al., "Random Erasing Data Augmentation", AAAI 2020.
  Simard et al., "Best Practices for Convolutional Neural Networks Applied to Visual Document
  Analysis", ICDAR 2003 (elastic deformation).
  torchvision.transforms (parameter conventions of RandomResizedCrop, ColorJitter, RandomAffine,
  RandomErasing).
"""

from __future__ import annotations

import ast
import inspect
import math
from typing import Any, Callable, Mapping, Sequence

import dm_pix as pix
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
Op = Callable[..., Array]
ViewsFn = Callable[[Array, Array, Array], dict[str, Array]]

__all__ = [
    "OPS", "Recipe", "parse_recipe", "make_views", "random_resized_crop", "random_crop",
    "center_crop", "resize", "flip_lr", "color_jitter", "grayscale", "gaussian_blur", "solarize",
    "random_affine", "elastic", "gaussian_noise", "random_erasing", "normalize", "to_float",
]


# ----------------------------------------------------------------------------------------------
# Helpers.


def _check_p(p: float, op: str) -> float:
  if not 0.0 <= float(p) <= 1.0:
    raise ValueError(f"{op}: p must be in [0, 1], got {p}")
  return float(p)


def _apply_with_p(key: Array, p: float, fn: Callable[[Array], Array], image: Array) -> Array:
  """``fn(image)`` with probability ``p`` (Python constant), else ``image`` unchanged (exactly)."""
  if p <= 0.0:
    return image
  if p >= 1.0:
    return fn(image)
  return jnp.where(jax.random.bernoulli(key, p), fn(image), image)


def _range(value: float | Sequence[float], op: str, name: str) -> tuple[float, float]:
  """A symmetric range ``x -> (-x, x)``, or a ``(low, high)`` pair as given."""
  if isinstance(value, (int, float)):
    if value < 0:
      raise ValueError(f"{op}: {name} must be >= 0 when a single number, got {value}")
    return -float(value), float(value)
  if len(value) != 2 or value[0] > value[1]:
    raise ValueError(f"{op}: {name} must be a number or a (low, high) pair, got {value}")
  return float(value[0]), float(value[1])


def _pair(value: Sequence[float], op: str, name: str) -> tuple[float, float]:
  """A ``(low, high)`` range given as a pair (no single-number shorthand)."""
  if isinstance(value, (int, float)) or len(value) != 2 or value[0] > value[1]:
    raise ValueError(f"{op}: {name} must be a (low, high) pair, got {value}")
  return float(value[0]), float(value[1])


def _size2(size: int | Sequence[int], op: str) -> tuple[int, int]:
  if isinstance(size, int):
    size = (size, size)
  if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
    raise ValueError(f"{op}: size must be a positive int or an (height, width) pair, got {size}")
  return int(size[0]), int(size[1])


def _sample(image: Array, rows: Array, cols: Array, *, mode: str, cval: float = 0.0) -> Array:
  """Bilinear resampling of every channel of ``image`` [H, W, C] at ``(rows, cols)`` [h, w].

  ``mode`` is that of :func:`jax.scipy.ndimage.map_coordinates`: ``"nearest"`` clamps to the edge,
  ``"constant"`` blends each out-of-image corner with ``cval`` (SciPy's ``grid-constant``).
  Returns [h, w, C].
  """
  sample = lambda channel: jax.scipy.ndimage.map_coordinates(
      channel, [rows, cols], order=1, mode=mode, cval=cval)
  return jax.vmap(sample, in_axes=-1, out_axes=-1)(image)


# ----------------------------------------------------------------------------------------------
# Geometric ops.


def random_resized_crop(key: Array, image: Array, size: int | Sequence[int],
                        scale: Sequence[float] = (0.08, 1.0),
                        ratio: Sequence[float] = (3 / 4, 4 / 3)) -> Array:
  """Crop a random area fraction and aspect ratio, then resize to ``size`` (Inception crop).

  Sampling follows torchvision's ``RandomResizedCrop``: 10 tries of ``area ~ U(scale) * H * W``
  and ``log(w / h) ~ U(log ratio)``; the first box fitting in the image is used, otherwise a
  center crop of the whole image with the aspect ratio clamped to ``ratio``. Unlike torchvision
  the box is continuous (not rounded to pixels) and the offset is uniform, which matters on tiny
  images (8x8 digits) where pixel rounding would leave a handful of possible crops. The 10 tries
  are evaluated at once (static shapes). Resampling is bilinear at the output pixel centers with
  edge clamping and no antialiasing (as TF's ``crop_and_resize`` used by SimCLR); at ``scale=(1,
  1)``, ``ratio=(1, 1)`` and ``size == H == W`` the op is the identity.

  Args:
    key: PRNG key.
    image: float32 [H, W, C].
    size: output side, an int or ``(height, width)``; may differ from the input (multi-crop).
    scale: range of the crop's area as a fraction of the image area.
    ratio: range of the crop's aspect ratio ``width / height``.

  Returns:
    float32 [size_h, size_w, C].
  """
  out_h, out_w = _size2(size, "random_resized_crop")
  lo, hi = _pair(scale, "random_resized_crop", "scale")
  r_lo, r_hi = _pair(ratio, "random_resized_crop", "ratio")
  if not 0 < lo <= hi or r_lo <= 0:
    raise ValueError(f"random_resized_crop: need 0 < scale and 0 < ratio, got {scale}, {ratio}")
  height, width = image.shape[0], image.shape[1]
  k_area, k_ratio, k_top, k_left = jax.random.split(key, 4)
  area = height * width * jax.random.uniform(k_area, (10,), minval=lo, maxval=hi)
  aspect = jnp.exp(jax.random.uniform(k_ratio, (10,), minval=math.log(r_lo),
                                      maxval=math.log(r_hi)))
  crop_w, crop_h = jnp.sqrt(area * aspect), jnp.sqrt(area / aspect)
  fits = (crop_w <= width) & (crop_h <= height)
  first = jnp.argmax(fits)
  in_ratio = width / height
  if in_ratio < r_lo:
    fallback_w, fallback_h = width, width / r_lo
  elif in_ratio > r_hi:
    fallback_w, fallback_h = height * r_hi, height
  else:
    fallback_w, fallback_h = width, height
  found = jnp.any(fits)
  crop_h = jnp.where(found, crop_h[first], fallback_h)
  crop_w = jnp.where(found, crop_w[first], fallback_w)
  top = jax.random.uniform(k_top) * (height - crop_h)
  left = jax.random.uniform(k_left) * (width - crop_w)
  rows = top + (jnp.arange(out_h, dtype=jnp.float32) + 0.5) * (crop_h / out_h) - 0.5
  cols = left + (jnp.arange(out_w, dtype=jnp.float32) + 0.5) * (crop_w / out_w) - 0.5
  rows, cols = jnp.meshgrid(rows, cols, indexing="ij")
  return _sample(image, rows, cols, mode="nearest")


def random_crop(key: Array, image: Array, size: int | Sequence[int], padding: int = 0,
                fill: float = 0.0) -> Array:
  """Pad by ``padding`` pixels of ``fill`` on every side, then crop ``size`` at a random offset.

  The classic CIFAR "pad 4 and crop" augmentation: integer translations that keep pixels crisp
  (on 8x8 digits ``random_crop(size=8, padding=1)`` shifts by at most one pixel). Uses
  :func:`dm_pix.random_crop`.

  Args:
    key: PRNG key.
    image: float32 [H, W, C].
    size: output side (int or ``(height, width)``), at most ``H + 2 * padding``.
    padding: pixels added on each side.
    fill: value of the added pixels.

  Returns:
    float32 [size_h, size_w, C].
  """
  out_h, out_w = _size2(size, "random_crop")
  if padding:
    image = jnp.pad(image, ((padding, padding), (padding, padding), (0, 0)),
                    constant_values=fill)
  if out_h > image.shape[0] or out_w > image.shape[1]:
    raise ValueError(f"random_crop: size {(out_h, out_w)} exceeds the padded image "
                     f"{image.shape[:2]}")
  return pix.random_crop(key, image, (out_h, out_w, image.shape[2]))


def center_crop(key: Array, image: Array, size: int | Sequence[int]) -> Array:
  """Deterministic central crop to ``size`` (:func:`dm_pix.center_crop`). ``key`` is unused.

  Args:
    key: unused (kept for the op signature).
    image: float32 [H, W, C].
    size: output side (int or ``(height, width)``), at most ``(H, W)``.

  Returns:
    float32 [size_h, size_w, C].
  """
  del key
  out_h, out_w = _size2(size, "center_crop")
  if out_h > image.shape[0] or out_w > image.shape[1]:
    raise ValueError(f"center_crop: size {(out_h, out_w)} exceeds the image {image.shape[:2]}")
  return pix.center_crop(image, out_h, out_w)


def resize(key: Array, image: Array, size: int | Sequence[int]) -> Array:
  """Deterministic bilinear resize to ``size`` (:func:`jax.image.resize`, antialiased when
  shrinking). ``key`` is unused.

  Args:
    key: unused (kept for the op signature).
    image: float32 [H, W, C].
    size: output side (int or ``(height, width)``).

  Returns:
    float32 [size_h, size_w, C].
  """
  del key
  out_h, out_w = _size2(size, "resize")
  return jax.image.resize(image, (out_h, out_w, image.shape[2]), method="bilinear")


def flip_lr(key: Array, image: Array, p: float = 0.5) -> Array:
  """Mirror left-right with probability ``p`` (:func:`dm_pix.random_flip_left_right`).

  Args:
    key: PRNG key.
    image: float32 [H, W, C].
    p: probability of flipping.

  Returns:
    float32 [H, W, C].
  """
  p = _check_p(p, "flip_lr")
  return _apply_with_p(key, p, pix.flip_left_right, image)


def random_affine(key: Array, image: Array, degrees: float | Sequence[float] = 0.0,
                  translate: float | Sequence[float] = 0.0,
                  scale: Sequence[float] | None = None,
                  shear: float | Sequence[float] = 0.0, fill: float = 0.0,
                  p: float = 1.0) -> Array:
  """Random rotation, translation, scaling and shear about the image center.

  Parameter conventions follow torchvision's ``RandomAffine``: ``angle ~ U(-degrees, degrees)``
  (or ``U(lo, hi)`` for a pair; positive is counter-clockwise on screen); ``translate=(a, b)``
  shifts by ``U(-a W, a W)`` horizontally and ``U(-b H, b H)`` vertically (a single number is used
  for both); ``scale=(lo, hi)`` zooms by ``U(lo, hi)``; ``shear`` is an x-shear angle in degrees
  (number or pair), or four numbers for x and y ranges. Translations are continuous (sub-pixel),
  not rounded as in torchvision. The warp is written by hand as an inverse map (output pixel ->
  input coordinates) and resampled bilinearly by ``jax.scipy.ndimage.map_coordinates`` with
  out-of-image corners blended with ``fill`` (dm-pix's ``affine_transform`` would also
  interpolate along channels and replaces any partially outside sample by the fill entirely).
  With all parameters at their defaults the op is the identity.

  Args:
    key: PRNG key.
    image: float32 [H, W, C].
    degrees: rotation range in degrees.
    translate: maximal translation as a fraction of the width and height.
    scale: zoom range, ``None`` for no zoom.
    shear: shear range(s) in degrees.
    fill: value of pixels coming from outside the image.
    p: probability of applying the warp.

  Returns:
    float32 [H, W, C].
  """
  op = "random_affine"
  p = _check_p(p, op)
  rot_lo, rot_hi = _range(degrees, op, "degrees")
  if isinstance(translate, (int, float)):
    translate = (translate, translate)
  if len(translate) != 2 or not all(0.0 <= t <= 1.0 for t in translate):
    raise ValueError(f"{op}: translate must be a fraction or a pair of fractions in [0, 1], "
                     f"got {translate}")
  zoom_lo, zoom_hi = (1.0, 1.0) if scale is None else _pair(scale, op, "scale")
  if zoom_lo <= 0:
    raise ValueError(f"{op}: scale must be positive, got {scale}")
  if isinstance(shear, (int, float)) or len(shear) == 2:
    shx_lo, shx_hi = _range(shear, op, "shear")
    shy_lo, shy_hi = 0.0, 0.0
  elif len(shear) == 4:
    (shx_lo, shx_hi), (shy_lo, shy_hi) = (_range(shear[:2], op, "shear"),
                                          _range(shear[2:], op, "shear"))
  else:
    raise ValueError(f"{op}: shear must be a number or 2 or 4 numbers, got {shear}")

  height, width = image.shape[0], image.shape[1]
  k_apply, k_rot, k_tr, k_zoom, k_shear = jax.random.split(key, 5)
  uniform = lambda k, lo, hi, shape=(): jax.random.uniform(k, shape, minval=lo, maxval=hi)
  angle = jnp.deg2rad(uniform(k_rot, rot_lo, rot_hi))
  shift = uniform(k_tr, -1.0, 1.0, (2,)) * jnp.array(
      [translate[0] * width, translate[1] * height])
  zoom = uniform(k_zoom, zoom_lo, zoom_hi)
  k_shx, k_shy = jax.random.split(k_shear)
  shear_x = jnp.tan(jnp.deg2rad(uniform(k_shx, shx_lo, shx_hi)))
  shear_y = jnp.tan(jnp.deg2rad(uniform(k_shy, shy_lo, shy_hi)))

  def warp(image: Array) -> Array:
    # Forward map in (x, y) pixel coordinates (y points down):
    #   out = R(angle) @ Shear @ (zoom * (in - c)) + c + shift.
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    rotation = jnp.array([[cos, sin], [-sin, cos]])  # counter-clockwise on screen.
    shear_m = jnp.array([[1.0, shear_x], [0.0, 1.0]]) @ jnp.array([[1.0, 0.0], [shear_y, 1.0]])
    forward = zoom * rotation @ shear_m
    inverse = jnp.linalg.inv(forward)
    center = jnp.array([(width - 1) / 2, (height - 1) / 2])
    ys, xs = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32),
                          jnp.arange(width, dtype=jnp.float32), indexing="ij")
    out_xy = jnp.stack([xs, ys], axis=-1) - center - shift
    in_xy = out_xy @ inverse.T + center
    return _sample(image, in_xy[..., 1], in_xy[..., 0], mode="constant", cval=fill)

  return _apply_with_p(k_apply, p, warp, image)


def elastic(key: Array, image: Array, alpha: float = 2.0, sigma: float = 1.0,
            p: float = 1.0) -> Array:
  """Elastic deformation (Simard et al. 2003) via :func:`dm_pix.elastic_deformation`.

  A uniform random displacement field in ``[-1, 1]`` is smoothed by a Gaussian of width ``sigma``
  pixels and scaled by ``alpha`` pixels; the image is resampled bilinearly with edge clamping.

  Args:
    key: PRNG key.
    image: float32 [H, W, C].
    alpha: displacement strength in pixels.
    sigma: smoothness of the field in pixels (a Python number: it sets the kernel size).
    p: probability of applying the deformation.

  Returns:
    float32 [H, W, C].
  """
  p = _check_p(p, "elastic")
  if alpha < 0 or sigma <= 0:
    raise ValueError(f"elastic: need alpha >= 0 and sigma > 0, got {alpha}, {sigma}")
  k_apply, k_field = jax.random.split(key)
  deform = lambda x: pix.elastic_deformation(k_field, x, alpha, sigma)
  return _apply_with_p(k_apply, p, deform, image)


# ----------------------------------------------------------------------------------------------
# Photometric ops.


def _brightness(image: Array, factor: Array) -> Array:
  # Multiplicative, as torchvision and SimCLR v2 ("blend with black"); dm-pix's
  # adjust_brightness is TF's additive shift, hence this one-liner.
  return image * factor


def color_jitter(key: Array, image: Array, brightness: float = 0.4, contrast: float = 0.4,
                 saturation: float = 0.4, hue: float = 0.1, p: float = 0.8) -> Array:
  """Brightness, contrast, saturation and hue jitter in a random order, with probability ``p``.

  As SimCLR's ``color_jitter`` (strength s: 0.8s, 0.8s, 0.8s, 0.2s) and torchvision's
  ``ColorJitter``: factors ``U(max(0, 1 - x), 1 + x)`` for brightness (multiplicative),
  contrast (:func:`dm_pix.adjust_contrast`, blend with the per-channel mean) and saturation
  (:func:`dm_pix.adjust_saturation`), a hue shift ``U(-hue, hue)`` of a turn
  (:func:`dm_pix.adjust_hue`); the four are applied in a random permutation, clipping to
  ``[0, 1]`` after each. A zero strength skips that transform.

  Channels: saturation and hue need RGB. On a 1-channel image they are a documented no-op (a gray
  image has zero saturation, so both leave it unchanged, as they would its RGB replica); any
  other channel count with nonzero saturation or hue is a ``ValueError``.

  Args:
    key: PRNG key.
    image: float32 [H, W, C] with C in {1, 3} (any C if saturation == hue == 0).
    brightness: brightness strength (>= 0).
    contrast: contrast strength (>= 0).
    saturation: saturation strength (>= 0).
    hue: hue strength in [0, 0.5].
    p: probability of applying the jitter.

  Returns:
    float32 [H, W, C] in [0, 1] when applied.
  """
  op = "color_jitter"
  p = _check_p(p, op)
  if min(brightness, contrast, saturation, hue) < 0 or hue > 0.5:
    raise ValueError(f"{op}: strengths must be >= 0 and hue <= 0.5, got "
                     f"{(brightness, contrast, saturation, hue)}")
  channels = image.shape[-1]
  if channels == 1:
    saturation, hue = 0.0, 0.0
  elif channels != 3 and (saturation or hue):
    raise ValueError(f"{op}: saturation and hue need 1 or 3 channels, got {channels}")
  k_apply, k_perm, k_b, k_c, k_s, k_h = jax.random.split(key, 6)
  factor = lambda k, x: jax.random.uniform(k, minval=max(0.0, 1.0 - x), maxval=1.0 + x)
  b, c, s = factor(k_b, brightness), factor(k_c, contrast), factor(k_s, saturation)
  h = jax.random.uniform(k_h, minval=-hue, maxval=hue)
  branches = []
  if brightness:
    branches.append(lambda x: _brightness(x, b))
  if contrast:
    branches.append(lambda x: pix.adjust_contrast(x, c))
  if saturation:
    branches.append(lambda x: pix.adjust_saturation(x, s))
  if hue:
    branches.append(lambda x: pix.adjust_hue(x, h))
  if not branches:
    return image
  branches = [lambda x, fn=fn: jnp.clip(fn(x), 0.0, 1.0) for fn in branches]

  def jitter(image: Array) -> Array:
    order = jax.random.permutation(k_perm, len(branches))
    for i in range(len(branches)):
      image = jax.lax.switch(order[i], branches, image)
    return image

  return _apply_with_p(k_apply, p, jitter, image)


def grayscale(key: Array, image: Array, p: float = 0.2) -> Array:
  """Replace RGB by its ITU-R BT.601 luma (0.2989 R + 0.5870 G + 0.1140 B) on all 3 channels.

  Uses :func:`dm_pix.rgb_to_grayscale` (``keep_dims=True``). A 1-channel image is returned
  unchanged (it is gray already).

  Args:
    key: PRNG key.
    image: float32 [H, W, C] with C in {1, 3}.
    p: probability of converting.

  Returns:
    float32 [H, W, C].
  """
  p = _check_p(p, "grayscale")
  channels = image.shape[-1]
  if channels == 1:
    return image
  if channels != 3:
    raise ValueError(f"grayscale: needs 1 or 3 channels, got {channels}")
  return _apply_with_p(key, p, lambda x: pix.rgb_to_grayscale(x, keep_dims=True), image)


def gaussian_blur(key: Array, image: Array, p: float = 0.5,
                  sigma: float | Sequence[float] = (0.1, 2.0),
                  kernel_size: int | None = None) -> Array:
  """Gaussian blur with ``sigma ~ U(sigma)`` pixels, as SimCLR (p = 0.5) and BYOL (1.0 / 0.1).

  :func:`dm_pix.gaussian_blur` on the image reflect-padded by the kernel radius (``VALID``
  convolution), so borders are not darkened (torchvision pads by reflection too; dm-pix alone
  would zero-pad).

  Args:
    key: PRNG key.
    image: float32 [H, W, C].
    p: probability of blurring.
    sigma: standard deviation range in pixels (a number for a fixed sigma).
    kernel_size: odd kernel side; default ~10% of the image side as in SimCLR, at least 3.

  Returns:
    float32 [H, W, C].
  """
  p = _check_p(p, "gaussian_blur")
  lo, hi = (float(sigma), float(sigma)) if isinstance(sigma, (int, float)) else _pair(
      sigma, "gaussian_blur", "sigma")
  if lo <= 0:
    raise ValueError(f"gaussian_blur: sigma must be positive, got {sigma}")
  if kernel_size is None:
    kernel_size = 2 * max(1, round(0.05 * min(image.shape[0], image.shape[1]))) + 1
  radius = int(kernel_size) // 2
  if radius < 1 or radius >= min(image.shape[0], image.shape[1]):
    raise ValueError(f"gaussian_blur: kernel_size {kernel_size} must be >= 3 and smaller than "
                     f"twice the image side {image.shape[:2]}")
  k_apply, k_sigma = jax.random.split(key)
  std = jax.random.uniform(k_sigma, minval=lo, maxval=hi)

  def blur(image: Array) -> Array:
    padded = jnp.pad(image, ((radius, radius), (radius, radius), (0, 0)), mode="reflect")
    return pix.gaussian_blur(padded, std, 2 * radius + 1, padding="VALID")

  return _apply_with_p(k_apply, p, blur, image)


def solarize(key: Array, image: Array, p: float = 0.2, threshold: float = 0.5) -> Array:
  """Invert pixels at or above ``threshold`` (``x -> 1 - x``) with probability ``p``.

  :func:`dm_pix.solarize`; BYOL uses p = 0 / 0.2 for its two views.

  Args:
    key: PRNG key.
    image: float32 [H, W, C].
    p: probability of solarizing.
    threshold: inversion threshold.

  Returns:
    float32 [H, W, C].
  """
  p = _check_p(p, "solarize")
  return _apply_with_p(key, p, lambda x: pix.solarize(x, threshold), image)


def gaussian_noise(key: Array, image: Array, std: float | Sequence[float] = 0.05,
                   p: float = 1.0, clip: bool = True) -> Array:
  """Add i.i.d. ``N(0, std^2)`` noise per pixel and channel; ``std ~ U(lo, hi)`` for a pair.

  Hand-written (one line; dm-pix has no noise op).

  Args:
    key: PRNG key.
    image: float32 [H, W, C].
    std: noise standard deviation, or a ``(low, high)`` range drawn per image.
    p: probability of adding noise.
    clip: clip the result to ``[0, 1]``.

  Returns:
    float32 [H, W, C].
  """
  p = _check_p(p, "gaussian_noise")
  lo, hi = (float(std), float(std)) if isinstance(std, (int, float)) else _pair(
      std, "gaussian_noise", "std")
  if lo < 0:
    raise ValueError(f"gaussian_noise: std must be >= 0, got {std}")
  k_apply, k_std, k_noise = jax.random.split(key, 3)
  scale = jax.random.uniform(k_std, minval=lo, maxval=hi)

  def noise(image: Array) -> Array:
    out = image + scale * jax.random.normal(k_noise, image.shape, image.dtype)
    return jnp.clip(out, 0.0, 1.0) if clip else out

  return _apply_with_p(k_apply, p, noise, image)


def random_erasing(key: Array, image: Array, p: float = 0.5,
                   scale: Sequence[float] = (0.02, 0.33), ratio: Sequence[float] = (0.3, 3.3),
                   value: float | str = 0.0) -> Array:
  """Erase a random rectangle (Zhong et al. 2020; "cutout" with random size and shape).

  The box has area ``U(scale) * H * W`` and aspect ratio ``exp(U(log ratio))`` (torchvision's
  ``RandomErasing``), its sides clipped to the image instead of retrying, a uniform position; the
  pixels whose centers fall inside are set to ``value``: a number, or ``"random"`` for
  ``U(0, 1)`` noise per pixel. Hand-written: dm-pix has no erasing op.

  Args:
    key: PRNG key.
    image: float32 [H, W, C].
    p: probability of erasing.
    scale: range of the box area as a fraction of the image area.
    ratio: range of the box aspect ratio.
    value: fill value or ``"random"``.

  Returns:
    float32 [H, W, C].
  """
  op = "random_erasing"
  p = _check_p(p, op)
  lo, hi = _pair(scale, op, "scale")
  r_lo, r_hi = _pair(ratio, op, "ratio")
  if not (0 <= lo and hi <= 1 and r_lo > 0):
    raise ValueError(f"{op}: need scale within [0, 1] and ratio > 0, got {scale}, {ratio}")
  if isinstance(value, str) and value != "random":
    raise ValueError(f"{op}: value must be a number or 'random', got {value!r}")
  height, width = image.shape[0], image.shape[1]
  k_apply, k_area, k_ratio, k_top, k_left, k_fill = jax.random.split(key, 6)
  area = height * width * jax.random.uniform(k_area, minval=lo, maxval=hi)
  aspect = jnp.exp(jax.random.uniform(k_ratio, minval=math.log(r_lo), maxval=math.log(r_hi)))
  box_h = jnp.minimum(jnp.sqrt(area / aspect), height)
  box_w = jnp.minimum(jnp.sqrt(area * aspect), width)
  top = jax.random.uniform(k_top) * (height - box_h)
  left = jax.random.uniform(k_left) * (width - box_w)
  rows = jnp.arange(height, dtype=jnp.float32)[:, None] + 0.5
  cols = jnp.arange(width, dtype=jnp.float32)[None, :] + 0.5
  inside = ((rows >= top) & (rows < top + box_h) & (cols >= left) & (cols < left + box_w))
  fill = (jax.random.uniform(k_fill, image.shape) if value == "random"
          else jnp.asarray(value, image.dtype))
  erase = lambda x: jnp.where(inside[..., None], fill, x)
  return _apply_with_p(k_apply, p, erase, image)


def normalize(key: Array, image: Array, mean: float | Sequence[float],
              std: float | Sequence[float]) -> Array:
  """``(image - mean) / std`` per channel; deterministic, meant to be the last op.

  Args:
    key: unused (kept for the op signature).
    image: float32 [H, W, C].
    mean: a number or one per channel.
    std: a number or one per channel (nonzero).

  Returns:
    float32 [H, W, C].
  """
  del key
  mean = np.asarray(mean, np.float32)
  std = np.asarray(std, np.float32)
  for name, value in (("mean", mean), ("std", std)):
    if value.ndim > 1 or value.size not in (1, image.shape[-1]):
      raise ValueError(f"normalize: {name} must be a number or one per channel "
                       f"({image.shape[-1]}), got shape {value.shape}")
  if (std == 0).any():
    raise ValueError("normalize: std must be nonzero")
  return (image - jnp.asarray(mean)) / jnp.asarray(std)


OPS: Mapping[str, Op] = {
    fn.__name__: fn for fn in (
        random_resized_crop, random_crop, center_crop, resize, flip_lr, random_affine, elastic,
        color_jitter, grayscale, gaussian_blur, solarize, gaussian_noise, random_erasing,
        normalize)
}
"""Every op usable in a recipe, by name."""


# ----------------------------------------------------------------------------------------------
# Recipes.


class Recipe:
  """A parsed augmentation recipe: ``recipe(key, image [H, W, C]) -> image [h, w, C]``.

  Ops run left to right, op ``i`` with the ``i``-th key of ``jax.random.split(key, n_ops)``. The
  input is cast to float32 (it must already be in ``[0, 1]``). An empty recipe is the identity.

  Attributes:
    spec: the recipe string.
    ops: ``((name, kwargs), ...)`` with all arguments bound by name.
  """

  def __init__(self, spec: str, ops: Sequence[tuple[str, dict[str, Any]]]):
    self.spec = spec
    self.ops = tuple(ops)

  def __call__(self, key: Array, image: Array) -> Array:
    image = jnp.asarray(image, jnp.float32)
    if image.ndim != 3:
      raise ValueError(f"a recipe acts on one image [H, W, C], got shape {image.shape}")
    if not self.ops:
      return image
    for k, (name, kwargs) in zip(jax.random.split(key, len(self.ops)), self.ops):
      image = OPS[name](k, image, **kwargs)
    return image

  def __repr__(self) -> str:
    return f"Recipe({self.spec!r})"


def _valid_args(fn: Op) -> list[str]:
  return list(inspect.signature(fn).parameters)[2:]


def _parse_op(node: ast.expr, spec: str) -> tuple[str, dict[str, Any]]:
  segment = ast.get_source_segment(spec, node) or ast.dump(node)
  if isinstance(node, ast.Name):
    name, args, keywords = node.id, [], []
  elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
    name, args, keywords = node.func.id, node.args, node.keywords
  else:
    raise ValueError(f"cannot parse recipe element {segment!r}: expected op(arg=value, ...)")
  if name not in OPS:
    raise ValueError(f"unknown augmentation op {name!r} in {segment!r}; valid ops: "
                     f"{', '.join(sorted(OPS))}")
  fn = OPS[name]
  valid = _valid_args(fn)
  values = []
  for arg in list(args) + [kw.value for kw in keywords]:
    if isinstance(arg, ast.Starred):
      raise ValueError(f"{name}: *args are not allowed in recipes")
    try:
      values.append(ast.literal_eval(arg))
    except ValueError:
      raise ValueError(f"{name}: argument {ast.get_source_segment(spec, arg)!r} is not a Python "
                       "literal") from None
  positional, named = values[:len(args)], values[len(args):]
  kwargs = {}
  for kw, value in zip(keywords, named):
    if kw.arg is None:
      raise ValueError(f"{name}: **kwargs are not allowed in recipes")
    if kw.arg not in valid:
      raise ValueError(f"unknown argument {kw.arg!r} for augmentation op {name!r}; valid "
                       f"arguments: {', '.join(valid)}")
    kwargs[kw.arg] = value
  try:
    bound = inspect.signature(fn).bind(None, None, *positional, **kwargs)
  except TypeError as e:
    raise ValueError(f"bad arguments for augmentation op {name!r} ({e}); valid arguments: "
                     f"{', '.join(valid)}") from None
  kwargs = dict(bound.arguments)
  for skip in ("key", "image"):
    kwargs.pop(skip)
  return name, kwargs


def parse_recipe(spec: str) -> Recipe:
  """Parses ``"op1(a=1, b=(2, 3))|op2|..."`` into a per-image augmentation function.

  Grammar: ops separated by ``|``; each op is a name from :data:`OPS`, optionally called with
  positional and/or keyword arguments that are Python literals (numbers, strings, tuples, lists,
  ``None``, booleans). The string is parsed with ``ast.parse`` and arguments are read with
  ``ast.literal_eval``: nothing is executed. Whitespace and newlines are free. An empty string is
  the identity. Argument values are checked when the recipe is first traced (they are Python
  constants of the ops).

  Args:
    spec: the recipe string.

  Returns:
    A :class:`Recipe`, ``recipe(key, image [H, W, C]) -> float32 [h, w, C]``.

  Raises:
    ValueError: on a syntax error, an unknown op (the message lists the valid ops), an unknown or
      missing argument (the message lists the op's valid arguments), or a non-literal argument.

  Example:
    >>> r = parse_recipe("flip_lr(p=1.0)|normalize(mean=0.5, std=0.5)")
    >>> r.ops
    (('flip_lr', {'p': 1.0}), ('normalize', {'mean': 0.5, 'std': 0.5}))
    >>> r(jax.random.key(0), jnp.array([[[0.0], [1.0]]])).ravel().tolist()
    [1.0, -1.0]
  """
  if not isinstance(spec, str):
    raise TypeError(f"a recipe is a string, got {type(spec).__name__}")
  if not spec.strip():
    return Recipe(spec, ())
  try:
    tree = ast.parse(f"(\n{spec}\n)", mode="eval").body
  except SyntaxError as e:
    raise ValueError(f"cannot parse augmentation recipe {spec!r}: {e.msg}") from None
  wrapped = f"(\n{spec}\n)"
  nodes = []

  def flatten(node: ast.expr) -> None:
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
      flatten(node.left)
      flatten(node.right)
    else:
      nodes.append(node)

  flatten(tree)
  return Recipe(spec, [_parse_op(node, wrapped) for node in nodes])


# ----------------------------------------------------------------------------------------------
# Views.


def to_float(images: Array) -> Array:
  """uint8 -> float32 / 255; floating -> float32 (assumed in ``[0, 1]``); others raise."""
  images = jnp.asarray(images)
  if images.dtype == jnp.uint8:
    return images.astype(jnp.float32) / 255.0
  if jnp.issubdtype(images.dtype, jnp.floating):
    return images.astype(jnp.float32)
  raise TypeError(f"images must be uint8 or floating, got {images.dtype}")


def make_views(recipes: Mapping[str, str | Callable[[Array, Array], Array]]) -> ViewsFn:
  """Builds ``views_fn(images, index, key) -> {name: view}`` from ``{name: recipe}``.

  Keys: example ``i`` uses ``k_i = fold_in(key, index[i])`` and view ``v`` (position of its name
  in sorted order) uses ``fold_in(k_i, v)``. ``index`` is the global dataset index of each
  example, so the views of an example do not depend on the batch size, its position in the batch
  or the number of devices. Pure per-example work: usable under ``jit``, ``vmap`` and
  ``shard_map`` (on each shard with its own ``index`` slice).

  Args:
    recipes: view name -> recipe string (see :func:`parse_recipe`) or an already parsed
      ``fn(key, image) -> image``.

  Returns:
    ``views_fn(images, index, key)`` with ``images`` uint8 (divided by 255) or float in [0, 1]
    [B, H, W, C], ``index`` int [B] and a PRNG key (typed or raw); returns
    ``{name: float32 [B, h, w, C]}``.

  Example:
    >>> views_fn = make_views({"a": "flip_lr(p=1.0)", "b": ""})
    >>> images = jnp.arange(4, dtype=jnp.uint8).reshape(1, 1, 4, 1)
    >>> out = views_fn(images, jnp.array([7]), jax.random.key(0))
    >>> (out["a"][0, 0, :, 0] * 255).round().tolist(), out["b"].dtype
    ([3.0, 2.0, 1.0, 0.0], dtype('float32'))
  """
  names = sorted(recipes)
  fns = [parse_recipe(recipes[n]) if isinstance(recipes[n], str) else recipes[n] for n in names]

  def one_example(image: Array, index: Array, key: Array) -> dict[str, Array]:
    key = jax.random.fold_in(key, index)
    return {name: fn(jax.random.fold_in(key, v), image)
            for v, (name, fn) in enumerate(zip(names, fns))}

  def views_fn(images: Array, index: Array, key: Array) -> dict[str, Array]:
    images = to_float(images)
    if images.ndim != 4:
      raise ValueError(f"images must be [B, H, W, C], got shape {images.shape}")
    index = jnp.asarray(index)
    if index.shape != images.shape[:1]:
      raise ValueError(f"index must be [B] = {images.shape[:1]}, got shape {index.shape}")
    return jax.vmap(one_example, in_axes=(0, 0, None))(images, index, key)

  return views_fn
