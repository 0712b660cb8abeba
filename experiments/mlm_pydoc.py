"""Masked LM (RoBERTa-style dynamic masking) of a tiny BERT on ``pydoc``: the help texts of
Python's ``pydoc_data.topics``, about 400k characters of English technical prose, read byte by byte.

  ssl-jax pretrain --config experiments/mlm_pydoc.py           # a few minutes on 2 CPU cores
  ssl-jax pretrain --config experiments/mlm_pydoc.py:runlocal  # seconds: smoke check

Evaluation: validation perplexity of the masked tokens against the unigram baseline of the same
tokenizer, bits per byte, and the docstring task (classify a standard-library docstring by its
package) probed with 1/5/10/all labels per class against the same encoder at random init.
"""

from ssl_jax import recipes


def get_config(arg: str | None = None):
  config = recipes.text_config("mlm", dataset="pydoc", encoder="bert_tiny", total_steps=600,
                               batch_size=64, lr=2e-3, seq_len=128)
  config.encoder_kwargs.dropout = 0.0  # 3k rows of 128 bytes: underfit, not overfit
  # CPU: the step's products in oneDNN, checked (ssl_jax.train.xla_options); the attention's
  # batched products run ~3x faster than in XLA:CPU's default library (benchmarks/README.md).
  config.cpu_kernels = "onednn_dots"
  if arg == "runlocal":
    recipes.runlocal_text(config, encoder="bert_tiny")
  elif arg:
    raise ValueError(f"mlm_pydoc: unknown argument {arg!r}; valid: runlocal")
  return config
