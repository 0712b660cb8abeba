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


# ------------------------------------------------ checks before training (what evaluation needs)


import numpy as np  # noqa: E402

from ssl_jax import modalities  # noqa: E402
from ssl_jax.evaluate.fewshot import label_draws  # noqa: E402
from ssl_jax.train.loop import pretrain  # noqa: E402


def _npz(path, train_counts, test_shape=(8, 8)):
  y_train = np.repeat(np.arange(len(train_counts)), train_counts)
  kwargs = dict(x_train=np.zeros((len(y_train), 8, 8), np.uint8), y_train=y_train)
  if test_shape:
    kwargs.update(x_test=np.zeros((2, *test_shape), np.uint8), y_test=np.arange(2))
  np.savez(path, **kwargs)
  return f"npz:{path}"


@pytest.mark.parametrize("counts, test_shape, budgets, message", [
    ((6, 6), None, "(1,)", r"--config.test_split='test', which does not load: .*no split 'test'"),
    ((6, 6), (6, 6), "(1,)", r"split 'test' has images of shape \(6, 6, 1\).*data.image_size"),
    ((6, 3), (8, 8), "(1, 5, 'all')", r"--config.eval.budgets asks for 5 labels per class, but "
                                      r"split 'train' .* \('1' has 3\)"),
    ((6, 6), (8, 8), "(1, '150%')", r"--config.eval.budgets: budget must be .* got '150%'"),
    ((6, 6), (8, 8), "(0,)", r"--config.eval.budgets: budget must be a positive int"),
])
def test_pretrain_refuses_what_evaluation_cannot_use_before_writing(
    tmp_path, make_config, counts, test_shape, budgets, message):
  config = make_config(dataset=_npz(tmp_path / "d.npz", counts, test_shape),
                       **{"eval.budgets": budgets})
  with pytest.raises((ValueError, FileNotFoundError), match=message):
    pretrain(config, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


def test_the_budget_check_matches_the_few_label_draws(tmp_path, make_config):
  """Budget 3 with a 3-example class passes the check and draws; 4 fails both."""
  dataset = _npz(tmp_path / "d.npz", (6, 3))
  labels = np.repeat([0, 1], [6, 3])
  modalities.get("image").check_evaluable(make_config(dataset=dataset,
                                                      **{"eval.budgets": "(3, '50%', 'all')"}))
  assert label_draws(labels, 3, num_draws=1).shape == (1, 6)
  with pytest.raises(ValueError, match=r"finetune.budget asks for 4"):
    modalities.get("image").check_evaluable(
        make_config(dataset=dataset, **{"eval.budgets": "(1,)", "eval.finetune.budget": "4"}))
  with pytest.raises(ValueError, match="have only"):
    label_draws(labels, 4, num_draws=1)
