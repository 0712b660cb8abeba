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

from ssl_jax import recipes


def get_config(arg: str | None = None):
  c = recipes.cifar10_config("vicreg")
  c.method_kwargs.update(dict(
      sim_weight=25.0, var_weight=25.0, cov_weight=1.0, eps=1e-4, proj_hidden_dim=2048,
      proj_dim=2048, proj_layers=3))
  c.views.a = c.views.b = recipes.byol_view(32, blur_p=0.0, solarize_p=0.1, min_scale=0.2,
                                            normalize=recipes.CIFAR_NORMALIZE)
  c.batch_size = 256
  c.epochs = 1000
  c.optimizer.update(name="lars", lr=0.3, lr_scaling="linear", base_batch=256,
                     weight_decay=1e-4, momentum=0.9, trust_coefficient=0.02,
                     warmup_epochs=10.0, exclude_bias_and_norm=True)
  if arg == "runlocal":
    recipes.runlocal(c, proj_hidden_dim=64, proj_dim=64)
  elif arg:
    raise ValueError(f"vicreg_cifar10: unknown argument {arg!r}; valid: runlocal")
  return c
