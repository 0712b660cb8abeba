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

from ssl_jax.config import base_config

# The demo's normalization constants.
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)
NORMALIZE = f"normalize(mean={CIFAR_MEAN}, std={CIFAR_STD})"
VIEW = ("random_resized_crop(size=32, scale=(0.08, 1.0))|flip_lr(p=0.5)"
        "|color_jitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, p=0.8)"
        f"|grayscale(p=0.2)|{NORMALIZE}")


def get_config(arg: str | None = None):
  c = base_config()
  c.method = "moco_v2"
  c.method_kwargs.update(dict(temperature=0.1, queue_size=4096, momentum=0.99,
                              proj_hidden_dim=512, proj_dim=128, proj_layers=2, symmetric=False))
  c.dataset = "tfds:cifar10"
  c.train_split, c.test_split = "train", "test"
  c.encoder = "resnet18"
  c.encoder_kwargs.stem = "cifar"
  c.views.a = VIEW
  c.views.b = VIEW
  c.eval_preprocess = NORMALIZE
  c.batch_size = 512
  c.epochs = 200
  c.compute_dtype = "bfloat16"
  c.optimizer.update(name="sgd", lr=0.03, lr_scaling="linear", weight_decay=5e-4, momentum=0.9,
                     warmup_epochs=0.0, exclude_bias_and_norm=False)
  c.checkpoint.every_steps = 2000
  c.log.every_steps = 50
  c.eval.budgets = (1, 5, 10, "1%", "10%", "all")
  c.eval.batch_size = 1024
  if arg == "symmetric":
    c.method_kwargs.symmetric = True
  elif arg == "runlocal":
    c.encoder = "resnet_tiny"
    c.compute_dtype = "float32"
    c.batch_size = 16
    c.total_steps = 2
    c.method_kwargs.update(queue_size=64, proj_hidden_dim=64, proj_dim=16)
    c.eval.budgets = (1, "all")
    c.eval.num_draws = 2
    c.eval.batch_size = 64
  elif arg:
    raise ValueError(f"moco_v2_cifar10: unknown argument {arg!r}; valid: symmetric, runlocal")
  return c
