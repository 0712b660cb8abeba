"""MoCo v3 with a ViT on ImageNet (Chen, Xie & He, 2021, arXiv:2104.02057), for GPUs/TPUs.

  ssl-jax pretrain --config experiments/moco_v3_imagenet.py            # ViT-S/16
  ssl-jax pretrain --config experiments/moco_v3_imagenet.py:vit_base   # ViT-B/16
  ssl-jax pretrain --config experiments/moco_v3_imagenet.py:runlocal   # tiny, for a smoke check

Recipe (section 4 and appendix A of the paper; the ViT commands of the official ``CONFIG.md``:
``--optimizer=adamw --lr=1.5e-4 --weight-decay=.1 --epochs=300 --warmup-epochs=40
--stop-grad-conv1 --moco-m-cos --moco-t=.2``): ViT with the fixed 2-D sin-cos position embedding
and a class token; projector 3 layers 4096-4096-256 and predictor 2 layers 4096-256 (BatchNorm in
the hidden layers, BatchNorm without affine on the projector output, no biases); temperature 0.2;
momentum from 0.99 to 1 with a cosine schedule; batch 4096; AdamW with learning rate
1.5e-4 x B/256, weight decay 0.1 on every parameter (PyTorch's AdamW over ``model.parameters()``),
40 warmup epochs then cosine; 300 epochs (official linear probing: ViT-S 73.2%, ViT-B 76.7%).
Views: BYOL's asymmetric pair with a crop scale of (0.08, 1): random resized crop 224, colour jitter
(0.4, 0.4, 0.2, 0.1) with p = 0.8, grayscale p = 0.2, Gaussian blur p = 1.0 / 0.1, solarization
p = 0 / 0.2, horizontal flip.

Deviations: the frozen random patch projection (``--stop-grad-conv1``) is not implemented (the
patch embedding is trained; the paper's section 4.2 shows it mainly adds stability); this package's
``vit_small`` has DeiT's 6 attention heads where MoCo v3's ViT-S has 12 (same parameter count).

Data: ``tfds:imagenet2012`` (ArrayRecord; see ``moco_v2_imagenet.py``), stored at 256x256 (shorter
side resized to 256, center crop) and cropped on device; evaluation center-crops 224.
"""

from ssl_jax import recipes


def get_config(arg: str | None = None):
  c = recipes.imagenet_config("moco_v3", stem=None)
  c.method_kwargs.update(dict(temperature=0.2, base_momentum=0.99, final_momentum=1.0,
                              proj_hidden_dim=4096, proj_dim=256, proj_layers=3,
                              pred_hidden_dim=4096, pred_layers=2))
  c.encoder = "vit_small"
  c.encoder_kwargs.update(dict(patch_size=16, image_size=224, pos_embed="sincos", pool="cls"))
  c.views.a, c.views.b = recipes.moco_v3_views(224, min_scale=0.08, blur=True,
                                               normalize=recipes.IMAGENET_NORMALIZE)
  c.batch_size = 4096
  c.epochs = 300
  c.optimizer.update(name="adamw", lr=1.5e-4, lr_scaling="linear", weight_decay=0.1, b1=0.9,
                     b2=0.999, warmup_epochs=40.0, exclude_bias_and_norm=False)
  c.checkpoint.every_steps = 2000
  c.log.every_steps = 50
  c.eval.budgets = (1, 5, 10, "1%", "10%", "all")
  if arg == "vit_base":
    c.encoder = "vit_base"
  elif arg == "runlocal":
    recipes.runlocal(c, encoder="vit_micro", proj_hidden_dim=64, proj_dim=16, pred_hidden_dim=64)
    c.encoder_kwargs.update(dict(patch_size=8, image_size=32))
    c.data.image_size = 40
    c.views.a, c.views.b = recipes.moco_v3_views(32, min_scale=0.08, blur=True,
                                                 normalize=recipes.IMAGENET_NORMALIZE)
    c.eval_preprocess = recipes.imagenet_eval_preprocess(32)
  elif arg:
    raise ValueError(f"moco_v3_imagenet: unknown argument {arg!r}; valid: vit_base, runlocal")
  return c
