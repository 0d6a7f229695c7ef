"""Does an explanation point at the evidence? Metrics against ground-truth boxes.

``relevance_mass_in_box`` (relevance mass accuracy, Arras, Osman & Samek 2022, CLEVR-XAI): the
share of an attribution map's positive relevance that falls inside the box where the evidence
is. ``pointing_game`` (Zhang et al. 2016/2018): whether the single most relevant pixel lies in
the box. Both read image maps ``(N, C, H, W)`` per pixel (channels summed) or ``(N, H, W)``.

:func:`compare_grounding` turns a before/after comparison (saliency, attention rollout) into
these numbers for both models: "the pruned model still looks at what matters" becomes a table;
:func:`grounding` does it for two steps of a study on ``digits_boxes``.

Examples
--------
>>> import numpy as np
>>> maps = np.zeros((1, 1, 4, 4)); maps[0, 0, 0, 0] = 3.0; maps[0, 0, 3, 3] = 1.0
>>> relevance_mass_in_box(maps, [[0, 0, 2, 2]]).tolist(), pointing_game(maps, [[0, 0, 2, 2]])
([0.75], array([1.]))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..core.errors import ConfigError

__all__ = ["relevance_mass_in_box", "relevance_rank_accuracy", "pointing_game",
           "grounding_reasons", "GroundingComparison",
           "compare_grounding", "grounding"]


def _pixels(attributions, call: str) -> np.ndarray:
    a = np.asarray(getattr(attributions, "detach", lambda: attributions)(), dtype=np.float64)
    if a.ndim == 4:
        a = a.sum(1)
    if a.ndim != 3:
        raise ConfigError.bad_value(call, "attributions", "image maps (N, C, H, W) or (N, H, W)",
                                    a.shape)
    return a


def _boxes(boxes, n: int, shape: tuple[int, int], call: str) -> np.ndarray:
    b = np.asarray(boxes)
    if b.shape != (n, 4) or not np.issubdtype(b.dtype, np.integer):
        raise ConfigError.bad_value(call, "boxes", f"{n} integer boxes (row0, col0, row1, col1)",
                                    b.shape if b.ndim else boxes)
    h, w = shape
    if (b[:, 0] < 0).any() or (b[:, 1] < 0).any() or (b[:, 2] > h).any() or (b[:, 3] > w).any() \
            or (b[:, 2] <= b[:, 0]).any() or (b[:, 3] <= b[:, 1]).any():
        raise ConfigError.bad_value(call, "boxes", f"non-empty boxes inside the {h}x{w} image "
                                    "(end-exclusive)", b.tolist()[:3])
    return b


def _inside(boxes: np.ndarray, shape: tuple[int, int], pad: int = 0) -> np.ndarray:
    h, w = shape
    rows, cols = np.arange(h)[None, :, None], np.arange(w)[None, None, :]
    b = boxes[:, :, None, None]
    return ((rows >= b[:, 0] - pad) & (rows < b[:, 2] + pad)
            & (cols >= b[:, 1] - pad) & (cols < b[:, 3] + pad))


def _finite(a: np.ndarray) -> np.ndarray:
    return np.isfinite(a.reshape(len(a), -1)).all(1)


def relevance_mass_in_box(attributions, boxes, *, positive: bool = True) -> np.ndarray:
    """Share of each map's relevance inside its box: ``sum_box R+ / sum R+`` (``positive``;
    else absolute values). In [0, 1]; higher = more of the evidence for the class is inside.
    NaN for a map with no positive (or, with ``positive=False``, no) relevance at all or with
    a non-finite entry.

    Quantus's ``RelevanceMassAccuracy`` sums the signed map; on maps without negative values
    both agree exactly (tested). Negative relevance (evidence against the class) is left out
    here so that the share stays in [0, 1] and means "where the evidence for the class is".

    Examples
    --------
    >>> relevance_mass_in_box(np.ones((1, 4, 4)), [[0, 0, 2, 2]]).tolist()
    [0.25]
    """
    call = "relevance_mass_in_box"
    a = _pixels(attributions, call)
    b = _boxes(boxes, len(a), a.shape[1:], call)
    r = np.clip(a, 0, None) if positive else np.abs(a)
    total = r.sum((1, 2))
    inside = (r * _inside(b, a.shape[1:])).sum((1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(total > 0, inside / np.where(total > 0, total, 1), np.nan)
    return np.where(_finite(a), out, np.nan)


def relevance_rank_accuracy(attributions, boxes) -> np.ndarray:
    """Share of the ``K`` most relevant pixels that lie in the box, ``K`` = the box's size
    (relevance rank accuracy, Arras, Osman & Samek 2022). In [0, 1]; higher = better.

    Pixels are ranked by signed relevance. Pixels tied at the cut count with the share of
    the ``K`` places left for them (the mean over every order of the tie), so the number does
    not depend on the pixel order; Quantus's ``RelevanceRankAccuracy`` breaks such ties by
    its sort and agrees exactly on maps without ties at the cut (tested). NaN for a constant
    map (it ranks nothing) or one with a non-finite entry.

    Examples
    --------
    >>> m = np.zeros((1, 3, 3)); m[0, 0, 0] = 2; m[0, 2, 2] = 1
    >>> relevance_rank_accuracy(m, [[0, 0, 1, 2]]).tolist()
    [0.5]
    """
    call = "relevance_rank_accuracy"
    a = _pixels(attributions, call)
    b = _boxes(boxes, len(a), a.shape[1:], call)
    inside = _inside(b, a.shape[1:]).reshape(len(a), -1)
    flat = a.reshape(len(a), -1)
    out = np.full(len(a), np.nan)
    for i, (row, box) in enumerate(zip(flat, inside)):
        if not np.isfinite(row).all() or row.max() == row.min():
            continue
        k = int(box.sum())
        cut = np.sort(row)[::-1][k - 1]
        above, tied = row > cut, row == cut
        hits = (above & box).sum() + (k - above.sum()) * (tied & box).sum() / tied.sum()
        out[i] = hits / k
    return out


def pointing_game(attributions, boxes, *, tolerance: int = 0) -> np.ndarray:
    """1.0 where the most relevant pixel lies in the box (grown by ``tolerance`` pixels), else
    0.0. When several pixels share the maximum, it is a hit if any of them lies in the box
    (Quantus's ``PointingGame`` rule: it does not depend on the pixel order). NaN for a
    constant map (every pixel is a maximum: it points nowhere; Quantus counts it as a hit) and
    for a map with a non-finite entry.

    Examples
    --------
    >>> m = np.zeros((2, 3, 3)); m[0, 0, 0] = 1; m[1, 2, 2] = 1
    >>> pointing_game(m, [[0, 0, 1, 1], [0, 0, 1, 1]]).tolist()
    [1.0, 0.0]
    """
    call = "pointing_game"
    a = _pixels(attributions, call)
    b = _boxes(boxes, len(a), a.shape[1:], call)
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, np.integer)) \
            or tolerance < 0:
        raise ConfigError.bad_value(call, "tolerance", "an integer >= 0 (pixels)", tolerance)
    flat = a.reshape(len(a), -1)
    inside = _inside(b, a.shape[1:], int(tolerance)).reshape(len(a), -1)
    with np.errstate(invalid="ignore"):
        top = flat == flat.max(1, keepdims=True)
        hit = (top & inside).any(1).astype(np.float64)
        constant = flat.max(1) == flat.min(1)
    return np.where(constant | ~_finite(a), np.nan, hit)


def grounding_reasons(attributions) -> list[str]:
    """Per map, why its grounding numbers are NaN ('' where they are not)."""
    a = _pixels(attributions, "grounding_reasons")
    out = []
    for row in a.reshape(len(a), -1):
        if not np.isfinite(row).all():
            out.append("non-finite values in the map")
        elif not row.any():
            out.append("all-zero map")
        elif row.max() == row.min():
            out.append("constant map")
        elif row.max() <= 0:
            out.append("no positive relevance (mass in box)")
        else:
            out.append("")
    return out


@dataclass
class GroundingComparison:
    """Relevance mass inside the box and pointing-game hits of two models' maps."""

    method: str
    boxes: np.ndarray
    mass_before: np.ndarray
    mass_after: np.ndarray
    hit_before: np.ndarray
    hit_after: np.ndarray
    box_fraction: np.ndarray
    steps: tuple = (0, -1)
    rank_before: np.ndarray | None = None
    rank_after: np.ndarray | None = None
    #: per input, why a number of that row is NaN ('' where none is)
    reasons: list[str] | None = None

    def to_frame(self):
        """One row per input: box, its share of the image, mass, rank accuracy and pointing
        hit before and after, and ``reason`` (why a number of that row is NaN)."""
        import pandas as pd

        columns = {"box": [tuple(int(v) for v in b) for b in self.boxes],
                   "box_fraction": self.box_fraction,
                   "mass_in_box_before": self.mass_before,
                   "mass_in_box_after": self.mass_after}
        if self.rank_before is not None:
            columns["rank_accuracy_before"] = self.rank_before
            columns["rank_accuracy_after"] = self.rank_after
        columns.update({"pointing_before": self.hit_before, "pointing_after": self.hit_after,
                        "reason": self.reasons or [""] * len(self.boxes)})
        frame = pd.DataFrame(columns)
        frame.index.name = "input"
        return frame

    def summary(self) -> dict[str, float]:
        """Means over the inputs that have the number (NaN where none has it; see
        :meth:`not_available`); ``box_fraction`` is what a uniform map would score."""
        from .numbers import finite_mean

        frame = self.to_frame().drop(columns=["box", "reason"])
        out = {}
        for k, v in frame.items():
            out[k] = finite_mean(v)
        return out

    def not_available(self) -> dict[str, str]:
        """For each number some inputs lack: how many and why (the means leave them out)."""
        from .numbers import missing_note

        frame = self.to_frame()
        reasons = list(frame["reason"])
        out = {}
        for k, v in frame.drop(columns=["box", "reason"]).items():
            note = missing_note(list(v), reasons)
            if note:
                out[k] = note
        return out

    def plot(self, ax=None):
        """Mass inside the box before vs after, one dot per input (above the diagonal: the
        pruned model's explanation is more on the evidence). Returns the axes."""
        import matplotlib.pyplot as plt

        ax = ax if ax is not None else plt.figure(figsize=(4, 4)).add_subplot(1, 1, 1)
        ax.scatter(self.mass_before, self.mass_after, s=14)
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8)
        ax.axhline(float(np.mean(self.box_fraction)), color="grey", ls=":", lw=0.8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel(f"mass in box, step {self.steps[0]}")
        ax.set_ylabel(f"mass in box, step {self.steps[1]}")
        ax.set_title(f"{self.method}: relevance on the evidence", fontsize=9)
        return ax

    def __repr__(self) -> str:
        from .numbers import shown

        s, gone = self.summary(), self.not_available()

        def pair(name: str) -> str:
            return " -> ".join(shown(s[f"{name}_{w}"], gone.get(f"{name}_{w}"))
                               for w in ("before", "after"))

        return (f"GroundingComparison(method={self.method!r}, inputs={len(self.boxes)}, "
                f"mass_in_box {pair('mass_in_box')}, pointing {pair('pointing')})")

    def _repr_html_(self) -> str:
        from .plots import html_report

        return html_report(f"Relevance on the evidence ({self.method}), step {self.steps[0]} "
                           f"vs {self.steps[1]}", self.summary(), self.to_frame(),
                           notes=self.not_available())


def compare_grounding(comparison, boxes, *, tolerance: int = 0) -> GroundingComparison:
    """Grounding numbers of a saliency or attention comparison (its ``before``/``after`` maps,
    or ``scores_before``/``scores_after`` for attention rollout) against ``boxes``."""
    before = getattr(comparison, "before", None)
    after = getattr(comparison, "after", None)
    if before is None or getattr(before, "ndim", 0) < 3:
        before, after = (getattr(comparison, "scores_before", None),
                         getattr(comparison, "scores_after", None))
    if before is None:
        raise ConfigError.bad_value("compare_grounding", "comparison", "a saliency or attention "
                                    "comparison of images", type(comparison).__name__)
    h, w = np.asarray(before).shape[-2:]
    b = _boxes(boxes, len(before), (h, w), "compare_grounding")
    return GroundingComparison(
        method=getattr(comparison, "method", "attention_rollout"), boxes=b,
        mass_before=relevance_mass_in_box(before, b), mass_after=relevance_mass_in_box(after, b),
        hit_before=pointing_game(before, b, tolerance=tolerance),
        hit_after=pointing_game(after, b, tolerance=tolerance),
        box_fraction=(b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) / float(h * w),
        steps=tuple(getattr(comparison, "steps", (0, -1))),
        rank_before=relevance_rank_accuracy(before, b),
        rank_after=relevance_rank_accuracy(after, b),
        reasons=["; ".join(f"{side}: {r}" for side, r in (("before", x), ("after", y)) if r)
                 for x, y in zip(grounding_reasons(before), grounding_reasons(after))])


def grounding(study, before: int = 0, after: int = -1, *, method: str = "attention_relevance",
              rows: Sequence[int] | None = None, n: int = 32, tolerance: int = 0,
              **method_options) -> GroundingComparison:
    """Relevance mass in the box and pointing game of two steps of a study on ``digits_boxes``
    (test rows ``rows``, or ``n`` drawn stratified), for any saliency ``method`` or
    ``"attention_rollout"``."""
    from ..data import stratified_indices
    from ..data.ground_truth import boxes as truth_boxes

    call = "Study.grounding"
    source = getattr(study.data, "source", None) or {}
    if source.get("name") != "digits_boxes":      # refused first, in the user's call's name
        raise ConfigError(f"{call}: the study's data ({source.get('name') or 'your own'!r}) has "
                          "no ground-truth boxes; grounding needs a study on the digits_boxes "
                          "dataset (xp.datasets.load('digits_boxes')).")
    truth_boxes(study.data, "test", rows=[])
    if rows is None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError.bad_value(call, "n", "a positive integer", n)
        rows = stratified_indices(study.data.test.y, min(n, len(study.data.test)),
                                  seed=study.seed, call=call).tolist()
    rows = [int(r) for r in rows]
    comp = study.saliency(before, after, method=method, inputs=rows, **method_options)
    return compare_grounding(comp, truth_boxes(study.data, "test", rows=rows),
                             tolerance=tolerance)
