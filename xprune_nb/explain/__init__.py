"""Explanations before and after pruning: saliency and Shapley comparisons, drift, and why units
were removed.

Nothing here imports captum, shap or zennit until a method that needs them is called, so
``import xprune_nb`` stays light.

Examples
--------
>>> import torch
>>> from torch import nn
>>> from xprune_nb import explain
>>> net = nn.Sequential(nn.Linear(4, 3))
>>> comp = explain.compare_saliency(net, net, torch.randn(4, 4))
>>> float(comp.spearman.mean()), comp.agreement
(1.0, 1.0)
"""

from .compare import (
    deletion_insertion_auc,
    feature_map,
    prediction_agreement,
    rank_correlation,
    topk_iou,
)
from .drift import DriftReport, probe_drift
from .saliency import METHODS, SaliencyComparison, attribute, compare_saliency, gradient_saliency
from .shapley import EXPLAINERS, OUTPUTS, ShapleyComparison, compare_shapley, shapley_values
from .why import WhyReport, why_removed, why_unit

__all__ = [
    "METHODS",
    "EXPLAINERS",
    "OUTPUTS",
    "attribute",
    "gradient_saliency",
    "compare_saliency",
    "SaliencyComparison",
    "shapley_values",
    "compare_shapley",
    "ShapleyComparison",
    "probe_drift",
    "DriftReport",
    "why_removed",
    "why_unit",
    "WhyReport",
    "rank_correlation",
    "topk_iou",
    "prediction_agreement",
    "deletion_insertion_auc",
    "feature_map",
]
