"""Evaluation of frozen features: weighted kNN, linear probe, few-label protocol, result tables.

Everything here works on feature arrays (``[N, D]``) the caller extracted once per source; see
:func:`ssl_jax.evaluate.fewshot.evaluate_features` for the eval.json schema it produces.
"""

from ssl_jax.evaluate.fewshot import (DEFAULT_FEW_LABEL_L2, cv_select_l2, evaluate_features,
                                      label_draws)
from ssl_jax.evaluate.knn import knn_predict
from ssl_jax.evaluate.linear import (DEFAULT_L2_GRID, LinearProbe, linear_probe_fit,
                                     linear_probe_logits, linear_probe_predict, select_l2,
                                     sklearn_C)
from ssl_jax.evaluate.table import format_table

__all__ = [
    "DEFAULT_FEW_LABEL_L2", "DEFAULT_L2_GRID", "LinearProbe", "cv_select_l2", "evaluate_features",
    "format_table", "knn_predict", "label_draws", "linear_probe_fit", "linear_probe_logits",
    "linear_probe_predict", "select_l2", "sklearn_C",
]
