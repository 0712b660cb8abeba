"""SimCLR on CIFAR-10 (Chen et al., 2020, appendix B.9), for a GPU/TPU.

  ssl-jax pretrain --config experiments/simclr_cifar10.py            # ResNet-18, CIFAR stem
  ssl-jax pretrain --config experiments/simclr_cifar10.py:resnet50   # the paper's ResNet-50
  ssl-jax pretrain --config experiments/simclr_cifar10.py:runlocal   # tiny, for a smoke check

Recipe: ResNet-18 with the CIFAR stem (3x3 conv, no max-pool) as solo-learn and lightly use,
or ResNet-50 (CIFAR stem) as the paper's appendix B.9; batch 512; LARS with learning rate
1.0 x B/256, momentum 0.9, weight decay 1e-6 (biases and BatchNorm excluded), 10 warmup epochs then
cosine; temperature 0.5; 800 epochs; projector 2048-128; views: random resized crop (0.08-1),
flip, colour jitter of strength 0.5 with p=0.8, grayscale p=0.2, no blur (as the paper for CIFAR).
Data: ``tfds:cifar10`` read from ArrayRecord (prepare it once with ``tfds build cifar10
--file_format=array_record`` where the machine has internet).
"""

from ssl_jax import recipes


def get_config(arg: str | None = None):
  c = recipes.cifar10_config("simclr")
  c.method_kwargs.update(dict(temperature=0.5, proj_hidden_dim=2048, proj_dim=128,
                              proj_layers=2))
  c.views.a = c.views.b = recipes.simclr_view(32, normalize=recipes.CIFAR_NORMALIZE)
  c.batch_size = 512
  c.epochs = 800
  c.optimizer.update(name="lars", lr=1.0, lr_scaling="linear", weight_decay=1e-6, momentum=0.9,
                     warmup_epochs=10.0)
  c.checkpoint.every_steps = 2000
  if arg == "resnet50":
    c.encoder = "resnet50"
  elif arg == "runlocal":
    recipes.runlocal(c, proj_hidden_dim=64, proj_dim=16)
  elif arg:
    raise ValueError(f"simclr_cifar10: unknown argument {arg!r}; valid: resnet50, runlocal")
  return c
