"""VICReg on scikit-learn's digits: a CPU-sized run (a few minutes on 2 cores, evaluation
included).

  ssl-jax pretrain --config experiments/vicreg_digits.py
  ssl-jax pretrain --config experiments/vicreg_digits.py:runlocal   # seconds: smoke check

VICReg's knobs on :func:`ssl_jax.recipes.digits_config`, tuned on the fit/val split (1-label
linear probe there; SimCLR's default: 91.4, random init: 57.2):

* expander 512-512-512, the paper's weights 25 / 25 / 1, 600 steps: 83.3
* no expander (the loss on the encoder's 128-d features): **89.7**

As for SimCLR here, the loss applied to the encoder's own features (``proj_layers=0``) gives the
best pre-head features on 8x8 digits; the invariance / variance / covariance weights are the
paper's.
"""

from ssl_jax.recipes import digits_config, runlocal_digits


def get_config(arg: str | None = None):
  config = digits_config("vicreg", total_steps=600, sim_weight=25.0, var_weight=25.0,
                          cov_weight=1.0, proj_layers=0)
  if arg == "runlocal":
    runlocal_digits(config)
  elif arg:
    raise ValueError(f"vicreg_digits: unknown argument {arg!r}; valid: runlocal")
  return config
