"""SimCLR on MNIST (the built-in ``mnist``: 5,000 real 28x28 digits): a CPU-sized run.

  ssl-jax pretrain --config experiments/simclr_mnist.py
  ssl-jax pretrain --config experiments/simclr_mnist.py:runlocal   # seconds: smoke check

The digits recipe (:func:`ssl_jax.config.default_config`: NT-Xent at temperature 0.5 on the
encoder's features, the affine / noise / erasing views, AdamW at 2e-3 with warmup and cosine decay,
batch 256) with an encoder sized for 28x28: ``cnn_small`` with 32-64-128 channels, a 2x2 max-pool
after each of the first two stages (28 -> 14 -> 7), the third at stride 2 (-> 4x4), flattened into
a 128-wide fully connected layer (the ``cnn_digits`` layout one pooling level deeper).

Not tuned for MNIST (the digits recipe, encoder resized; nothing was chosen on any split). On the
fit/val split its 1-label / 10-label linear probe gets 82.1 / 93.4% (raw pixels 47.9 / 76.1); on
the test split (README, "MNIST"; ``docs/results/mnist/``) 82.7 / 93.4% (raw pixels 46.3 / 77.0).
CPU cost: about 11 minutes of user CPU time on 2 cores, pretraining and evaluation included.
``runlocal`` evaluates only the 1-label budget: the ``all`` budget fits probes on 3,500 examples
of 784 raw pixels, minutes rather than seconds.
"""

import ml_collections

from ssl_jax.config import default_config
from ssl_jax.recipes import runlocal_digits

MNIST_ENCODER = dict(widths=(32, 64, 128), strides=(1, 1, 2), pool_after=(0, 1), head="flatten",
                     fc_features=128, image_size=28)


def get_config(arg: str | None = None):
  config = default_config()
  config.dataset = "mnist"
  config.encoder = "cnn_small"
  config.encoder_kwargs = ml_collections.ConfigDict(MNIST_ENCODER)
  config.total_steps = 600
  if arg == "runlocal":
    runlocal_digits(config)  # 4 steps of 64
    config.optimizer.warmup_steps = 1
    config.eval.budgets = (1,)  # "all" fits probes on 3500 examples: minutes, not seconds
  elif arg:
    raise ValueError(f"simclr_mnist: unknown argument {arg!r}; valid: runlocal")
  return config
