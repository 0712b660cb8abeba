"""Unsupervised SimCSE of a tiny BERT on ``pystdlib`` (docstrings of the standard library, one per
row, byte-level; the docstring task's test docstrings are held out of this corpus).

  ssl-jax pretrain --config experiments/simcse_pystdlib.py           # minutes on 2 CPU cores
  ssl-jax pretrain --config experiments/simcse_pystdlib.py:runlocal  # seconds: smoke check

Evaluation: retrieval of each test docstring's second half from its first half (recall@1) and the
docstring task, both against the same encoder at random init.
"""

from ssl_jax import recipes


def get_config(arg: str | None = None):
  config = recipes.text_config("simcse", dataset="pystdlib", encoder="bert_tiny", total_steps=400,
                               batch_size=64, lr=3e-4, seq_len=64, warmup_steps=40)
  config.encoder_kwargs.dropout = 0.1  # SimCSE's positives differ only by dropout
  if arg == "runlocal":
    recipes.runlocal_text(config, encoder="bert_tiny")
  elif arg:
    raise ValueError(f"simcse_pystdlib: unknown argument {arg!r}; valid: runlocal")
  return config
