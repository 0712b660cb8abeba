"""NNCLR on ImageNet (Dwibedi et al., 2021, section 4.1), for a GPU/TPU pod.

  ssl-jax pretrain --config experiments/nnclr_imagenet.py            # ResNet-50
  ssl-jax pretrain --config experiments/nnclr_imagenet.py:runlocal   # tiny, smoke check

Recipe (section 4.1, "Implementation details"; there is no official code):

* ResNet-50 (ImageNet stem), 2048-d representation; projector 2048-2048-256 (3 layers, BatchNorm
  on every layer), predictor 4096-256 (2 layers); temperature 0.1; support set (queue) of 98,304
  projections.
* Batch 4096; LARS (momentum 0.9, trust coefficient 1e-3, biases and BatchNorm parameters
  excluded from weight decay and adaptation), learning rate ``0.3 x B / 256`` (= 4.8), 10 warmup
  epochs, then cosine decay; weight decay 1e-6; 1000 epochs.
* Views: BYOL's (the paper uses BYOL's augmentations; Grill et al. 2020 table 6): random resized
  crop to 224 (area 0.08-1), flip, colour jitter p=0.8 (0.4, 0.4, 0.2, 0.1), grayscale p=0.2,
  Gaussian blur p=1.0 / 0.1 and solarization p=0.0 / 0.2 on the two views; ImageNet mean/std
  normalization.
* BatchNorm synced over all devices, bfloat16 compute; the queue is kept in float32.

Deviation: ``data.image_size=256`` resizes every image on the host (shorter side to 256, then a
256x256 center crop) so batches have a fixed shape; the random crops come from that square rather
than from the full image; evaluation sees the standard resize 256 + center crop 224.

Data: ``tfds:imagenet2012`` as ArrayRecord (prepare it once with ``tfds build imagenet2012
--file_format=array_record`` and the manual download).
"""

from ssl_jax import recipes


def get_config(arg: str | None = None):
  c = recipes.imagenet_config("nnclr")
  c.method_kwargs.update(dict(
      temperature=0.1, queue_size=98304, proj_hidden_dim=2048, proj_dim=256, proj_layers=3,
      proj_output_norm="bn", pred_hidden_dim=4096, pred_layers=2))
  c.views.a, c.views.b = recipes.byol_views(224, blur=True, normalize=recipes.IMAGENET_NORMALIZE)
  c.batch_size = 4096
  c.epochs = 1000
  c.optimizer.update(name="lars", lr=0.3, lr_scaling="linear", base_batch=256,
                     weight_decay=1e-6, momentum=0.9, trust_coefficient=1e-3,
                     warmup_epochs=10.0, exclude_bias_and_norm=True)
  if arg == "runlocal":
    recipes.runlocal(c, queue_size=64, proj_hidden_dim=64, proj_dim=16, pred_hidden_dim=64)
    c.data.image_size = 64
    c.views.a, c.views.b = recipes.byol_views(56, blur=True, normalize=recipes.IMAGENET_NORMALIZE)
    c.eval_preprocess = recipes.imagenet_eval_preprocess(56)
  elif arg:
    raise ValueError(f"nnclr_imagenet: unknown argument {arg!r}; valid: runlocal")
  return c
