"""VICReg on scikit-learn's digits (CPU, a few minutes including evaluation).

  ssl-jax pretrain --config experiments/vicreg_digits.py
  ssl-jax pretrain --config experiments/vicreg_digits.py:runlocal   # seconds, smoke check

The package's digits recipe (:func:`ssl_jax.config.default_config`: ``cnn_digits`` encoder,
affine/noise/erasing views, AdamW, batch 256) with VICReg's own knobs tuned on the validation
split of the digits train set (``--config.train_split=fit --config.test_split=val``).
"""

import ml_collections

from ssl_jax.config import default_config


def get_config(arg: str | None = None):
  config = default_config()
  config.method = "vicreg"
  config.method_kwargs = ml_collections.ConfigDict(dict(
      sim_weight=25.0, var_weight=25.0, cov_weight=1.0, proj_hidden_dim=512, proj_dim=512,
      proj_layers=3))
  if arg == "runlocal":
    config.total_steps = 4
    config.batch_size = 64
    config.method_kwargs.update(dict(proj_hidden_dim=64, proj_dim=64))
    config.eval.num_draws = 2
    config.eval.budgets = (1, "all")
  elif arg:
    raise ValueError(f"vicreg_digits: unknown argument {arg!r}; valid: runlocal")
  return config
