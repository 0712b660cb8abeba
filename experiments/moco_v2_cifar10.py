"""MoCo v2 on CIFAR-10, for a GPU/TPU.

  ssl-jax pretrain --config experiments/moco_v2_cifar10.py            # ResNet-18, CIFAR stem
  ssl-jax pretrain --config experiments/moco_v2_cifar10.py:symmetric  # symmetrized loss
  ssl-jax pretrain --config experiments/moco_v2_cifar10.py:runlocal   # tiny, for a smoke check

The MoCo papers train on ImageNet only; this follows the official CIFAR-10 demo of
facebookresearch/moco (``colab/moco_cifar10_demo.ipynb``): ResNet-18 with the CIFAR stem (3x3
conv, no max-pool); queue K = 4096; momentum 0.99; temperature 0.1; batch 512; SGD with momentum
0.9, learning rate 0.06 (= 0.03 x B/256) and weight decay 5e-4 on every parameter, cosine schedule
without warmup; 200 epochs (the demo reports 82.6% kNN accuracy, 85.3% with the symmetric loss,
which "behaves like 2x epochs"). Views as the demo: random resized crop 32 (scale 0.08-1), flip,
colour jitter (0.4, 0.4, 0.4, 0.1) with p = 0.8, grayscale p = 0.2, no blur. Deviations from the
demo: MoCo v2's MLP head (512-ReLU-128) instead of the demo's linear one, and BatchNorm synced over
the global batch instead of the demo's 8-way split BatchNorm with shuffled keys (see
:mod:`ssl_jax.methods.moco_v2`).

Data: ``tfds:cifar10`` read from ArrayRecord (prepare it once with ``tfds build cifar10
--file_format=array_record`` where the machine has internet).
"""

from ssl_jax import recipes

# The demo's normalization constants.
CIFAR_STD = (0.2023, 0.1994, 0.2010)
NORMALIZE = recipes.normalize(recipes.CIFAR_MEAN, CIFAR_STD)


def get_config(arg: str | None = None):
  c = recipes.cifar10_config("moco_v2", normalize=NORMALIZE)
  c.method_kwargs.update(dict(temperature=0.1, queue_size=4096, momentum=0.99,
                              proj_hidden_dim=512, proj_dim=128, proj_layers=2, symmetric=False))
  c.views.a = c.views.b = recipes.simclr_view(32, normalize=NORMALIZE)
  c.batch_size = 512
  c.epochs = 200
  c.optimizer.update(name="sgd", lr=0.03, lr_scaling="linear", weight_decay=5e-4, momentum=0.9,
                     warmup_epochs=0.0, exclude_bias_and_norm=False)
  c.checkpoint.every_steps = 2000
  if arg == "symmetric":
    c.method_kwargs.symmetric = True
  elif arg == "runlocal":
    recipes.runlocal(c, queue_size=64, proj_hidden_dim=64, proj_dim=16)
  elif arg:
    raise ValueError(f"moco_v2_cifar10: unknown argument {arg!r}; valid: symmetric, runlocal")
  return c
