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

from ssl_jax.config import base_config

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
NORMALIZE = f"normalize(mean={CIFAR_MEAN}, std={CIFAR_STD})"
VIEW = ("random_resized_crop(size=32, scale=(0.08, 1.0))|flip_lr(p=0.5)"
        "|color_jitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, p=0.8)"
        f"|grayscale(p=0.2)|{NORMALIZE}")


def get_config(arg: str | None = None):
  c = base_config()
  c.method = "simclr"
  c.method_kwargs.update(dict(temperature=0.5, proj_hidden_dim=2048, proj_dim=128,
                             proj_layers=2))
  c.dataset = "tfds:cifar10"
  c.train_split, c.test_split = "train", "test"
  c.encoder = "resnet18"
  c.encoder_kwargs.stem = "cifar"
  c.views.a = VIEW
  c.views.b = VIEW
  c.eval_preprocess = NORMALIZE
  c.batch_size = 512
  c.epochs = 800
  c.compute_dtype = "bfloat16"
  c.optimizer.update(name="lars", lr=1.0, lr_scaling="linear", weight_decay=1e-6, momentum=0.9,
                     warmup_epochs=10.0)
  c.checkpoint.every_steps = 2000
  c.log.every_steps = 50
  c.eval.budgets = (1, 5, 10, "1%", "10%", "all")
  c.eval.batch_size = 1024
  if arg == "resnet50":
    c.encoder = "resnet50"
  elif arg == "runlocal":
    c.encoder = "resnet_tiny"
    c.compute_dtype = "float32"
    c.batch_size = 16
    c.total_steps = 2
    c.method_kwargs.proj_hidden_dim = 64
    c.method_kwargs.proj_dim = 16
    c.eval.budgets = (1, "all")
    c.eval.num_draws = 2
    c.eval.batch_size = 64
  elif arg:
    raise ValueError(f"simclr_cifar10: unknown argument {arg!r}; valid: resnet50, runlocal")
  return c
