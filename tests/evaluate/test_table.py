"""Tests for ssl_jax.evaluate.table.format_table."""

from ssl_jax.evaluate.table import CAPTION, format_table


def test_format_table_layout():
  results = {
      "linear": {"ssl": {"1": 0.7123, "1_std": 0.0341, "10": 0.9, "10_std": 0.01, "all": 0.97},
                 "raw": {"1": 0.5, "1_std": 0.02, "1%": 0.6}},
      "knn": {"ssl": {"5": 0.8, "5_std": 0.0, "all": 0.95}},
      "val_perplexity": 12.3456,
  }
  expected = "\n".join([
      CAPTION,
      "protocol  source  1           5           10          1%    all",
      "--------  ------  ----------  ----------  ----------  ----  ----",
      "linear    ssl     71.2 ± 3.4  -           90.0 ± 1.0  -     97.0",
      "linear    raw     50.0 ± 2.0  -           -           60.0  -",
      "knn       ssl     -           80.0 ± 0.0  -           -     95.0",
      "val_perplexity: 12.35",
  ])
  assert format_table(results) == expected


def test_format_table_scalars_only():
  assert format_table({"bits_per_byte": 1.25}) == "bits_per_byte: 1.25"
