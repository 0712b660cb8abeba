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

from ssl_jax import recipes


def get_config(arg: str | None = None):
  c = recipes.cifar10_config("byol")
  c.method_kwargs.update(dict(proj_hidden_dim=4096, proj_dim=256, pred_hidden_dim=4096,
                              base_momentum=0.99))
  c.views.a, c.views.b = recipes.byol_views(32, blur=False, normalize=recipes.CIFAR_NORMALIZE)
  c.batch_size = 256
  c.epochs = 1000
  c.optimizer.update(name="lars", lr=1.0, lr_scaling="linear", base_batch=256,
                     weight_decay=1e-5, momentum=0.9, trust_coefficient=0.02,
                     warmup_epochs=10.0, exclude_bias_and_norm=True)
  if arg == "paper_blur":
    c.views.a, c.views.b = recipes.byol_views(32, blur=True, normalize=recipes.CIFAR_NORMALIZE)
  elif arg == "runlocal":
    recipes.runlocal(c, proj_hidden_dim=64, proj_dim=16, pred_hidden_dim=64)
  elif arg:
    raise ValueError(f"byol_cifar10: unknown argument {arg!r}; valid: paper_blur, runlocal")
  return c
