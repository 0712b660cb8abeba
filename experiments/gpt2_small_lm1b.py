"""GPT-2 small (124M parameters) causal LM on the One Billion Word benchmark, for accelerators.

  ssl-jax pretrain --config experiments/gpt2_small_lm1b.py --config.data_dir=gs://...
  ssl-jax pretrain --config experiments/gpt2_small_lm1b.py:runlocal   # tiny, on mock data

GPT-2 (Radford et al., 2019) trained on WebText, which is not public; lm1b (``tfds build lm1b``) is
the open stand-in. Architecture as GPT-2 small (12 layers, width 768, context 1024, tied output
layer, byte-level BPE of 50,257 entries trained here on the training split), AdamW at 6e-4 with
beta2 0.95 and weight decay 0.1 (the GPT-3 paper's recipe for this size), 2k warmup steps and
cosine decay, batch 512 x 1024 tokens, bfloat16 compute, per-block rematerialization.
"""

from ssl_jax import recipes


def get_config(arg: str | None = None):
  config = recipes.text_config("clm", dataset="tfds:lm1b", encoder="gpt2_small",
                               total_steps=100_000, batch_size=512, lr=6e-4, seq_len=1024,
                               tokenizer="bpe:50257", warmup_steps=2_000, weight_decay=0.1)
  config.test_split = "test"
  config.optimizer.b2 = 0.95
  config.compute_dtype = "bfloat16"
  config.encoder_kwargs.remat = True
  config.checkpoint.every_steps = 5_000
  config.log.every_steps = 100
  if arg == "runlocal":
    recipes.runlocal_text(config, encoder="gpt_tiny")
    config.text.tokenizer = "bpe:300"
    config.method_kwargs.sample_tokens = 8
  elif arg:
    raise ValueError(f"gpt2_small_lm1b: unknown argument {arg!r}; valid: runlocal")
  return config
