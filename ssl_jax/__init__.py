"""ssl_jax: self-supervised learning in JAX.

Layers (imports point down only, module by module, lazy imports included: checked by
``tests/test_layering.py``): ``cli`` -> ``bench`` / ``evaluate`` -> ``train`` (loop, workdir,
checkpointing) -> ``methods`` -> ``models`` / ``data`` / ``augment`` -> ``losses``. The training
layer's monitors and online probe run inside the step and sit under ``methods``; ``hugepages``
imports nothing of ssl_jax. See ``DESIGN.md`` in the project notes.
"""

__version__ = "0.1.0"
