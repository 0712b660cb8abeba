"""Tests for ssl_jax.augment: ops against NumPy/SciPy references, recipes, keyed views."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage
from jax.sharding import PartitionSpec as P

from ssl_jax import augment

KEY = jax.random.key(0)


def _rgb(shape=(8, 8, 3), seed=0):
  return np.random.default_rng(seed).uniform(size=shape).astype(np.float32)


def _op(name, **kwargs):
  """A jitted single-image op with fixed parameters."""
  return jax.jit(functools.partial(augment.OPS[name], **kwargs))


def _many_keys(n, seed=1):
  return jax.random.split(jax.random.key(seed), n)


# ---------------------------------------------------------------------------------------------
# Views: shapes, dtypes, keys, batch-position and device-count independence.

FULL = ("random_resized_crop(size=8, scale=(0.3, 1.0))|flip_lr|"
        "random_affine(degrees=20, translate=0.1, scale=(0.8, 1.2), shear=10, p=0.8)|"
        "color_jitter(0.4, 0.4, 0.4, 0.1)|grayscale(p=0.3)|gaussian_blur(p=0.5)|solarize(p=0.3)|"
        "gaussian_noise(std=(0.0, 0.1))|random_erasing(p=0.5)|random_crop(8, padding=1)")
RECIPES = {"b_small": "random_resized_crop(size=(5, 6))|flip_lr",
           "a_full": FULL,
           "c_norm": FULL + "|normalize(mean=(0.5, 0.4, 0.3), std=0.25)"}


# Cheaper recipes (fast to compile) for the tests that compile several variants.
SMALL = {"b": "random_resized_crop(size=6)|flip_lr|gaussian_noise(std=0.1)",
         "a": "random_erasing(p=0.5)|solarize(p=0.5)"}


@pytest.fixture(scope="module")
def views_fn():
  return jax.jit(augment.make_views(RECIPES))


@pytest.fixture(scope="module")
def small_views_fn():
  return jax.jit(augment.make_views(SMALL))


@pytest.fixture(scope="module")
def batch():
  images = (np.random.default_rng(0).uniform(size=(6, 8, 8, 3)) * 255).astype(np.uint8)
  index = np.array([10, 3, 77, 5, 1234, 42], np.int32)
  return images, index


def test_views_shapes_dtypes_and_ranges(views_fn, batch):
  images, index = batch
  out = views_fn(images, index, KEY)
  assert sorted(out) == sorted(RECIPES)
  assert out["a_full"].shape == (6, 8, 8, 3) and out["b_small"].shape == (6, 5, 6, 3)
  assert out["c_norm"].shape == (6, 8, 8, 3)
  for v in out.values():
    assert v.dtype == jnp.float32
    assert np.isfinite(np.asarray(v)).all()
  for name in ("a_full", "b_small"):
    assert 0.0 <= float(out[name].min()) and float(out[name].max()) <= 1.0
  lo = (0 - np.array([0.5, 0.4, 0.3])) / 0.25
  hi = (1 - np.array([0.5, 0.4, 0.3])) / 0.25
  c_norm = np.asarray(out["c_norm"])
  assert (c_norm >= lo - 1e-5).all() and (c_norm <= hi + 1e-5).all()


def test_views_uint8_divided_by_255_and_float_accepted():
  fn = jax.jit(augment.make_views({"id": ""}))
  images = np.arange(2 * 4 * 4 * 1, dtype=np.uint8).reshape(2, 4, 4, 1) * 7
  out = fn(images, np.arange(2), KEY)["id"]
  # XLA may compute x * (1 / 255): equal to x / 255 up to one ulp.
  np.testing.assert_allclose(np.asarray(out), images.astype(np.float32) / 255.0, rtol=2e-7)
  floats = images.astype(np.float64) / 255.0
  np.testing.assert_allclose(np.asarray(fn(floats, np.arange(2), KEY)["id"]), out, atol=1e-7)
  with pytest.raises(TypeError, match="uint8 or floating"):
    augment.make_views({"id": ""})(images.astype(np.int32), np.arange(2), KEY)


def test_views_deterministic_and_key_dependent(views_fn, batch):
  images, index = batch
  a = views_fn(images, index, KEY)
  b = views_fn(images, index, KEY)
  c = views_fn(images, index, jax.random.key(1))
  for name in RECIPES:
    np.testing.assert_array_equal(np.asarray(a[name]), np.asarray(b[name]))
    assert not np.allclose(np.asarray(a[name]), np.asarray(c[name]))
  # Different examples indices give different augmentations of the same image.
  same = np.repeat(images[:1], 6, axis=0)
  d = np.asarray(views_fn(same, index, KEY)["a_full"])
  assert not np.allclose(d[0], d[1])


def test_views_accept_raw_and_typed_keys(small_views_fn, batch):
  images, index = batch
  typed = small_views_fn(images, index, jax.random.key(3))
  raw = small_views_fn(images, index, jax.random.PRNGKey(3))
  for name in SMALL:
    np.testing.assert_array_equal(np.asarray(typed[name]), np.asarray(raw[name]))


def test_views_independent_of_batch_position(views_fn, small_views_fn, batch):
  images, index = batch
  ref = views_fn(images, index, KEY)
  perm = np.array([3, 5, 0, 2, 1, 4])
  shuffled = views_fn(images[perm], index[perm], KEY)
  for name in RECIPES:
    np.testing.assert_allclose(np.asarray(shuffled[name]), np.asarray(ref[name])[perm], atol=1e-6)
  # A batch of a different size (another compilation) gives the same view for the same index, up
  # to float rounding of a differently fused program.
  ref = small_views_fn(images, index, KEY)
  single = small_views_fn(images[2:3], index[2:3], KEY)
  for name in SMALL:
    np.testing.assert_allclose(np.asarray(single[name])[0], np.asarray(ref[name])[2], atol=1e-6)


def test_views_key_derivation_matches_documented_scheme(small_views_fn, batch):
  images, index = batch
  out = small_views_fn(images, index, KEY)
  i = 4
  k_i = jax.random.fold_in(KEY, index[i])
  for v, name in enumerate(sorted(SMALL)):  # v = position in sorted name order.
    recipe = jax.jit(augment.parse_recipe(SMALL[name]))
    expected = recipe(jax.random.fold_in(k_i, v), images[i].astype(np.float32) / 255.0)
    np.testing.assert_allclose(np.asarray(out[name])[i], np.asarray(expected), atol=1e-6)


def test_views_under_shard_map_match_single_device(small_views_fn):
  devices = jax.devices()
  assert len(devices) == 8, "conftest sets 8 simulated CPU devices"
  mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  fn = augment.make_views(SMALL)
  images = (np.random.default_rng(1).uniform(size=(16, 8, 8, 3)) * 255).astype(np.uint8)
  index = np.arange(100, 116, dtype=np.int32)[::-1].copy()
  sharded = jax.jit(jax.shard_map(
      lambda x, i: fn(x, i, KEY), mesh=mesh, in_specs=(P("data"), P("data")),
      out_specs=P("data"), check_vma=True))
  out = sharded(images, index)
  assert len(out["a"].sharding.device_set) == 8
  ref = small_views_fn(images, index, KEY)
  for name in SMALL:
    np.testing.assert_allclose(np.asarray(out[name]), np.asarray(ref[name]), atol=1e-6)


def test_views_reject_bad_shapes():
  fn = augment.make_views({"x": ""})
  with pytest.raises(ValueError, match=r"\[B, H, W, C\]"):
    fn(np.zeros((4, 4, 1), np.uint8), np.arange(4), KEY)
  with pytest.raises(ValueError, match="index"):
    fn(np.zeros((2, 4, 4, 1), np.uint8), np.arange(3), KEY)


# ---------------------------------------------------------------------------------------------
# Ops: each does what it says.


def test_flip_is_exact_mirror_and_p_controls_it():
  image = _rgb((5, 7, 3))
  np.testing.assert_array_equal(np.asarray(_op("flip_lr", p=1.0)(KEY, image)), image[:, ::-1])
  np.testing.assert_array_equal(np.asarray(_op("flip_lr", p=0.0)(KEY, image)), image)
  out = np.asarray(jax.vmap(_op("flip_lr", p=0.5), in_axes=(0, None))(_many_keys(400), image))
  flipped = np.all(out == image[:, ::-1], axis=(1, 2, 3))
  kept = np.all(out == image, axis=(1, 2, 3))
  assert np.all(flipped ^ kept)
  assert 0.4 < flipped.mean() < 0.6


def test_random_resized_crop_full_scale_is_identity():
  image = _rgb((8, 8, 3))
  out = _op("random_resized_crop", size=8, scale=(1.0, 1.0), ratio=(1.0, 1.0))(KEY, image)
  np.testing.assert_allclose(np.asarray(out), image, atol=1e-6)


def test_random_resized_crop_box_respects_scale_and_ratio():
  # On ramps I(r, c) = c and I(r, c) = r bilinear resampling is exact, so the output spacing
  # recovers the crop box: width = out_step * out_w.
  h, w, out = 32, 40, 4
  rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
  image = np.stack([cols, rows], axis=-1).astype(np.float32)
  scale, ratio = (0.25, 0.6), (0.5, 2.0)
  crop = jax.vmap(_op("random_resized_crop", size=out, scale=scale, ratio=ratio),
                  in_axes=(0, None))(_many_keys(200), image)
  crop = np.asarray(crop, np.float64)
  dx = np.diff(crop[..., 0], axis=2)
  dy = np.diff(crop[..., 1], axis=1)
  # Evenly spaced samples: a real (bilinear) resize of one box.
  np.testing.assert_allclose(dx, np.broadcast_to(dx[:, :1, :1], dx.shape), atol=1e-3)
  np.testing.assert_allclose(dy, np.broadcast_to(dy[:, :1, :1], dy.shape), atol=1e-3)
  crop_w, crop_h = dx[:, 0, 0] * out, dy[:, 0, 0] * out
  area = crop_w * crop_h / (h * w)
  assert np.all(area >= scale[0] - 1e-4) and np.all(area <= scale[1] + 1e-4)
  aspect = crop_w / crop_h
  assert np.all(aspect >= ratio[0] - 1e-4) and np.all(aspect <= ratio[1] + 1e-4)
  left = crop[:, 0, 0, 0] - (0.5 * crop_w / out - 0.5)
  top = crop[:, 0, 0, 1] - (0.5 * crop_h / out - 0.5)
  assert np.all(left >= -1e-3) and np.all(left + crop_w <= w + 1e-3)
  assert np.all(top >= -1e-3) and np.all(top + crop_h <= h + 1e-3)
  assert np.std(area) > 0.05 and np.std(left) > 1.0  # really random.


def test_random_crop_is_a_window_of_the_padded_image():
  image = _rgb((6, 6, 1))
  padded = np.pad(image, ((1, 1), (1, 1), (0, 0)))
  outs = np.asarray(jax.vmap(_op("random_crop", size=6, padding=1), in_axes=(0, None))(
      _many_keys(50), image))
  offsets = set()
  for o in outs:
    hits = [(i, j) for i in range(3) for j in range(3)
            if np.array_equal(o, padded[i:i + 6, j:j + 6])]
    assert hits
    offsets.update(hits)
  assert len(offsets) >= 5


def test_center_crop_and_resize():
  image = _rgb((8, 10, 3))
  np.testing.assert_array_equal(np.asarray(_op("center_crop", size=(4, 6))(KEY, image)),
                                image[2:6, 2:8])
  np.testing.assert_allclose(np.asarray(_op("resize", size=(8, 10))(KEY, image)), image,
                             atol=1e-6)
  assert _op("resize", size=16)(KEY, image).shape == (16, 16, 3)


def test_grayscale_matches_itu_bt601():
  image = _rgb((6, 6, 3))
  out = np.asarray(_op("grayscale", p=1.0)(KEY, image))
  luma = image @ np.array([0.2989, 0.5870, 0.1140], np.float32)
  for c in range(3):
    np.testing.assert_allclose(out[..., c], luma, atol=1e-6)
  np.testing.assert_array_equal(np.asarray(_op("grayscale", p=0.0)(KEY, image)), image)
  gray = image[..., :1]
  np.testing.assert_array_equal(np.asarray(_op("grayscale", p=1.0)(KEY, gray)), gray)


def test_solarize_inverts_above_threshold():
  image = _rgb((6, 6, 3))
  out = np.asarray(_op("solarize", p=1.0, threshold=0.4)(KEY, image))
  np.testing.assert_allclose(out, np.where(image < 0.4, image, 1.0 - image), atol=1e-7)
  np.testing.assert_array_equal(np.asarray(_op("solarize", p=0.0)(KEY, image)), image)


def test_random_affine_identity_and_exact_rotation():
  image = _rgb((7, 7, 2))
  np.testing.assert_array_equal(np.asarray(_op("random_affine")(KEY, image)), image)
  np.testing.assert_array_equal(
      np.asarray(_op("random_affine", degrees=30, p=0.0)(KEY, image)), image)
  rot = _op("random_affine", degrees=(90.0, 90.0))(KEY, image)
  # +90 degrees is counter-clockwise on screen, as np.rot90 over (rows, cols).
  np.testing.assert_allclose(np.asarray(rot), np.rot90(image, 1, axes=(0, 1)), atol=1e-5)


def test_random_affine_zoom_and_fill():
  image = np.ones((9, 9, 1), np.float32)
  out = np.asarray(_op("random_affine", scale=(0.5, 0.5), fill=0.25)(KEY, image))
  # Zooming out by 2 about the center keeps ~the central 5x5 (+ a blended ring) and fills the rest.
  np.testing.assert_allclose(out[2:7, 2:7], 1.0, atol=1e-6)
  np.testing.assert_allclose(out[0], 0.25, atol=1e-6)
  np.testing.assert_allclose(out[:, 0], 0.25, atol=1e-6)


def test_color_jitter_p0_identity_and_brightness_is_multiplicative():
  image = _rgb((6, 6, 3)) * 0.5
  np.testing.assert_array_equal(np.asarray(_op("color_jitter", p=0.0)(KEY, image)), image)
  fn = _op("color_jitter", brightness=0.5, contrast=0.0, saturation=0.0, hue=0.0, p=1.0)
  for k in _many_keys(5):
    out = np.asarray(fn(k, image))
    factor = out / image
    np.testing.assert_allclose(factor, factor.flat[0], rtol=1e-5)
    assert 0.5 - 1e-6 <= factor.flat[0] <= 1.5 + 1e-6


def test_color_jitter_contrast_and_hue():
  image = _rgb((6, 6, 3))
  fn = _op("color_jitter", brightness=0.0, contrast=0.5, saturation=0.0, hue=0.0, p=1.0)
  out = np.asarray(fn(KEY, image))
  mean = image.mean(axis=(0, 1))
  unclipped = (out > 0) & (out < 1)
  factor = ((out - out.mean(axis=(0, 1))) / (image - mean))[unclipped]
  assert 0.5 - 1e-3 <= np.median(factor) <= 1.5 + 1e-3
  hue = _op("color_jitter", brightness=0.0, contrast=0.0, saturation=0.0, hue=0.3, p=1.0)
  out = np.asarray(hue(KEY, image))
  assert not np.allclose(out, image)
  # A hue rotation keeps the HSV value (max channel).
  np.testing.assert_allclose(out.max(-1), image.max(-1), atol=1e-5)


def test_color_jitter_channels():
  gray = _rgb((6, 6, 1))
  full = _op("color_jitter", brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, p=1.0)
  bc_only = _op("color_jitter", brightness=0.4, contrast=0.4, saturation=0.0, hue=0.0, p=1.0)
  # Documented: on one channel, saturation and hue are a no-op.
  np.testing.assert_array_equal(np.asarray(full(KEY, gray)), np.asarray(bc_only(KEY, gray)))
  with pytest.raises(ValueError, match="1 or 3 channels"):
    full(KEY, _rgb((6, 6, 2)))
  out = np.asarray(full(KEY, _rgb((6, 6, 3))))
  assert out.min() >= 0.0 and out.max() <= 1.0


def test_gaussian_blur_matches_scipy_and_keeps_constants():
  image = _rgb((9, 9, 2))
  out = np.asarray(_op("gaussian_blur", p=1.0, sigma=1.0, kernel_size=5)(KEY, image))
  # jnp.pad(mode="reflect") is SciPy's "mirror"; radius 2 = truncate 2 sigma.
  expected = np.stack([scipy.ndimage.gaussian_filter(image[..., c], 1.0, mode="mirror",
                                                     truncate=2.0) for c in range(2)], -1)
  np.testing.assert_allclose(out, expected, atol=1e-5)
  const = np.full((8, 8, 1), 0.7, np.float32)
  blur = _op("gaussian_blur", p=1.0)
  np.testing.assert_allclose(np.asarray(blur(KEY, const)), const, atol=1e-6)  # no dark border
  np.testing.assert_array_equal(np.asarray(_op("gaussian_blur", p=0.0)(KEY, image)), image)


def test_gaussian_noise_std():
  image = np.full((32, 32, 3), 0.5, np.float32)
  np.testing.assert_array_equal(np.asarray(_op("gaussian_noise", std=0.0)(KEY, image)), image)
  out = np.asarray(_op("gaussian_noise", std=0.1, clip=False)(KEY, image))
  assert abs((out - 0.5).std() - 0.1) < 0.005 and abs((out - 0.5).mean()) < 0.005


def test_random_erasing_erases_one_rectangle():
  image = _rgb((12, 12, 1)) * 0.5 + 0.5  # values in [0.5, 1]: erased pixels (0.1) stand out.
  fn = _op("random_erasing", p=1.0, scale=(0.1, 0.3), ratio=(0.5, 2.0), value=0.1)
  for k in _many_keys(10):
    out = np.asarray(fn(k, image))[..., 0]
    erased = out == np.float32(0.1)
    np.testing.assert_array_equal(out[~erased], image[..., 0][~erased])
    rows, cols = np.flatnonzero(erased.any(1)), np.flatnonzero(erased.any(0))
    assert erased.sum() == len(rows) * len(cols)  # a rectangle:
    assert np.all(erased[rows.min():rows.max() + 1, cols.min():cols.max() + 1])
    assert 0.05 <= erased.mean() <= 0.4
  np.testing.assert_array_equal(np.asarray(_op("random_erasing", p=0.0)(KEY, image)), image)


def test_elastic_zero_strength_is_identity():
  image = _rgb((8, 8, 1))
  np.testing.assert_allclose(np.asarray(_op("elastic", alpha=0.0)(KEY, image)), image, atol=1e-6)
  assert not np.allclose(np.asarray(_op("elastic", alpha=3.0)(KEY, image)), image)


def test_normalize_exact():
  image = _rgb((4, 4, 3))
  mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 2.0)
  out = np.asarray(_op("normalize", mean=mean, std=std)(KEY, image))
  np.testing.assert_allclose(out, (image - np.array(mean)) / np.array(std), rtol=1e-6, atol=1e-7)
  with pytest.raises(ValueError, match="one per channel"):
    augment.normalize(KEY, image, mean=(0.1, 0.2), std=1.0)


def test_bad_parameter_values_raise():
  image = _rgb((8, 8, 1))
  for name, kwargs in [("flip_lr", dict(p=1.5)), ("random_affine", dict(translate=2.0)),
                       ("random_resized_crop", dict(size=0)), ("gaussian_blur", dict(sigma=-1.0)),
                       ("random_crop", dict(size=12)), ("random_affine", dict(scale=0.9)),
                       ("random_erasing", dict(value="noise"))]:
    with pytest.raises(ValueError, match=name):
      augment.OPS[name](KEY, image, **kwargs)


# ---------------------------------------------------------------------------------------------
# Recipe parsing.


def test_parse_recipe_ops_and_arguments():
  recipe = augment.parse_recipe(
      "random_resized_crop(8, scale=(0.5, 1.0)) |\n flip_lr | normalize(mean=[0.5], std=0.5)")
  assert recipe.ops == (
      ("random_resized_crop", {"size": 8, "scale": (0.5, 1.0)}),
      ("flip_lr", {}),
      ("normalize", {"mean": [0.5], "std": 0.5}),
  )
  assert augment.parse_recipe("  ").ops == ()
  image = _rgb((4, 4, 1))
  np.testing.assert_array_equal(np.asarray(augment.parse_recipe("")(KEY, image)), image)


def test_parse_recipe_applies_ops_in_order():
  image = _rgb((4, 4, 1))
  out = augment.parse_recipe("flip_lr(p=1.0)|normalize(0.5, 0.5)|solarize(p=1.0, threshold=0)")
  normalized = (image[:, ::-1] - 0.5) / 0.5
  np.testing.assert_allclose(np.asarray(out(KEY, image)),
                             np.where(normalized < 0, normalized, 1.0 - normalized), atol=1e-6)


@pytest.mark.parametrize("spec, message", [
    ("flip_lr|rotate(10)", r"unknown augmentation op 'rotate'.*valid ops: .*random_affine"),
    ("flip_lr(prob=0.5)", r"unknown argument 'prob' for augmentation op 'flip_lr'.*valid.*: p"),
    ("normalize(0.5)", r"'normalize'.*std.*valid arguments: mean, std"),
    ("flip_lr(1, 2)", r"'flip_lr'.*valid arguments: p"),
    ("flip_lr(p=x)", r"flip_lr: argument 'x' is not a Python literal"),
    ("flip_lr(p=1 + 1j * y)", "not a Python literal"),
    ("__import__('os').system('true')", "cannot parse recipe element"),
    ("flip_lr(", "cannot parse augmentation recipe"),
    ("flip_lr & solarize", "cannot parse recipe element"),
    ("flip_lr(**{'p': 1})", r"\*\*kwargs"),
])
def test_parse_recipe_errors(spec, message):
  with pytest.raises(ValueError, match=message):
    augment.parse_recipe(spec)
