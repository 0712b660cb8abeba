"""BERT-base (110M parameters) pretraining with MLM + NSP on English Wikipedia, for accelerators.

  ssl-jax pretrain --config experiments/bert_base_wikipedia.py --config.data_dir=gs://...
  ssl-jax pretrain --config experiments/bert_base_wikipedia.py:runlocal   # tiny, on mock data

Devlin et al., 2019 (https://arxiv.org/abs/1810.04805), section A.2: batch 256 sequences of 512
tokens (128 for 90% of the steps), 1M steps, Adam at 1e-4 with beta2 0.999, weight decay 0.01,
10k warmup steps and linear decay, dropout 0.1, 15% masking, MLM + NSP. Here: one phase at 128
tokens (the first 90%), cosine instead of linear decay, bfloat16 compute with float32 parameters
and loss math, and a cased WordPiece vocabulary of 30,522 entries trained on the training split
(BERT-base's size, so the parameter count is the paper's; give BERT's own file with
``--config.text.tokenizer=file:/path/tokenizer.json``). The dataset must be prepared for TFDS
(``tfds build wikipedia/20230601.en``); nothing is downloaded here. Wikipedia has only a train
split: the last 1% is held out for validation.
"""

from ssl_jax import recipes


def get_config(arg: str | None = None):
  config = recipes.text_config("nsp", dataset="tfds:wikipedia/20230601.en", encoder="bert_base",
                               total_steps=900_000, batch_size=256, lr=1e-4, seq_len=128,
                               tokenizer="wordpiece:30522", warmup_steps=10_000)
  config.train_split, config.test_split = "train[:99%]", "train[99%:]"
  config.optimizer.b2 = 0.999
  config.compute_dtype = "bfloat16"
  config.checkpoint.every_steps = 10_000
  config.log.every_steps = 100
  if arg == "runlocal":
    recipes.runlocal_text(config, encoder="bert_tiny")
    config.text.tokenizer = "wordpiece:300"
    config.train_split, config.test_split = "train", "train"
  elif arg:
    raise ValueError(f"bert_base_wikipedia: unknown argument {arg!r}; valid: runlocal")
  return config
