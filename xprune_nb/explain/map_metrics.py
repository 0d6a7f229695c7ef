"""Per-row drift metrics of two explanations: rank correlation, top-k overlap, prediction
agreement, and why a map ranks nothing.

All functions take one explanation per row (``(n, *input_shape)`` arrays or tensors) and return
one number per row, so a comparison can report them per input and on average. Image inputs
``(n, C, H, W)`` are compared per pixel (channels summed); anything else per feature.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["feature_map", "map_reasons", "pair_reasons", "rank_correlation", "top_set",
           "topk_iou", "prediction_agreement"]


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
