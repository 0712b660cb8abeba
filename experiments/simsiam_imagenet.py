"""SimSiam on ImageNet (Chen & He, 2021, section 3 "Baseline settings"), for GPUs/TPUs.

  ssl-jax pretrain --config experiments/simsiam_imagenet.py            # ResNet-50, 100 epochs
  ssl-jax pretrain --config experiments/simsiam_imagenet.py:runlocal   # tiny, for a smoke check

Recipe (section 3, and ``main_simsiam.py`` / ``builder.py`` of facebookresearch/simsiam):

* ResNet-50 (ImageNet stem, last BatchNorm of each residual block zero-initialized as the
  official code), 2048-d representation; projection MLP of 3 layers, 2048 wide, BN on every layer
  including the output (without affine parameters there, as the official code), ReLU on the hidden
  ones; prediction MLP 2048-512-2048 with BN on its hidden layer only.
* Batch 512; SGD with momentum 0.9, learning rate ``0.05 x B / 256`` (= 0.1), cosine decay without
  warmup, weight decay 1e-4 on every parameter (PyTorch's SGD ``weight_decay``); 100 epochs.
* Views (MoCo v2's augmentation): random resized crop to 224 (area 0.2-1), colour jitter p=0.8
  (brightness 0.4, contrast 0.4, saturation 0.4, hue 0.1), grayscale p=0.2, Gaussian blur p=0.5
  (sigma 0.1-2), flip p=0.5; ImageNet mean/std normalization.
* BatchNorm synced over all devices (the paper uses SyncBN), compute in bfloat16.

Deviations: (1) the fixed learning rate of the predictor (table 1: 68.1% vs 67.7% with the
decayed one, ``--fix-pred-lr`` in the official code) is not implemented: the predictor follows the
cosine schedule like every other parameter. (2) ``data.image_size=256`` resizes images on the
host (shorter side 256, then a 256x256 center crop) so batches have a fixed shape; the random crops
come from that center crop instead of the full image. Evaluation sees resize 256 + center crop 224.
Data: ``tfds:imagenet2012`` as ArrayRecord (``tfds build imagenet2012
--file_format=array_record`` with the manual download).
"""

from ssl_jax import recipes


def get_config(arg: str | None = None):
  c = recipes.imagenet_config("simsiam")
  c.method_kwargs.update(dict(proj_hidden_dim=2048, proj_dim=2048, proj_layers=3,
                              proj_output_norm="bn_noaffine", pred_hidden_dim=512,
                              stop_gradient=True))
  c.encoder_kwargs.zero_init_residual = True
  c.views.a = c.views.b = recipes.aug_plus(224, blur_p=0.5, normalize=recipes.IMAGENET_NORMALIZE)
  c.batch_size = 512
  c.epochs = 100
  c.optimizer.update(name="sgd", lr=0.05, lr_scaling="linear", base_batch=256,
                     weight_decay=1e-4, momentum=0.9, nesterov=False, warmup_epochs=0.0,
                     warmup_steps=0, exclude_bias_and_norm=False)
  if arg == "runlocal":
    recipes.runlocal(c, proj_hidden_dim=64, proj_dim=64, pred_hidden_dim=16)
    c.data.image_size = 64
    c.views.a = c.views.b = recipes.aug_plus(56, blur_p=0.5, normalize=recipes.IMAGENET_NORMALIZE)
    c.eval_preprocess = recipes.imagenet_eval_preprocess(56)
  elif arg:
    raise ValueError(f"simsiam_imagenet: unknown argument {arg!r}; valid: runlocal")
  return c
