"""Tests for ssl_jax.evaluate.table: format_table, compare_markdown and ``ssl-jax compare``."""

import json

import pytest

from ssl_jax.evaluate.table import CAPTION, compare_markdown, format_table


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


def _results(ssl_1, raw_1=0.7):
  return {"knn": {"ssl": {"5": 0.5}, "random_init": {"5": 0.4}, "raw": {"5": 0.3}},
          "linear": {"ssl": {"1": ssl_1, "1_std": 0.01, "all": 0.98},
                     "random_init": {"1": 0.6, "1_std": 0.02, "all": 0.9},
                     "raw": {"1": raw_1, "1_std": 0.03, "all": 0.95}}}


def test_compare_markdown_rows_and_baselines():
  table = compare_markdown({"simclr": _results(0.9), "byol": _results(0.85)})
  assert table.splitlines() == [
      "| features | linear 1 | linear all | knn 5 |",
      "|---|---|---|---|",
      "| simclr | 90.0 ± 1.0 | 98.0 | 50.0 |",
      "| byol | 85.0 ± 1.0 | 98.0 | 50.0 |",
      "| same network, random init | 60.0 ± 2.0 | 90.0 | 40.0 |",
      "| raw pixels | 70.0 ± 3.0 | 95.0 | 30.0 |"]


def test_compare_markdown_refuses_runs_with_other_baselines():
  with pytest.raises(ValueError, match="'byol': its linear/raw baseline differs"):
    compare_markdown({"simclr": _results(0.9), "byol": _results(0.85, raw_1=0.5)})
  with pytest.raises(ValueError, match="no runs"):
    compare_markdown({})


def test_compare_cli(tmp_path, capsys):
  from ssl_jax import cli
  for name, acc in (("a", 0.9), ("b", 0.8)):
    (tmp_path / name).mkdir()
    (tmp_path / name / "eval.json").write_text(json.dumps(_results(acc)))
    (tmp_path / name / "config.json").write_text(json.dumps({"method": f"method_{name}"}))
  assert cli.main(["compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
  out = capsys.readouterr().out
  assert "| method_a | 90.0 ± 1.0 | 98.0 | 50.0 |" in out and "| method_b | 80.0" in out
  (tmp_path / "b" / "config.json").write_text(json.dumps({"method": "moco_v2"}))
  assert cli.main(["compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
  assert "| MoCo v2 | 80.0" in capsys.readouterr().out  # a registered method's DISPLAY_NAME
  assert cli.main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--names", "x"]) == 2
  assert "1 names for 2 workdirs" in capsys.readouterr().err
