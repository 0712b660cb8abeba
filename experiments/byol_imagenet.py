"""BYOL on ImageNet (Grill et al., 2020, section 3.3, appendices B and C), for a GPU/TPU pod.

  ssl-jax pretrain --config experiments/byol_imagenet.py             # ResNet-50, 1000 epochs
  ssl-jax pretrain --config experiments/byol_imagenet.py:runlocal    # tiny, for a smoke check

Recipe (appendix C, "Optimization"; table 6 for the views):

* ResNet-50 (v1.5, ImageNet stem), 2048-d representation; projector and predictor
  ``Linear(4096) - BN - ReLU - Linear(256)`` (section 3.3, "Architecture").
* Batch 4096; LARS with momentum 0.9, trust coefficient 1e-3, learning rate ``0.2 x B / 256``
  (= 3.2) with 10 warmup epochs then cosine decay to 0, weight decay 1.5e-6, biases and BatchNorm
  parameters excluded from both weight decay and LARS adaptation; 1000 epochs.
* Target EMA: ``tau_base = 0.996``, cosine schedule to 1 (section 3.2).
* Views (table 6), asymmetric: random resized crop to 224 (area 0.08-1, ratio 3/4-4/3), flip
  p=0.5, colour jitter p=0.8 (brightness 0.4, contrast 0.4, saturation 0.2, hue 0.1, random
  order), grayscale p=0.2, Gaussian blur (sigma 0.1-2, kernel 23 = 10% of 224) with p=1.0 on view
  ``a`` and 0.1 on view ``b``, solarization p=0.0 on ``a`` and 0.2 on ``b``; then the ImageNet
  mean/std normalization.
* BatchNorm synced over all devices (``sync_bn``), compute in bfloat16.

Data: ``tfds:imagenet2012`` as ArrayRecord (prepare it once with ``tfds build imagenet2012
--file_format=array_record`` and the manual download). ``data.image_size=256`` resizes every
image on the host (shorter side to 256, then a 256x256 center crop) so batches have a fixed
shape. Deviation: the random crops are taken from that 256x256 center crop rather than from the
full, non-square image (the paper crops the original image); evaluation sees the standard resize
256 + center crop 224.
"""

from ssl_jax import recipes


def get_config(arg: str | None = None):
  c = recipes.imagenet_config("byol")
  c.method_kwargs.update(dict(proj_hidden_dim=4096, proj_dim=256, pred_hidden_dim=4096,
                              base_momentum=0.996))
  c.views.a, c.views.b = recipes.byol_views(224, blur=True, normalize=recipes.IMAGENET_NORMALIZE)
  c.batch_size = 4096
  c.epochs = 1000
  c.optimizer.update(name="lars", lr=0.2, lr_scaling="linear", base_batch=256,
                     weight_decay=1.5e-6, momentum=0.9, trust_coefficient=1e-3,
                     warmup_epochs=10.0, exclude_bias_and_norm=True)
  if arg == "runlocal":
    recipes.runlocal(c, proj_hidden_dim=64, proj_dim=16, pred_hidden_dim=64)
    c.data.image_size = 64
    c.views.a, c.views.b = recipes.byol_views(56, blur=True, normalize=recipes.IMAGENET_NORMALIZE)
    c.eval_preprocess = recipes.imagenet_eval_preprocess(56)
  elif arg:
    raise ValueError(f"byol_imagenet: unknown argument {arg!r}; valid: runlocal")
  return c
