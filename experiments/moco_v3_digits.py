"""MoCo v3 on scikit-learn's digits: a CPU-sized run (about 3 minutes on 2 cores, evaluation
included).

  ssl-jax pretrain --config experiments/moco_v3_digits.py
  ssl-jax pretrain --config experiments/moco_v3_digits.py:runlocal   # seconds, for a smoke check

Starts from the package's digits recipe (:func:`ssl_jax.config.default_config`: ``cnn_digits``
encoder, affine/noise/erasing views, AdamW with warmup and cosine decay, batch 256) and sets
MoCo v3's own knobs, tuned on the validation split inside the train set
(``--config.train_split=fit --config.test_split=val``), never on the test split: TODO.
"""

import ml_collections

from ssl_jax.config import default_config


def get_config(arg: str | None = None):
  config = default_config()
  config.method = "moco_v3"
  config.method_kwargs = ml_collections.ConfigDict(dict(
      temperature=0.2, base_momentum=0.99, proj_hidden_dim=512, proj_dim=128, proj_layers=2,
      pred_hidden_dim=512, pred_layers=2))
  config.total_steps = 600
  if arg == "runlocal":
    config.total_steps = 4
    config.batch_size = 64
    config.method_kwargs.update(proj_hidden_dim=32, proj_dim=16, pred_hidden_dim=32)
    config.eval.num_draws = 2
    config.eval.budgets = (1, "all")
  elif arg:
    raise ValueError(f"moco_v3_digits: unknown argument {arg!r}; valid: runlocal")
  return config
