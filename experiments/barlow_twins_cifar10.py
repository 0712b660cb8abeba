"""Barlow Twins on CIFAR-10, for a GPU/TPU.

  ssl-jax pretrain --config experiments/barlow_twins_cifar10.py            # ResNet-18, CIFAR stem
  ssl-jax pretrain --config experiments/barlow_twins_cifar10.py:runlocal   # tiny, smoke check

The Barlow Twins paper (Zbontar et al., 2021) pretrains on ImageNet only, so this is the paper's
method (projector without a biased output layer, ``lambda = 0.0051``) with the CIFAR-10
hyperparameters of solo-learn's ``scripts/pretrain/cifar/barlow.yaml`` (da Costa et al., 2022,
JMLR 23(56)), the commonly reproduced CIFAR setting:

* ResNet-18 with the CIFAR stem (3x3 conv, no max-pool), 512-d representation; projector
  2048-2048-2048; loss scaled by 0.1 (solo-learn's ``scale_loss``).
* Batch 256; LARS (momentum 0.9, trust coefficient 0.02, biases and BatchNorm parameters excluded
  from weight decay and adaptation) with learning rate ``0.3 x B / 256``, 10 warmup epochs then
  cosine decay; weight decay 1e-4; 1000 epochs.
* Views: BYOL's table 6 at 32x32 without the Gaussian blur (solo-learn's ``asymmetric``
  augmentations): random resized crop (area 0.08-1), flip, colour jitter p=0.8 (0.4, 0.4, 0.2,
  0.1), grayscale p=0.2, solarization p=0.0 / 0.2 on the two views.

Deviations: solo-learn's LARS clips the adapted learning rate (LARC ``clip_lr``) and its
projector's last layer has a bias (which the loss's batch standardization cancels); the optax LARS
used here does not clip. Data: ``tfds:cifar10`` read from ArrayRecord (prepare it once with
``tfds build cifar10 --file_format=array_record``).
"""

import ml_collections

from ssl_jax.config import base_config

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
NORMALIZE = f"normalize(mean={CIFAR_MEAN}, std={CIFAR_STD})"


def view(*, solarize_p: float) -> str:
  """solo-learn's asymmetric CIFAR views (BYOL's table 6 at 32x32 without blur)."""
  return "|".join([
      "random_resized_crop(size=32, scale=(0.08, 1.0))", "flip_lr(p=0.5)",
      "color_jitter(brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1, p=0.8)",
      "grayscale(p=0.2)", f"solarize(p={solarize_p})", NORMALIZE])


def get_config(arg: str | None = None):
  c = base_config()
  c.method = "barlow_twins"
  c.method_kwargs = ml_collections.ConfigDict(dict(
      lambda_=0.0051, scale_loss=0.1, proj_hidden_dim=2048, proj_dim=2048, proj_layers=3))
  c.dataset = "tfds:cifar10"
  c.train_split, c.test_split = "train", "test"
  c.encoder = "resnet18"
  c.encoder_kwargs.stem = "cifar"
  c.views.a = view(solarize_p=0.0)
  c.views.b = view(solarize_p=0.2)
  c.eval_preprocess = NORMALIZE
  c.batch_size = 256
  c.epochs = 1000
  c.compute_dtype = "bfloat16"
  c.optimizer.update(name="lars", lr=0.3, lr_scaling="linear", base_batch=256,
                     weight_decay=1e-4, momentum=0.9, trust_coefficient=0.02,
                     warmup_epochs=10.0, exclude_bias_and_norm=True)
  c.checkpoint.every_steps = 5000
  c.log.every_steps = 50
  c.eval.budgets = (1, 5, 10, "1%", "10%", "all")
  c.eval.batch_size = 1024
  if arg == "runlocal":
    c.encoder = "resnet_tiny"
    c.compute_dtype = "float32"
    c.batch_size = 16
    c.total_steps = 2
    c.method_kwargs.update(dict(proj_hidden_dim=64, proj_dim=64))
    c.eval.budgets = (1, "all")
    c.eval.num_draws = 2
    c.eval.batch_size = 64
  elif arg:
    raise ValueError(f"barlow_twins_cifar10: unknown argument {arg!r}; valid: runlocal")
  return c
