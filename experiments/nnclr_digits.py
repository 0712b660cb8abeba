"""NNCLR on scikit-learn's digits: a CPU-sized run (a few minutes on 2 cores, evaluation
included).

  ssl-jax pretrain --config experiments/nnclr_digits.py
  ssl-jax pretrain --config experiments/nnclr_digits.py:runlocal   # seconds: smoke check

NNCLR's knobs on :func:`ssl_jax.recipes.digits_config`, tuned on the fit/val split (1-label
linear probe there; SimCLR's default: 91.4, random init: 57.2):

* projector 512-512-128 (BN out), predictor 512, temperature 0.1, support set 512, 600 steps: 79.7
* no projector or predictor, temperature 0.2: **89.5**

Without heads, the nearest neighbour of each encoder feature in the support set (512 recent
features, about 40% of the training images) is the positive of the other view's feature; the
paper's temperature 0.1 made the contrast too sharp for this small set.
"""

from ssl_jax.recipes import digits_config, runlocal_digits


def get_config(arg: str | None = None):
  config = digits_config("nnclr", total_steps=600, temperature=0.2, queue_size=512, proj_layers=0,
                          pred_layers=0)
  if arg == "runlocal":
    runlocal_digits(config, queue_size=128)
  elif arg:
    raise ValueError(f"nnclr_digits: unknown argument {arg!r}; valid: runlocal")
  return config
