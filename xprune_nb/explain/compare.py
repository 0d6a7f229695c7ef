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

from ..models.mechanisms.model_tools import eval_mode, logits_of

__all__ = [
    "PerInputDrift",
    "feature_map",
    "map_reasons",
    "pair_reasons",
    "rank_correlation",
    "top_set",
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


def map_reasons(a, *, absolute: bool = False) -> list[str]:
    """Why each row's map can not be ranked ('' where it can).

    A map with a NaN or infinite entry, an all-zero map and a constant map (by absolute value
    when ``absolute``, as the top-k overlap ranks) order nothing: every number that ranks
    features is NaN for them, with this reason, never a perfect score.

    Examples
    --------
    >>> map_reasons([[0.0, 0.0], [1.0, float("nan")], [2.0, 2.0], [1.0, -1.0], [1.0, 2.0]],
    ...             absolute=True)
    ['all-zero map', 'non-finite values in the map', 'constant map', 'constant map', '']
    """
    fa = feature_map(a)
    out = []
    for row in fa:
        if not np.isfinite(row).all():
            out.append("non-finite values in the map")
            continue
        r = np.abs(row) if absolute else row
        if not r.any():
            out.append("all-zero map")
        elif r.max() == r.min():
            out.append("constant map")
        else:
            out.append("")
    return out


def pair_reasons(a, b, *, absolute: bool = False) -> list[str]:
    """Per row, why a number comparing map ``a`` with map ``b`` is missing ('' where it is
    not), naming the side: ``"before: all-zero map"``.

    Examples
    --------
    >>> pair_reasons([[0.0, 0.0], [1.0, 2.0]], [[1.0, 2.0], [1.0, 2.0]])
    ['before: all-zero map', '']
    """
    ra, rb = map_reasons(a, absolute=absolute), map_reasons(b, absolute=absolute)
    return ["; ".join(f"{side}: {r}" for side, r in (("before", x), ("after", y)) if r)
            for x, y in zip(ra, rb)]


def rank_correlation(a, b) -> np.ndarray:
    """Spearman rank correlation of each row of ``a`` with the same row of ``b``.

    Signed values: 1 = the same order, -1 = the reverse order (a sign flip of a map
    reverses it). Tied values share their mean rank (Spearman's definition). NaN for a row
    where either map is constant, all zero or has a non-finite entry (see
    :func:`map_reasons`): such a map has no ranking.

    Examples
    --------
    >>> rank_correlation([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [0.0, 0.0, 0.0]],
    ...                  [[10.0, 20.0, 30.0], [3.0, 2.0, 1.0], [0.0, 0.0, 0.0]]).tolist()
    [1.0, -1.0, nan]
    """
    fa, fb = feature_map(a), feature_map(b)
    ok = [not (x or y) for x, y in zip(map_reasons(fa), map_reasons(fb))]
    out = np.full(len(fa), np.nan)
    for i, (ra, rb) in enumerate(zip(fa, fb)):
        if not ok[i]:
            continue
        ra, rb = _average_ranks(ra), _average_ranks(rb)
        ra, rb = ra - ra.mean(), rb - rb.mean()
        denom = np.sqrt((ra ** 2).sum() * (rb ** 2).sum())
        if denom > 0:
            out[i] = float((ra * rb).sum() / denom)
    return out


def top_set(row, k: int) -> set[int]:
    """The features of ``row`` in its top ``k`` by absolute value, independent of their order.

    Every feature whose absolute value reaches the ``k``-th largest is in (all ties at the cut
    are kept, so the set can hold more than ``k``), and a feature of zero relevance never is
    (so it can hold fewer): the set is the same whatever order the features come in.

    Examples
    --------
    >>> sorted(top_set([3.0, -2.0, 2.0, 0.0, 1.0], 2)), sorted(top_set([5.0, 0.0, 0.0], 2))
    ([0, 1, 2], [0])
    """
    r = np.abs(np.asarray(row, dtype=np.float64))
    k = min(max(int(k), 1), len(r))
    cut = np.partition(r, len(r) - k)[len(r) - k]
    return set(np.flatnonzero((r >= cut) & (r > 0)).tolist())


def topk_iou(a, b, k: float = 0.1) -> np.ndarray:
    """Intersection over union of the top ``k`` fraction of features (by absolute value).

    The top set is :func:`top_set` of ``round(k * features)`` (at least one): ties at the cut
    are all kept and zero relevance never counts, so the result does not depend on the order
    of the features. Ranking by absolute value means a sign flip of a map scores 1 (the same
    features matter, pushing the other way); rank correlation sees the flip. NaN for a row where
    either map has no top set: all zero, constant in absolute value, or non-finite.

    Examples
    --------
    >>> topk_iou([[5.0, 4.0, 0.0, 0.0]], [[5.0, 0.0, 4.0, 0.0]], k=0.5).tolist()
    [0.3333333333333333]
    >>> topk_iou([[0.0, 0.0, 0.0, 0.0]], [[0.0, 0.0, 0.0, 0.0]], k=0.5).tolist()
    [nan]
    """
    fa, fb = feature_map(a), feature_map(b)
    count = max(1, int(round(k * fa.shape[1])))
    bad = [x or y for x, y in zip(map_reasons(fa, absolute=True),
                                  map_reasons(fb, absolute=True))]
    out = np.full(len(fa), np.nan)
    for i, (ra, rb) in enumerate(zip(fa, fb)):
        if bad[i]:
            continue
        sa, sb = top_set(ra, count), top_set(rb, count)
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


#: input elements per forward pass of the deletion/insertion curves (27 images of 3x224x224)
_AUC_FORWARD_ELEMENTS = 1 << 22


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
    0, 1/steps, ..., 1. All variants of all inputs run batched, in forward passes of at most
    about four million input values (27 images of 224 px; tabular rows all at once). RISE uses a
    blurred image as the insertion baseline; a constant baseline keeps this meaningful for
    tabular data too. The order is by signed relevance (evidence for the target first); equal
    values keep their position order. A map that orders nothing (all zero, constant or with a
    non-finite entry, see :func:`map_reasons`) gets NaN, not the AUC of the pixel order.

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
    # non-finite entries are masked out of the ordering here and NaN'd below
    relevance = torch.nan_to_num(torch.as_tensor(feature_map(maps)))      # (n, features)
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
    # 2 x (steps + 1) variants per input: 336 images for 8 inputs, several GB of ResNet-50
    # activations in one pass; bounded chunks keep the peak near one batch of the model's
    rows = max(1, _AUC_FORWARD_ELEMENTS // max(1, batch[0].numel()))
    with torch.no_grad(), eval_mode(model):
        logits = torch.cat([forward(model, batch[i:i + rows]).double()
                            for i in range(0, len(batch), rows)])
        probs = torch.softmax(logits, dim=1)
    probs = probs.reshape(2, n, steps + 1, -1)
    idx = t.view(1, n, 1, 1).expand(2, n, steps + 1, 1)
    curve = probs.gather(3, idx).squeeze(3).numpy()
    width = np.diff(fractions.double().numpy())
    auc = ((curve[..., 1:] + curve[..., :-1]) / 2 * width).sum(axis=2)
    bad = np.array([bool(r) for r in map_reasons(maps)])
    auc[:, bad] = np.nan
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

    def _maps(self):
        """The two maps the drift numbers compare (``before``/``after`` by default)."""
        return self.before, self.after

    def reasons(self) -> list[str]:
        """Per input, why a drift number of that row is NaN ('' where every number is there):
        a map that is all zero, constant or non-finite ranks nothing (:func:`map_reasons`)."""
        before, after = self._maps()
        signed, absolute = pair_reasons(before, after), pair_reasons(before, after,
                                                                     absolute=True)
        return [s or a for s, a in zip(signed, absolute)]

    def to_frame(self):
        """One row per input: target, both predictions, every drift number, and ``reason``
        (why a number of that row is NaN; empty where none is)."""
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
        for name in self._extra_columns():
            frame[name] = getattr(self, name)
        frame["reason"] = self.reasons()
        frame.index.name = "input"
        return frame

    def _extra_columns(self) -> list[str]:
        """Per-input numbers a method adds when it has them (completeness, conservation)."""
        names = ("completeness_before", "completeness_after", "conserved_share_before",
                 "conserved_share_after", "absorbed_share_before", "absorbed_share_after")
        return [n for n in names if getattr(self, n, None) is not None]

    def _numbers(self):
        return self.to_frame().drop(columns=[*self._leading_columns(), *self._label_columns,
                                             "reason"])

    def summary(self) -> dict[str, float]:
        """Mean of every drift number over the inputs that have it, plus the prediction
        agreement; NaN where no input has it (:meth:`not_available` says why)."""
        from .numbers import finite_mean

        out = {"agreement": self.agreement}
        for k, v in self._numbers().items():
            out[k] = finite_mean(v)
        return out

    def not_available(self) -> dict[str, str]:
        """For each drift number that some inputs lack: how many and why, e.g.
        ``{"saliency_rank_correlation": "1 of 8 inputs n/a (after: all-zero map)"}``. The
        summary's means leave those inputs out; this says so."""
        from .numbers import missing_note

        reasons = self.reasons()
        out = {}
        for k, v in self._numbers().items():
            note = missing_note(list(v), reasons)
            if note:
                out[k] = note
        return out

    def _summary_text(self, *names: str) -> str:
        """``name=value`` for the repr, ``n/a: reason`` where the mean is missing."""
        from .numbers import shown

        s, gone = self.summary(), self.not_available()
        return ", ".join(f"{n}={shown(s[n], gone.get(n))}" for n in names)

    def _summary_html(self, title: str) -> str:
        from .plots import html_report

        return html_report(title, self.summary(), self.to_frame(), notes=self.not_available())
