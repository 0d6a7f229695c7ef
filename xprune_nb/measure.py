"""What every new step records about its model: metrics, masks and explanation drift."""

from __future__ import annotations

from torch import nn

from .history import Step
from .metrics import evaluate_model

__all__ = ["measure_step"]


def measure_step(study, step: Step, model: nn.Module, seconds: float = 0.0) -> None:
    """Fill ``step``'s metrics, per-class accuracy, masked layers and drift from ``model``.

    Drift is measured on the study's fixed probe set against the original model (see
    :func:`xprune_nb.explain.drift.probe_drift`); without the explain extra it is left empty.
    """
    from .pruning.unstructured import masked_layers

    m = evaluate_model(model, study.data, study.forward, latency=False)
    step.metrics = dict(m.as_dict())
    step.per_class_accuracy = m.per_class_accuracy
    step.masked = masked_layers(model)
    step.seconds = seconds
    try:
        from .explain.drift import probe_drift
    except ImportError:   # explanations are an optional extra
        step.drift = {}
        return
    step.drift = probe_drift(study.original, model, study.probe_x, study.probe_y,
                             forward=study.forward)
