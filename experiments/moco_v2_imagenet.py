"""MoCo v2 on ImageNet (Chen, Fan, Girshick & He, 2020, arXiv:2003.04297), for a GPU/TPU.

  ssl-jax pretrain --config experiments/moco_v2_imagenet.py            # 200 epochs
  ssl-jax pretrain --config experiments/moco_v2_imagenet.py:800ep      # 800 epochs
  ssl-jax pretrain --config experiments/moco_v2_imagenet.py:runlocal   # tiny, for a smoke check

Recipe (MoCo v2 section 2, tables 1-2, and the official ``main_moco.py --mlp --moco-t 0.2
--aug-plus --cos`` of facebookresearch/moco): ResNet-50; MLP head 2048-ReLU-128 (no BatchNorm);
queue K = 65536; momentum m = 0.999 (constant); temperature 0.2; one-directional loss; batch 256;
SGD with momentum 0.9, learning rate 0.03 x B/256, weight decay 1e-4 on every parameter (PyTorch's
SGD decays biases and BatchNorm too), cosine schedule without warmup; 200 epochs (67.5% linear
top-1 in table 1) or 800 (71.1%, table 2). Views, "aug+": random resized crop 224 with scale
(0.2, 1), colour jitter (0.4, 0.4, 0.4, 0.1) with p = 0.8, grayscale p = 0.2, Gaussian blur with
sigma in (0.1, 2) and p = 0.5, horizontal flip. BatchNorm is synced over the global batch instead
of MoCo's shuffle BN (see :mod:`ssl_jax.methods.moco_v2`).

Data: ``tfds:imagenet2012`` (ArrayRecord; prepare it once with ``tfds build imagenet2012
--file_format=array_record`` and the manual download). ``data.image_size=256``: images are stored
resized (shorter side 256) and center-cropped to 256x256 on read, then cropped on device: the
random resized crop sees the central square rather than the whole image (a fixed-size batch needs
one size). Evaluation center-crops 224 of the 256 (the standard resize 256 / crop 224).
"""

from ssl_jax import recipes


def get_config(arg: str | None = None):
  c = recipes.imagenet_config("moco_v2", stem=None)
  c.method_kwargs.update(dict(temperature=0.2, queue_size=65536, momentum=0.999,
                              proj_hidden_dim=2048, proj_dim=128, proj_layers=2,
                              symmetric=False))
  c.views.a = c.views.b = recipes.aug_plus(224, blur_p=0.5, normalize=recipes.IMAGENET_NORMALIZE)
  c.batch_size = 256
  c.epochs = 200
  c.optimizer.update(name="sgd", lr=0.03, lr_scaling="linear", weight_decay=1e-4, momentum=0.9,
                     warmup_epochs=0.0, exclude_bias_and_norm=False)
  c.eval.budgets = (1, 5, 10, "1%", "10%", "all")
  if arg == "800ep":
    c.epochs = 800
  elif arg == "runlocal":
    recipes.runlocal(c, queue_size=64, proj_hidden_dim=64, proj_dim=16)
    c.data.image_size = 40
    c.views.a = c.views.b = recipes.aug_plus(32, blur_p=0.5, normalize=recipes.IMAGENET_NORMALIZE)
    c.eval_preprocess = recipes.imagenet_eval_preprocess(32)
  elif arg:
    raise ValueError(f"moco_v2_imagenet: unknown argument {arg!r}; valid: 800ep, runlocal")
  return c
