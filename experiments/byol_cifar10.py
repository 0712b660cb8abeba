"""BYOL on CIFAR-10, for a GPU/TPU.

  ssl-jax pretrain --config experiments/byol_cifar10.py            # ResNet-18, CIFAR stem
  ssl-jax pretrain --config experiments/byol_cifar10.py:runlocal   # tiny, for a smoke check

The BYOL paper (Grill et al., 2020) pretrains on ImageNet only (CIFAR-10 appears as a transfer
task), so this is the paper's method and view recipe at 32x32 with the CIFAR-10 hyperparameters
of solo-learn's ``scripts/pretrain/cifar/byol.yaml`` (da Costa et al., 2022, JMLR 23(56),
"solo-learn: A Library of Self-supervised Methods for Visual Representation Learning"), the
commonly reproduced CIFAR setting:

* ResNet-18 with the CIFAR stem (3x3 conv, no max-pool), 512-d representation; projector and
  predictor ``Linear(4096) - BN - ReLU - Linear(256)`` as the paper (section 3.3).
* Batch 256; LARS (momentum 0.9, trust coefficient 0.02, biases and BatchNorm parameters excluded
  from weight decay and adaptation) with learning rate ``1.0 x B / 256``, 10 warmup epochs then
  cosine decay; weight decay 1e-5; 1000 epochs.
* Target EMA ``tau_base = 0.99`` with the paper's cosine schedule to 1 (section 3.2; the paper's
  0.996 is for 1000 ImageNet epochs of 312 steps at batch 4096, solo-learn uses 0.99 on CIFAR).
* Views: the paper's table 6 at 32x32 (random resized crop, area 0.08-1; flip; colour jitter
  p=0.8 with brightness 0.4, contrast 0.4, saturation 0.2, hue 0.1; grayscale p=0.2; solarization
  p=0.0 / 0.2 on the two views) without the Gaussian blur (p=1.0 / 0.1 in table 6): blurring 32x32
  images hurts, and SimCLR (appendix B.9), SimSiam (appendix D) and solo-learn all drop it on
  CIFAR. ``:paper_blur`` puts the table's asymmetric blur back.

Deviation: solo-learn's LARS clips the adapted learning rate (LARC ``clip_lr``); the optax LARS
used here does not. Data: ``tfds:cifar10`` read from ArrayRecord (prepare it once with ``tfds
build cifar10 --file_format=array_record``).
"""

from ssl_jax.config import base_config

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
NORMALIZE = f"normalize(mean={CIFAR_MEAN}, std={CIFAR_STD})"


def byol_view(*, blur_p: float, solarize_p: float) -> str:
  """One of BYOL's two views (table 6) at 32x32; ``blur_p=0`` leaves the blur out."""
  ops = ["random_resized_crop(size=32, scale=(0.08, 1.0))", "flip_lr(p=0.5)",
         "color_jitter(brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1, p=0.8)",
         "grayscale(p=0.2)"]
  if blur_p:
    ops.append(f"gaussian_blur(p={blur_p}, sigma=(0.1, 2.0))")
  ops += [f"solarize(p={solarize_p})", NORMALIZE]
  return "|".join(ops)


def get_config(arg: str | None = None):
  c = base_config()
  c.method = "byol"
  c.method_kwargs.update(dict(proj_hidden_dim=4096, proj_dim=256, pred_hidden_dim=4096,
                              base_momentum=0.99))
  c.dataset = "tfds:cifar10"
  c.train_split, c.test_split = "train", "test"
  c.encoder = "resnet18"
  c.encoder_kwargs.stem = "cifar"
  c.views.a = byol_view(blur_p=0.0, solarize_p=0.0)
  c.views.b = byol_view(blur_p=0.0, solarize_p=0.2)
  c.eval_preprocess = NORMALIZE
  c.batch_size = 256
  c.epochs = 1000
  c.compute_dtype = "bfloat16"
  c.optimizer.update(name="lars", lr=1.0, lr_scaling="linear", base_batch=256,
                     weight_decay=1e-5, momentum=0.9, trust_coefficient=0.02,
                     warmup_epochs=10.0, exclude_bias_and_norm=True)
  c.checkpoint.every_steps = 5000
  c.log.every_steps = 50
  c.eval.budgets = (1, 5, 10, "1%", "10%", "all")
  c.eval.batch_size = 1024
  if arg == "paper_blur":
    c.views.a = byol_view(blur_p=1.0, solarize_p=0.0)
    c.views.b = byol_view(blur_p=0.1, solarize_p=0.2)
  elif arg == "runlocal":
    c.encoder = "resnet_tiny"
    c.compute_dtype = "float32"
    c.batch_size = 16
    c.total_steps = 2
    c.method_kwargs.update(dict(proj_hidden_dim=64, proj_dim=16, pred_hidden_dim=64))
    c.eval.budgets = (1, "all")
    c.eval.num_draws = 2
    c.eval.batch_size = 64
  elif arg:
    raise ValueError(f"byol_cifar10: unknown argument {arg!r}; valid: paper_blur, runlocal")
  return c
