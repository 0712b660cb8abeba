"""VICReg on CIFAR-10, for a GPU/TPU.

  ssl-jax pretrain --config experiments/vicreg_cifar10.py            # ResNet-18, CIFAR stem
  ssl-jax pretrain --config experiments/vicreg_cifar10.py:runlocal   # tiny, smoke check

The VICReg paper (Bardes et al., 2022) pretrains on ImageNet only, so this is the paper's method
(expander with a bias-free output layer, weights 25 / 25 / 1) with the CIFAR-10 hyperparameters
of solo-learn's ``scripts/pretrain/cifar/vicreg.yaml`` (da Costa et al., 2022, JMLR 23(56)), the
commonly reproduced CIFAR setting:

* ResNet-18 with the CIFAR stem (3x3 conv, no max-pool), 512-d representation; expander
  2048-2048-2048.
* Batch 256; LARS (momentum 0.9, trust coefficient 0.02, biases and BatchNorm parameters excluded
  from weight decay and adaptation) with learning rate ``0.3 x B / 256``, 10 warmup epochs then
  cosine decay; weight decay 1e-4; 1000 epochs.
* Views (solo-learn's for VICReg, the same for both views): random resized crop (area 0.2-1),
  flip, colour jitter p=0.8 (0.4, 0.4, 0.2, 0.1), grayscale p=0.2, solarization p=0.1, no blur.

Deviations: solo-learn's LARS clips the adapted learning rate (LARC ``clip_lr``); the optax LARS
used here does not. Data: ``tfds:cifar10`` read from ArrayRecord (prepare it once with ``tfds
build cifar10 --file_format=array_record``).
"""

import ml_collections

from ssl_jax.config import base_config

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
NORMALIZE = f"normalize(mean={CIFAR_MEAN}, std={CIFAR_STD})"
VIEW = "|".join([
    "random_resized_crop(size=32, scale=(0.2, 1.0))", "flip_lr(p=0.5)",
    "color_jitter(brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1, p=0.8)",
    "grayscale(p=0.2)", "solarize(p=0.1)", NORMALIZE])


def get_config(arg: str | None = None):
  c = base_config()
  c.method = "vicreg"
  c.method_kwargs = ml_collections.ConfigDict(dict(
      sim_weight=25.0, var_weight=25.0, cov_weight=1.0, eps=1e-4, proj_hidden_dim=2048,
      proj_dim=2048, proj_layers=3))
  c.dataset = "tfds:cifar10"
  c.train_split, c.test_split = "train", "test"
  c.encoder = "resnet18"
  c.encoder_kwargs.stem = "cifar"
  c.views.a = VIEW
  c.views.b = VIEW
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
    raise ValueError(f"vicreg_cifar10: unknown argument {arg!r}; valid: runlocal")
  return c
