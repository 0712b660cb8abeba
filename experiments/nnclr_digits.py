"""NNCLR on scikit-learn's digits (CPU, a few minutes including evaluation).

  ssl-jax pretrain --config experiments/nnclr_digits.py
  ssl-jax pretrain --config experiments/nnclr_digits.py:runlocal   # seconds, smoke check

The package's digits recipe (:func:`ssl_jax.config.default_config`: ``cnn_digits`` encoder,
affine/noise/erasing views, AdamW, batch 256) with NNCLR's own knobs tuned on the validation split
of the digits train set (``--config.train_split=fit --config.test_split=val``).
"""

import ml_collections

from ssl_jax.config import default_config


def get_config(arg: str | None = None):
  config = default_config()
  config.method = "nnclr"
  config.method_kwargs = ml_collections.ConfigDict(dict(
      temperature=0.1, queue_size=512, proj_hidden_dim=512, proj_dim=128, proj_layers=3,
      proj_output_norm="bn", pred_hidden_dim=512, pred_layers=2))
  if arg == "runlocal":
    config.total_steps = 4
    config.batch_size = 64
    config.method_kwargs.update(dict(queue_size=128, proj_hidden_dim=64, proj_dim=16,
                                     pred_hidden_dim=32))
    config.eval.num_draws = 2
    config.eval.budgets = (1, "all")
  elif arg:
    raise ValueError(f"nnclr_digits: unknown argument {arg!r}; valid: runlocal")
  return config
