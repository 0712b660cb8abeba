"""The evaluation runner's protocol plan and eval.json merging."""

import pytest

from ssl_jax.evaluate.runner import merge_results, plan_protocols


def test_plan_protocols(make_config):
  config = make_config()
  assert plan_protocols(None, config) == (("linear", "knn"), (1, 5, 10, "all"), False)
  assert plan_protocols("all", config) == (("linear", "knn"), (1, 5, 10, "all"), True)
  assert plan_protocols("knn", config) == (("knn",), (1, 5, 10, "all"), False)
  assert plan_protocols("fewshot", config) == (("linear", "knn"), (1, 5, 10), False)
  assert plan_protocols("finetune", config) == ((), (1, 5, 10, "all"), True)
  assert plan_protocols(("linear",), config)[0] == ("linear",)
  with pytest.raises(ValueError, match="protocol='svm'"):
    plan_protocols("svm", config)
  with pytest.raises(ValueError, match="no few-label budget"):
    plan_protocols("fewshot", make_config(**{"eval.budgets": "('all',)"}))


def test_merge_results_replaces_computed_entries_and_keeps_the_rest():
  old = {"linear": {"ssl": {"1": 0.5, "1_std": 0.1, "all": 0.9}}, "knn": {"ssl": {"1": 0.4}},
         "val_perplexity": 3.0}
  new = {"linear": {"ssl": {"1": 0.6, "1_std": 0.05}, "raw": {"1": 0.3}},
         "finetune": {"ssl": {"all": 0.97}}}
  merged = merge_results(old, new)
  assert merged == {"linear": {"ssl": {"1": 0.6, "1_std": 0.05, "all": 0.9}, "raw": {"1": 0.3}},
                    "knn": {"ssl": {"1": 0.4}}, "finetune": {"ssl": {"all": 0.97}},
                    "val_perplexity": 3.0}
  assert old["linear"]["ssl"]["1"] == 0.5  # inputs unchanged
