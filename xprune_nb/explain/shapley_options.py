"""What ``study.shapley`` may be asked to explain and how many samples it may spend:
``classes=`` (which outputs, the same for both models) and ``nsamples=`` (shap's sample budget),
checked at the boundary with the package's message shape.

Examples
--------
>>> check_classes_choice([2, 0], 3), check_classes_choice("predicted", 3)
([2, 0], 'predicted')
>>> auto_nsamples("gradient", 3 * 224 * 224, "auto"), auto_nsamples("gradient", 64, "auto")
(32, 200)
"""

from __future__ import annotations

import numbers
from collections.abc import Callable

import torch
from torch import nn

from ..core.errors import ConfigError
from ..models.mechanisms.model_tools import eval_mode, logits_of

__all__ = ["CLASS_CHOICES", "check_nsamples", "check_classes_choice", "auto_nsamples",
           "pick_classes"]

Forward = Callable[[nn.Module, torch.Tensor], torch.Tensor]

#: ``classes=`` words: every output, or the classes the first model predicts on the rows
CLASS_CHOICES = ("auto", "all", "predicted")
#: ``nsamples="auto"`` for ``gradient``: shap's default up to this many input values per row,
#: fewer above (each sample is one forward and backward pass of one row per class)
_GRADIENT_SAMPLES = ((4096, 200), (None, 32))


def check_nsamples(nsamples, call: str = "study.shapley") -> None:
    """Refuse an ``nsamples`` other than ``"auto"`` or an integer >= 1, naming ``call``."""
    if isinstance(nsamples, str) and nsamples == "auto":
        return
    if isinstance(nsamples, bool) or not isinstance(nsamples, numbers.Integral) or nsamples < 1:
        raise ConfigError.bad_value(call, "nsamples", "'auto' or an integer >= 1", nsamples)


def check_classes_choice(classes, num_classes: int | None, call: str = "study.shapley"
                         ) -> list[int] | str:
    """``classes`` as one of :data:`CLASS_CHOICES` or a list of distinct output indices in
    ``[0, num_classes)`` (``num_classes=None``: not checked against a count yet)."""
    if isinstance(classes, str):
        if classes not in CLASS_CHOICES:
            raise ConfigError.bad_value(call, "classes", f"one of {list(CLASS_CHOICES)} or a "
                                        "list of class indices", classes)
        return classes
    try:
        picked = [int(c) for c in classes]
        ok = all(isinstance(c, numbers.Integral) and not isinstance(c, bool) for c in classes)
    except (TypeError, ValueError):
        picked, ok = [], False
    top = num_classes if num_classes is not None else float("inf")
    if (not ok or not picked or len(set(picked)) != len(picked)
            or min(picked) < 0 or max(picked) >= top):
        bound = f" in [0, {num_classes})" if num_classes is not None else ""
        raise ConfigError.bad_value(call, "classes", f"one of {list(CLASS_CHOICES)} or a "
                                    f"non-empty list of distinct class indices{bound}", classes)
    return picked


def auto_nsamples(explainer: str, features: int, nsamples):
    """``nsamples`` with ``"auto"`` resolved for ``gradient`` (others keep shap's meaning)."""
    if nsamples != "auto" or explainer != "gradient":
        return nsamples
    return next(n for limit, n in _GRADIENT_SAMPLES if limit is None or features <= limit)


def pick_classes(classes, model: nn.Module, x: torch.Tensor, forward: Forward | None
                 ) -> list[int] | None:
    """The output indices to explain (``None``: all), checked against the model's outputs."""
    if classes == "all" or (classes == "auto" and x.dim() == 2):
        return None
    forward = forward or (lambda m, v: logits_of(m(v)))
    dtype = next(iter(model.parameters()), torch.zeros(())).dtype
    with torch.no_grad(), eval_mode(model):
        logits = forward(model, x.to(dtype))
    if logits.dim() != 2:
        return None       # shapley_values explains a model without a class axis as one output
    if classes in ("auto", "predicted"):
        return sorted(set(logits.argmax(1).tolist()))
    return check_classes_choice(classes, logits.shape[1])
