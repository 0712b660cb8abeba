"""Benchmarks: train-step throughput, MFU, input pipeline, and a side by side with PyTorch.

``ssl-jax bench --suite vs-pytorch|methods|config --out FILE.jsonl`` runs
:func:`ssl_jax.bench.suite.run_suite`; every
measurement is one JSON line (``benchmark`` = ``run`` | ``peak`` | ``train_step`` |
``input_pipeline`` | ``ratio``), written as soon as it is taken. ``ssl-jax bench --render
benchmarks/README.md`` regenerates the README's tables from ``benchmarks/results/*.jsonl``.

* :mod:`ssl_jax.bench.suite`: the suites; :mod:`ssl_jax.bench.cli`: ``ssl-jax bench`` (importing
  this package or the CLI module imports no JAX);
* :mod:`ssl_jax.bench.harness`: step and pipeline measurements, the suites' configs, the PyTorch
  subprocess;
* :mod:`ssl_jax.bench.flops`: analytic model FLOPs;
* :mod:`ssl_jax.bench.peak`: the MFU denominator (measured on CPU, datasheet on GPU/TPU);
* :mod:`ssl_jax.bench.table`: Markdown.
"""

SUITES = ("vs-pytorch", "methods", "config")
PARALLEL_MODES = ("shard_map", "pmap", "gspmd")
