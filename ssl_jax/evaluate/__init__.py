"""Evaluation: weighted kNN, linear probe, few-label protocol, result tables (on feature arrays
``[N, D]`` the caller extracted once per source; see
:func:`ssl_jax.evaluate.fewshot.evaluate_features` for the eval.json schema), and, in their own
modules (imported on demand): fine-tuning (``finetune``), the workdir runner (``runner``) and the
visual report (``report``). Training-time health monitors and the online probe live in the
training layer (:mod:`ssl_jax.train.monitors`, :mod:`ssl_jax.train.online_probe`).
"""

from ssl_jax.data.budgets import percent_counts
from ssl_jax.evaluate.fewshot import (DEFAULT_FEW_LABEL_L2, cv_select_l2, evaluate_features,
                                      label_draws)
from ssl_jax.evaluate.knn import knn_predict, knn_predict_streaming
from ssl_jax.evaluate.linear import (DEFAULT_L2_GRID, LinearProbe, linear_probe_fit,
                                     linear_probe_logits, linear_probe_predict, select_l2,
                                     sklearn_C)
from ssl_jax.evaluate.table import format_table

__all__ = [
    "DEFAULT_FEW_LABEL_L2", "DEFAULT_L2_GRID", "LinearProbe", "cv_select_l2", "evaluate_features",
    "format_table", "knn_predict", "knn_predict_streaming", "label_draws", "linear_probe_fit",
    "linear_probe_logits", "linear_probe_predict", "percent_counts", "select_l2", "sklearn_C",
]
