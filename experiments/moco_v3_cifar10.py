"""MoCo v3 with a ResNet on CIFAR-10, for a GPU/TPU.

  ssl-jax pretrain --config experiments/moco_v3_cifar10.py            # ResNet-18, CIFAR stem
  ssl-jax pretrain --config experiments/moco_v3_cifar10.py:runlocal   # tiny, for a smoke check

The paper (Chen, Xie & He, 2021, arXiv:2104.02057) pretrains on ImageNet only; this carries its
ResNet-50 recipe (appendix; official ``CONFIG.md``, 300 epochs: ``--lr=.3 --epochs=300
--moco-m-cos --crop-min=.2`` with the defaults ``--moco-t=1.0 --moco-m=0.99 --wd=1e-6
--warmup-epochs=10 --optimizer=lars``) to CIFAR-10, as ``simclr_cifar10.py`` does for SimCLR:
ResNet-18 with the CIFAR stem (3x3 conv, no max-pool); projector 2 layers 4096-256 (BatchNorm
without affine on the output) and predictor 2 layers 4096-256, no biases; temperature 1.0;
momentum 0.99 cosine to 1; batch 512; LARS (trust coefficient 0.001, biases and BatchNorm excluded
from weight decay and adaptation, as the official LARS) with learning rate 0.3 x B/256, weight decay
1e-6, momentum 0.9, 10 warmup epochs then cosine; 300 epochs. Views: BYOL's asymmetric pair at
32x32 with crop scale (0.2, 1) and no blur (as SimCLR's CIFAR-10 recipe, appendix B.9): colour
jitter (0.4, 0.4, 0.2, 0.1) with p = 0.8, grayscale p = 0.2, solarization p = 0 /
0.2, flip.

Data: ``tfds:cifar10`` read from ArrayRecord (prepare it once with ``tfds build cifar10
--file_format=array_record`` where the machine has internet).
"""

from ssl_jax import recipes


def get_config(arg: str | None = None):
  c = recipes.cifar10_config("moco_v3")
  c.method_kwargs.update(dict(temperature=1.0, base_momentum=0.99, final_momentum=1.0,
                              proj_hidden_dim=4096, proj_dim=256, proj_layers=2,
                              pred_hidden_dim=4096, pred_layers=2))
  c.views.a, c.views.b = recipes.moco_v3_views(32, min_scale=0.2, blur=False,
                                               normalize=recipes.CIFAR_NORMALIZE)
  c.batch_size = 512
  c.epochs = 300
  c.optimizer.update(name="lars", lr=0.3, lr_scaling="linear", weight_decay=1e-6, momentum=0.9,
                     trust_coefficient=0.001, warmup_epochs=10.0, exclude_bias_and_norm=True)
  c.checkpoint.every_steps = 2000
  if arg == "runlocal":
    recipes.runlocal(c, proj_hidden_dim=64, proj_dim=16, pred_hidden_dim=64)
  elif arg:
    raise ValueError(f"moco_v3_cifar10: unknown argument {arg!r}; valid: runlocal")
  return c
