"""SimSiam on CIFAR-10 (Chen & He, 2021, appendix D), for a GPU.

  ssl-jax pretrain --config experiments/simsiam_cifar10.py            # ResNet-18, CIFAR stem
  ssl-jax pretrain --config experiments/simsiam_cifar10.py:runlocal   # tiny, for a smoke check

Recipe (appendix D: "similar to that in ImageNet"):

* The CIFAR variant of ResNet-18 (3x3 stem conv, no max-pool), 512-d representation, followed by
  a 2-layer projection MLP with 2048-d outputs (BN on both layers, the output BN without affine
  parameters as the official ``builder.py``), and the bottleneck predictor 2048-512-2048.
* Batch 512; SGD with momentum 0.9, base learning rate 0.03 scaled as ``lr x B / 256`` (= 0.06),
  cosine decay, no warmup; weight decay 5e-4 on every parameter (PyTorch's SGD ``weight_decay``,
  as the official code); 800 epochs.
* Views: the ImageNet ones (MoCo v2's, section 3 / ``main_simsiam.py``) at 32x32 without blur:
  random resized crop (area 0.2-1), colour jitter p=0.8 (brightness 0.4, contrast 0.4,
  saturation 0.4, hue 0.1), grayscale p=0.2, flip p=0.5.

Deviation (engine): the ImageNet recipe's fixed predictor learning rate (table 1, ``--fix-pred-lr``)
is not implemented; the predictor follows the cosine schedule like every other parameter (the
paper's table 1: 67.7% instead of 68.1% on ImageNet). Appendix D does not say whether it was used
on CIFAR. Data: ``tfds:cifar10`` from ArrayRecord (``tfds build cifar10
--file_format=array_record``).
"""

from ssl_jax import recipes


def get_config(arg: str | None = None):
  c = recipes.cifar10_config("simsiam")
  c.method_kwargs.update(dict(proj_hidden_dim=2048, proj_dim=2048, proj_layers=2,
                              proj_output_norm="bn_noaffine", pred_hidden_dim=512,
                              stop_gradient=True))
  c.views.a = c.views.b = recipes.aug_plus(32, blur_p=0.0, normalize=recipes.CIFAR_NORMALIZE)
  c.batch_size = 512
  c.epochs = 800
  c.optimizer.update(name="sgd", lr=0.03, lr_scaling="linear", base_batch=256,
                     weight_decay=5e-4, momentum=0.9, nesterov=False, warmup_epochs=0.0,
                     warmup_steps=0, exclude_bias_and_norm=False)
  if arg == "runlocal":
    recipes.runlocal(c, proj_hidden_dim=64, proj_dim=64, pred_hidden_dim=16)
  elif arg:
    raise ValueError(f"simsiam_cifar10: unknown argument {arg!r}; valid: runlocal")
  return c
