"""VICReg on ImageNet (Bardes, Ponce & LeCun, 2022, section 4.1 and appendix C), for a GPU/TPU pod.

  ssl-jax pretrain --config experiments/vicreg_imagenet.py            # ResNet-50
  ssl-jax pretrain --config experiments/vicreg_imagenet.py:runlocal   # tiny, smoke check

Recipe (section 4.1, "Implementation details"; the official code's defaults in
``main_vicreg.py`` of facebookresearch/vicreg where the paper is silent):

* ResNet-50 (ImageNet stem), 2048-d representation; expander 8192-8192-8192 (``Linear-BN-ReLU``
  twice, then a bias-free ``Linear``); loss weights ``lambda = mu = 25``, ``nu = 1``,
  ``eps = 1e-4``.
* Batch 2048; LARS (momentum 0.9, trust coefficient 1e-3, biases and BatchNorm parameters
  excluded from weight decay and adaptation), learning rate ``0.2 x B / 256`` (``--base-lr 0.2``,
  = 1.6), 10 warmup epochs, then cosine decay to 1/1000 of the peak (``adjust_learning_rate`` of
  the official code); weight decay 1e-6; 1000 epochs.
* Views: BYOL's (the official ``augmentations.TrainTransform``; Grill et al. 2020 table 6):
  random resized crop to 224 (area 0.08-1), flip, colour jitter p=0.8 (0.4, 0.4, 0.2, 0.1),
  grayscale p=0.2, Gaussian blur p=1.0 / 0.1 and solarization p=0.0 / 0.2 on the two views;
  ImageNet mean/std normalization.
* BatchNorm synced over all devices (``SyncBatchNorm`` in the official code), bfloat16 compute.

Deviation: ``data.image_size=256`` resizes every image on the host (shorter side to 256, then a
256x256 center crop) so batches have a fixed shape; the random crops come from that square rather
than from the full image; evaluation sees the standard resize 256 + center crop 224.

Data: ``tfds:imagenet2012`` as ArrayRecord (prepare it once with ``tfds build imagenet2012
--file_format=array_record`` and the manual download).
"""

from ssl_jax import recipes


def get_config(arg: str | None = None):
  c = recipes.imagenet_config("vicreg")
  c.method_kwargs.update(dict(
      sim_weight=25.0, var_weight=25.0, cov_weight=1.0, eps=1e-4, proj_hidden_dim=8192,
      proj_dim=8192, proj_layers=3))
  c.views.a, c.views.b = recipes.byol_views(224, blur=True, normalize=recipes.IMAGENET_NORMALIZE)
  c.batch_size = 2048
  c.epochs = 1000
  c.optimizer.update(name="lars", lr=0.2, lr_scaling="linear", base_batch=256,
                     weight_decay=1e-6, momentum=0.9, trust_coefficient=1e-3,
                     warmup_epochs=10.0, final_lr_fraction=0.001, exclude_bias_and_norm=True)
  if arg == "runlocal":
    recipes.runlocal(c, proj_hidden_dim=64, proj_dim=64)
    c.data.image_size = 64
    c.views.a, c.views.b = recipes.byol_views(56, blur=True, normalize=recipes.IMAGENET_NORMALIZE)
    c.eval_preprocess = recipes.imagenet_eval_preprocess(56)
  elif arg:
    raise ValueError(f"vicreg_imagenet: unknown argument {arg!r}; valid: runlocal")
  return c
