"""Tests for ssl_jax.recipes: the view builders write valid recipes with the papers' ops in order,
the base configs pass validation, and ``runlocal`` shrinks a run."""

import pytest

from ssl_jax import augment
from ssl_jax import config as config_lib
from ssl_jax import recipes

NORM = recipes.CIFAR_NORMALIZE


def _ops(spec: str) -> list[str]:
  """The op names of a recipe, parsed (so unknown ops or bad arguments fail here)."""
  return [name for name, _ in augment.parse_recipe(spec).ops]


def _kwargs(spec: str, op: str) -> dict:
  return dict(augment.parse_recipe(spec).ops)[op]


def test_normalize_strings():
  assert _kwargs(recipes.IMAGENET_NORMALIZE, "normalize") == dict(
      mean=recipes.IMAGENET_MEAN, std=recipes.IMAGENET_STD)
  assert _kwargs(NORM, "normalize") == dict(mean=recipes.CIFAR_MEAN, std=recipes.CIFAR_STD)
  assert _ops(recipes.imagenet_eval_preprocess(224)) == ["center_crop", "normalize"]
  assert _kwargs(recipes.imagenet_eval_preprocess(56), "center_crop") == dict(size=56)


@pytest.mark.parametrize("blur_p, has_blur", [(0.0, False), (0.1, True), (1.0, True)])
def test_byol_view_blur_only_when_asked(blur_p, has_blur):
  spec = recipes.byol_view(32, blur_p=blur_p, solarize_p=0.2, normalize=NORM)
  blur = ["gaussian_blur"] if has_blur else []
  assert _ops(spec) == (["random_resized_crop", "flip_lr", "color_jitter", "grayscale"] + blur
                        + ["solarize", "normalize"])
  assert _kwargs(spec, "random_resized_crop") == dict(size=32, scale=(0.08, 1.0))
  if has_blur:
    assert _kwargs(spec, "gaussian_blur") == dict(p=blur_p, sigma=(0.1, 2.0))


def test_byol_view_min_scale():
  spec = recipes.byol_view(32, blur_p=0.0, solarize_p=0.1, normalize=NORM, min_scale=0.2)
  assert _kwargs(spec, "random_resized_crop") == dict(size=32, scale=(0.2, 1.0))


def test_byol_views_are_table_6_pair():
  a, b = recipes.byol_views(224, blur=True, normalize=recipes.IMAGENET_NORMALIZE)
  assert (_kwargs(a, "gaussian_blur")["p"], _kwargs(b, "gaussian_blur")["p"]) == (1.0, 0.1)
  assert (_kwargs(a, "solarize")["p"], _kwargs(b, "solarize")["p"]) == (0.0, 0.2)
  a, b = recipes.byol_views(32, blur=False, normalize=NORM)
  assert "gaussian_blur" not in _ops(a) + _ops(b)
  assert a == recipes.byol_view(32, blur_p=0.0, solarize_p=0.0, normalize=NORM)


def test_aug_plus_and_simclr_view():
  with_blur = recipes.aug_plus(224, blur_p=0.5, normalize=recipes.IMAGENET_NORMALIZE)
  assert _ops(with_blur) == ["random_resized_crop", "color_jitter", "grayscale", "gaussian_blur",
                             "flip_lr", "normalize"]
  assert _kwargs(with_blur, "random_resized_crop") == dict(size=224, scale=(0.2, 1.0))
  assert "gaussian_blur" not in _ops(recipes.aug_plus(32, blur_p=0.0, normalize=NORM))
  simclr = recipes.simclr_view(32, normalize=NORM)
  assert _ops(simclr) == ["random_resized_crop", "flip_lr", "color_jitter", "grayscale",
                          "normalize"]
  assert _kwargs(simclr, "color_jitter")["saturation"] == 0.4  # strength 0.5: 0.8 x 0.5


def test_moco_v3_views_flip_last():
  a, b = recipes.moco_v3_views(224, min_scale=0.08, blur=True, normalize=NORM)
  assert _ops(a) == ["random_resized_crop", "color_jitter", "grayscale", "gaussian_blur",
                     "flip_lr", "normalize"]
  assert _ops(b) == ["random_resized_crop", "color_jitter", "grayscale", "gaussian_blur",
                     "solarize", "flip_lr", "normalize"]
  a, b = recipes.moco_v3_views(32, min_scale=0.2, blur=False, normalize=NORM)
  assert "gaussian_blur" not in _ops(a) + _ops(b)
  assert _kwargs(b, "random_resized_crop") == dict(size=32, scale=(0.2, 1.0))


@pytest.mark.parametrize("make", [lambda: recipes.cifar10_config("byol"),
                                  lambda: recipes.imagenet_config("byol")])
def test_base_configs_validate(make):
  c = make()
  assert c.method == "byol" and c.compute_dtype == "bfloat16"
  config_lib.validate(c)
  _ops(c.eval_preprocess)


def test_imagenet_config_stem():
  assert recipes.imagenet_config("byol").encoder_kwargs.stem == "imagenet"
  assert "stem" not in recipes.imagenet_config("moco_v2", stem=None).encoder_kwargs


def test_runlocal_shrinks():
  c = recipes.cifar10_config("byol")
  c.method_kwargs.update(dict(proj_hidden_dim=4096, proj_dim=256))
  assert recipes.runlocal(c, proj_dim=16) is c
  assert (c.encoder, c.compute_dtype, c.batch_size, c.total_steps) == (
      "resnet_tiny", "float32", 16, 2)
  assert dict(c.method_kwargs) == dict(proj_hidden_dim=4096, proj_dim=16)
  assert (c.eval.budgets, c.eval.num_draws, c.eval.batch_size) == ((1, "all"), 2, 64)
  assert recipes.runlocal(recipes.imagenet_config("moco_v3"), encoder="vit_micro").encoder == (
      "vit_micro")
