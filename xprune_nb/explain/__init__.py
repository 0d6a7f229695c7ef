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
from .unit_history import UnitWhy
from .why import WhyReport, why_removed, why_unit

# transformers, tokens, grounding and forgotten examples load their dependencies on first use
_LAZY = {
    "compare_attention": "attention_compare", "attention_maps": "attention_compare",
    "AttentionComparison": "attention_compare", "TokenComparison": "token_compare",
    "compare_token_saliency": "token_compare", "compare_token_shapley": "token_compare",
    "relevance_mass_in_box": "grounding", "pointing_game": "grounding",
    "relevance_rank_accuracy": "grounding",
    "compare_grounding": "grounding", "forgotten": "forgotten",
    "ForgottenReport": "forgotten", "GLOSSARY": "glossary",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    "UnitWhy",
    "rank_correlation",
    "topk_iou",
    "prediction_agreement",
    "deletion_insertion_auc",
    "feature_map",
    *_LAZY,
]
