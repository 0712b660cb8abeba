"""Causal LM (GPT-style) of a tiny decoder on ``pydoc`` (Python's help texts, byte-level).

  ssl-jax pretrain --config experiments/clm_pydoc.py           # a few minutes on 2 CPU cores
  ssl-jax pretrain --config experiments/clm_pydoc.py:runlocal  # seconds: smoke check

Evaluation: validation perplexity and bits per byte against the unigram baseline, samples
generated with the key-value cache (``DIR/samples.txt``), and the docstring task probed on the
decoder's mean-pooled states.
"""

from ssl_jax import recipes


def get_config(arg: str | None = None):
  config = recipes.text_config("clm", dataset="pydoc", encoder="gpt_tiny", total_steps=600,
                               batch_size=32, lr=2e-3, seq_len=128)
  config.encoder_kwargs.dropout = 0.0
  config.cpu_kernels = "onednn_dots"  # CPU: products in oneDNN, checked (as mlm_pydoc.py)
  if arg == "runlocal":
    recipes.runlocal_text(config, encoder="gpt_tiny")
    config.method_kwargs.sample_tokens = 8
  elif arg:
    raise ValueError(f"clm_pydoc: unknown argument {arg!r}; valid: runlocal")
  return config
