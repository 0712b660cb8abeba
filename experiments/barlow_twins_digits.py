"""Barlow Twins on scikit-learn's digits: a CPU-sized run (a few minutes on 2 cores, evaluation
included).

  ssl-jax pretrain --config experiments/barlow_twins_digits.py
  ssl-jax pretrain --config experiments/barlow_twins_digits.py:runlocal   # seconds: smoke check

Barlow Twins's knobs on :func:`ssl_jax.recipes.digits_config`, tuned on the fit/val split (1-label
linear probe there; SimCLR's default: 91.4, random init: 57.2):

* projector 512-512-512 (``Linear-BN-ReLU`` twice, then a bias-free ``Linear``), the paper's
  lambda 0.0051, 600 steps: **81.2**
* no projector (the loss on the encoder's 128-d features), lambda 0.0051: 80.2; lambda 0.0025:
  78.4; lambda 0.02: 75.0 (93.5 with 5 labels, the best of these there)

Unlike VICReg, NNCLR, BYOL and the contrastive methods, Barlow Twins did not gain from dropping
its projector on 8x8 digits; it stays the weakest of the methods here at 1 label per class. The
paper's projector shape and lambda are kept at a width that suits a 128-d encoder.
"""

from ssl_jax.recipes import digits_config, runlocal_digits


def get_config(arg: str | None = None):
  config = digits_config("barlow_twins", total_steps=600, lambda_=0.0051, proj_hidden_dim=512,
                          proj_dim=512, proj_layers=3)
  if arg == "runlocal":
    runlocal_digits(config, proj_hidden_dim=64, proj_dim=64)
  elif arg:
    raise ValueError(f"barlow_twins_digits: unknown argument {arg!r}; valid: runlocal")
  return config
