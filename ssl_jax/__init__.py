"""ssl_jax: self-supervised learning in JAX.

Layers (dependencies point down only): ``cli`` -> ``train`` -> ``methods`` -> ``models`` /
``data`` / ``augment`` / ``evaluate`` -> ``losses``. See ``DESIGN.md`` in the project notes.
"""

__version__ = "0.1.0"
