"""Regenerates the tables of benchmarks/README.md from benchmarks/results/*.jsonl.

  python benchmarks/render_readme.py        # same as: ssl-jax bench --render benchmarks/README.md
"""

import os

from ssl_jax.bench import table

if __name__ == "__main__":
  table.update_readme(os.path.join(os.path.dirname(os.path.abspath(__file__)), "README.md"))
