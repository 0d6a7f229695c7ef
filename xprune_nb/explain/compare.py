"""Drift metrics: how far two explanations (or two models' predictions) have moved apart.

All functions take one explanation per row (``(n, *input_shape)`` arrays or tensors) and return
one number per row, so a comparison can report them per input and on average. Image inputs
``(n, C, H, W)`` are compared per pixel (channels summed); anything else per feature.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from .._model import eval_mode, logits_of

__all__ = [
    "PerInputDrift",
    "feature_map",
    "rank_correlation",
    "topk_iou",
    "prediction_agreement",
    "deletion_insertion_auc",
]


def _numpy(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().numpy()
    return np.asarray(a)


def feature_map(a) -> np.ndarray:
    """(n, features) view of explanations: pixels of (n, C, H, W) images (channels summed),
    otherwise every entry is a feature."""
    a = _numpy(a).astype(np.float64)
    if a.ndim == 4:
        return a.sum(axis=1).reshape(a.shape[0], -1)
    return a.reshape(a.shape[0], -1)


def _average_ranks(row: np.ndarray) -> np.ndarray:
    order = np.argsort(row, kind="stable")
    ranks = np.empty(len(row), dtype=np.float64)
    ranks[order] = np.arange(len(row), dtype=np.float64)
    sorted_vals = row[order]
    # tied values share the mean of their ranks, as in Spearman's definition
    starts = np.flatnonzero(np.r_[True, sorted_vals[1:] != sorted_vals[:-1]])
    ends = np.r_[starts[1:], len(row)]
    for s, e in zip(starts, ends):
        if e - s > 1:
            ranks[order[s:e]] = (s + e - 1) / 2.0
    return ranks


def rank_correlation(a, b) -> np.ndarray:
    """Spearman rank correlation of each row of ``a`` with the same row of ``b``.

    NaN for a row where either explanation is constant (its ranking is undefined).

    Examples
    --------
    >>> rank_correlation([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]],
    ...                  [[10.0, 20.0, 30.0], [3.0, 2.0, 1.0]]).tolist()
    [1.0, -1.0]
    """
    fa, fb = feature_map(a), feature_map(b)
    out = np.full(len(fa), np.nan)
    for i, (ra, rb) in enumerate(zip(fa, fb)):
        ra, rb = _average_ranks(ra), _average_ranks(rb)
        ra, rb = ra - ra.mean(), rb - rb.mean()
        denom = np.sqrt((ra ** 2).sum() * (rb ** 2).sum())
        if denom > 0:
            out[i] = float((ra * rb).sum() / denom)
    return out


def _top_set(row: np.ndarray, k: int) -> set[int]:
    return set(np.argsort(-np.abs(row), kind="stable")[:k].tolist())


def topk_iou(a, b, k: float = 0.1) -> np.ndarray:
    """Intersection over union of the top ``k`` fraction of features (by absolute value).

    Examples
    --------
    >>> topk_iou([[5.0, 4.0, 0.0, 0.0]], [[5.0, 0.0, 4.0, 0.0]], k=0.5).tolist()
    [0.3333333333333333]
    """
    fa, fb = feature_map(a), feature_map(b)
    count = max(1, int(round(k * fa.shape[1])))
    out = np.empty(len(fa))
    for i, (ra, rb) in enumerate(zip(fa, fb)):
        sa, sb = _top_set(ra, count), _top_set(rb, count)
        out[i] = len(sa & sb) / len(sa | sb)
    return out


def prediction_agreement(pred_a, pred_b) -> float:
    """Fraction of inputs on which two models predict the same class.

    Examples
    --------
    >>> prediction_agreement([0, 1, 2, 3], [0, 1, 2, 0])
    0.75
    """
    pa, pb = _numpy(pred_a), _numpy(pred_b)
    return float((pa == pb).mean()) if len(pa) else float("nan")


def deletion_insertion_auc(
    model: nn.Module, inputs, maps, targets, *,
    forward: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None,
    steps: int = 20, baseline: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Deletion and insertion AUC of each explanation for its own model (Petsiuk et al. 2018).

    Features (pixels of an image, with all their channels) are ordered from the most to the
    least relevant according to ``maps``. *Deletion* replaces them with ``baseline`` in that
    order and tracks the softmax probability of the target class; a faithful map makes it fall
    fast, so **lower is better**. *Insertion* starts from the baseline and puts them back;
    **higher is better**. The AUC is the trapezoidal mean over the ``steps + 1`` fractions
    0, 1/steps, ..., 1. All variants of all inputs run in one batched forward pass. RISE uses a
    blurred image as the insertion baseline; a constant baseline keeps this meaningful for
    tabular data too.

    Returns
    -------
    deletion, insertion : ndarray of shape (n,)

    References
    ----------
    Petsiuk, Das, Saenko. RISE: Randomized Input Sampling for Explanation of Black-box Models.
    BMVC 2018.
    """
    forward = forward or (lambda m, x: logits_of(m(x)))
    x = torch.as_tensor(_numpy(inputs), dtype=torch.float32)
    t = torch.as_tensor(_numpy(targets)).long()
    n = x.shape[0]
    relevance = torch.as_tensor(feature_map(maps))           # (n, features)
    image = x.dim() == 4
    feats = relevance.shape[1]
    order = torch.argsort(-relevance, dim=1, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(feats).expand(n, feats))
    fractions = torch.linspace(0, 1, steps + 1)
    cut = torch.round(fractions * feats).long()               # features changed at each step
    changed = rank.unsqueeze(1) < cut.view(1, -1, 1)          # (n, steps+1, features)
    if image:
        changed = changed.view(n, steps + 1, 1, *x.shape[2:])
    else:
        changed = changed.view(n, steps + 1, *x.shape[1:])
    xs = x.unsqueeze(1).expand(n, steps + 1, *x.shape[1:])
    base = torch.full_like(xs, baseline)
    deleted = torch.where(changed, base, xs)
    inserted = torch.where(changed, xs, base)
    batch = torch.cat([deleted, inserted]).reshape(-1, *x.shape[1:])
    with torch.no_grad(), eval_mode(model):
        probs = torch.softmax(forward(model, batch).double(), dim=1)
    probs = probs.reshape(2, n, steps + 1, -1)
    idx = t.view(1, n, 1, 1).expand(2, n, steps + 1, 1)
    curve = probs.gather(3, idx).squeeze(3).numpy()
    width = np.diff(fractions.double().numpy())
    auc = ((curve[..., 1:] + curve[..., :-1]) / 2 * width).sum(axis=2)
    return auc[0], auc[1]


