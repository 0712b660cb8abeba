"""SimCLR on scikit-learn's digits: the main job (the default of ``ssl-jax pretrain``).

  ssl-jax pretrain --config experiments/simclr_digits.py
  ssl-jax pretrain --config experiments/simclr_digits.py:runlocal   # seconds: smoke check

The recipe (encoder, views, optimizer, steps, temperature) is the package default
(:func:`ssl_jax.config.default_config`), tuned on a validation split of the digits train set.
"""

from ssl_jax.config import default_config


def get_config(arg: str | None = None):
  config = default_config()
  if arg == "runlocal":
    config.total_steps = 4
    config.batch_size = 64
    config.eval.num_draws = 2
    config.eval.budgets = (1, "all")
  elif arg:
    raise ValueError(f"simclr_digits: unknown argument {arg!r}; valid: runlocal")
  return config
