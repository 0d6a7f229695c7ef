"""The one number exercise 2 is about: how close two steps' saliency maps are.

It is recomputed from the student's own study, so a check never compares with a fixed key.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["saliency_similarity", "SIMILARITY_ROWS"]

#: Test rows the similarity is measured on (the first ones of the test split).
SIMILARITY_ROWS = 64


def _gradient_maps(study, model: torch.nn.Module, x: torch.Tensor,
                   y: torch.Tensor) -> np.ndarray:
    """|d logit[target] / d input| per example, flattened."""
    x = x.detach().clone().float().requires_grad_(True)
    logits = study.forward(model, x)
    (grad,) = torch.autograd.grad(logits.gather(1, y.long()[:, None]).sum(), x)
    return grad.abs().reshape(len(x), -1).double().numpy()


def _ranks(row: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(row)


def saliency_similarity(study, step, before: int = 0, n: int = SIMILARITY_ROWS) -> float:
    """Mean Spearman rank correlation between the gradient saliency maps of two steps' models.

    Maps are ``|d logit / d input|`` for the true class of each of the first ``n`` test
    examples; 1.0 means the same pixel (feature) ranking, 0 none in common. It is the rank
    correlation that ``study.saliency(before, step)`` reports for ``method="saliency"``,
    measured here on a fixed set of rows so that a check and a student get the same number.
    Rounded to 3 decimals, so it does not depend on the CPU thread count.

    Parameters
    ----------
    study : Study
    step : int or Step
        The step whose model is compared with ``before``'s.
    before : int
        The reference step (default: the original model).
    n : int
        Test rows used (the first ``n``).

    Examples
    --------
    >>> import xprune_nb as xp
    >>> from xprune_nb.ui.exercises import saliency_similarity
    >>> study = xp.Study(xp.zoo.load("toy_mlp"), xp.datasets.load("moons"))
    >>> saliency_similarity(study, 0)
    1.0
    """
    from ...core.history import Step

    index = step.index if isinstance(step, Step) else step
    after_model = study.model_at(index)
    before_model = study.model_at(before)
    x, y = study.data.test.X[:n], study.data.test.y[:n]
    with torch.enable_grad():
        a = _gradient_maps(study, before_model, x, y)
        b = _gradient_maps(study, after_model, x, y)
    values = []
    for ra, rb in zip(a, b):
        ra, rb = _ranks(ra), _ranks(rb)
        if ra.std() == 0 or rb.std() == 0:  # a constant map has no ranking
            values.append(1.0 if np.array_equal(ra, rb) else 0.0)
        else:
            values.append(float(np.corrcoef(ra, rb)[0, 1]))
    return round(float(np.mean(values)), 3)