class PerInputDrift:
    """What every before/after comparison of per-input maps shares (saliency, attention,
    tokens): the prediction agreement, class labels, and one row per input with the drift
    numbers under their glossary names (``explain/glossary.py``).

    Subclasses are dataclasses with ``targets``, ``pred_before``, ``pred_after``,
    ``spearman``, ``topk_iou``, ``deletion_before/after``, ``insertion_before/after`` and
    ``class_names``; ``completeness_before/after`` are used when present.
    """

    #: leading columns that are labels, not drift numbers
    _label_columns: tuple[str, ...] = ("target", "pred_before", "pred_after")

    @property
    def agreement(self) -> float:
        """Fraction of inputs on which both models predict the same class."""
        return prediction_agreement(self.pred_before, self.pred_after)

    def label(self, index) -> str:
        index = int(index)
        if self.class_names and 0 <= index < len(self.class_names):
            return str(self.class_names[index])
        return str(index)

    def _leading_columns(self) -> dict:
        return {}

    def to_frame(self):
        """One row per input: target, both predictions and every drift number."""
        import pandas as pd

        frame = pd.DataFrame({
            **self._leading_columns(),
            "target": [self.label(t) for t in self.targets],
            "pred_before": [self.label(p) for p in self.pred_before],
            "pred_after": [self.label(p) for p in self.pred_after],
            "saliency_rank_correlation": self.spearman, "saliency_topk_iou": self.topk_iou,
            "deletion_auc_before": self.deletion_before,
            "deletion_auc_after": self.deletion_after,
            "insertion_auc_before": self.insertion_before,
            "insertion_auc_after": self.insertion_after})
        if getattr(self, "completeness_before", None) is not None:
            frame["completeness_before"] = self.completeness_before
            frame["completeness_after"] = self.completeness_after
        frame.index.name = "input"
        return frame

    def summary(self) -> dict[str, float]:
        """Mean of every drift number over the inputs, plus the prediction agreement."""
        frame = self.to_frame().drop(columns=[*self._leading_columns(), *self._label_columns])
        out = {"agreement": self.agreement}
        out.update({k: float(np.nanmean(v)) for k, v in frame.items()})
        return out
