"""Why was this removed: the removed units with their score, rank and per-class relevance, and the
accuracy per class before and after — the table an analyst pastes into a report."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..core.errors import ConfigError

__all__ = ["WhyReport", "why_removed", "why_unit"]


def _names(class_names: Sequence[str] | None, k: int) -> list[str]:
    if class_names is not None and len(class_names) >= k:
        return [str(c) for c in class_names[:k]]
    return [str(i) for i in range(k)]


def _per_class_columns(frame, per_class: Mapping[str, torch.Tensor] | None,
                       class_names: Sequence[str] | None) -> None:
    """Add one ``relevance[<class>]`` column per class, in place."""
    if not per_class or frame.empty:
        return
    k = max(int(t.shape[0]) for t in per_class.values())
    names = _names(class_names, k)
    cols = np.full((len(frame), k), np.nan)
    for row, (layer, unit) in enumerate(zip(frame["layer"], frame["unit"])):
        table = per_class.get(layer)
        if table is not None and int(unit) < table.shape[1]:
            cols[row, : table.shape[0]] = table[:, int(unit)].double().numpy()
    for j, name in enumerate(names):
        frame[f"relevance[{name}]"] = cols[:, j]
    # in words: the classes that rely on the unit most (within 80% of its largest per-class
    # value), e.g. "kept: class 3 relies on it" for xmask or LRP scores
    relied = []
    for row in cols:
        finite = np.isfinite(row)
        if not finite.any() or np.nanmax(row) <= 0:
            relied.append("")
            continue
        top = np.nanmax(row)
        relied.append(", ".join(names[j] for j in range(len(row))
                                if finite[j] and row[j] >= 0.8 * top))
    frame["relied_on_by"] = relied


@dataclass
class WhyReport:
    """The units a step removed, where they ranked, and what it cost each class.

    Attributes
    ----------
    criterion : str
    removed : DataFrame
        One row per removed unit: ``layer``, ``unit``, raw ``score``, ``normalized`` score,
        global ``rank`` (0 = least important) and ``percentile`` under the criterion, and
        ``relevance[<class>]`` columns when the criterion is class-aware.
    all_scores : DataFrame
        The same columns for every unit (what the removed ones are compared with).
    per_class_accuracy : DataFrame or None
        ``class``, ``accuracy_before``, ``accuracy_after``, ``change``.
    """

    criterion: str
    removed: object
    all_scores: object
    per_class_accuracy: object | None = None

    def to_frame(self):
        """The removed units (a copy)."""
        return self.removed.copy()

    def summary(self) -> dict:
        out = {"criterion": self.criterion, "units_removed": len(self.removed),
               "of_units": len(self.all_scores),
               "layers": int(self.removed["layer"].nunique()) if len(self.removed) else 0}
        if len(self.removed):
            out["median_percentile"] = float(self.removed["percentile"].median())
            out["max_percentile"] = float(self.removed["percentile"].max())
        if self.per_class_accuracy is not None and len(self.per_class_accuracy):
            worst = self.per_class_accuracy.sort_values("change").iloc[0]
            out["largest_drop"] = f"class {worst['class']}: {worst['change']:+.3f}"
        return out

    def plot(self, ax=None):
        """Removed units against the distribution of all scores, and accuracy per class."""
        from .plots import plot_why

        return plot_why(self, ax=ax)

    def __repr__(self) -> str:
        s = self.summary()
        return (f"WhyReport(criterion={self.criterion!r}, units_removed={s['units_removed']}, "
                f"layers={s['layers']})")

    def _repr_html_(self) -> str:
        from .plots import html_report

        out = html_report(f"Why these units were removed ({self.criterion})", self.summary(),
                          self.removed)
        if self.per_class_accuracy is not None:
            out += self.per_class_accuracy.to_html(index=False,
                                                   float_format=lambda x: f"{x:.3f}")
        return out


def why_removed(scores, removed: Mapping[str, Sequence[int]], *,
                per_class: Mapping[str, torch.Tensor] | None = None,
                acc_before=None, acc_after=None, class_names: Sequence[str] | None = None,
                normalize: str | None = "mean") -> WhyReport:
    """Explain a pruning step from the scores that drove it.

    Parameters
    ----------
    scores : xprune_nb.core.scores.Scores
    removed : dict
        Group key -> indices of the units removed (flat weight indices for ``weight``).
    per_class : dict, optional
        Group key -> (classes, units) relevance; defaults to ``scores.per_class``.
    acc_before, acc_after : array-like, optional
        Accuracy per class before and after the step.
    normalize : str or None
        Per-layer normalisation used for rank and percentile (the Study's default "mean").

    Examples
    --------
    >>> import torch
    >>> from xprune_nb.core.scores import Scores
    >>> s = Scores("lrp", "channel", {"fc1": torch.tensor([0.1, 2.0, 0.3, 4.0])})
    >>> why_removed(s, {"fc1": [0, 2]}).to_frame()[["layer", "unit", "rank"]].values.tolist()
    [['fc1', 0, 0], ['fc1', 2, 1]]
    """
    unknown = sorted(set(removed) - set(scores.values))
    if unknown:
        raise ConfigError.unknown_name("study.why", "removed", list(scores.values), unknown[0])
    for key, units in removed.items():
        size = scores.values[key].numel()
        bad = [int(u) for u in units if not 0 <= int(u) < size]
        if bad:
            raise ConfigError.bad_value("study.why", "removed",
                                        f"unit indices of {key!r} in [0, {size})", bad[:5])
    frame = scores.to_frame(normalize=normalize)
    wanted = {(key, int(u)) for key, units in removed.items() for u in units}
    mask = [(layer, int(unit)) in wanted for layer, unit in zip(frame["layer"], frame["unit"])]
    chosen = frame[mask].sort_values(["layer", "unit"], kind="stable").reset_index(drop=True)
    _per_class_columns(chosen, per_class if per_class is not None else scores.per_class,
                       class_names)
    accuracy = None
    if acc_before is not None and acc_after is not None:
        import pandas as pd

        b, a = np.asarray(acc_before, dtype=float), np.asarray(acc_after, dtype=float)
        if b.shape != a.shape:
            raise ConfigError.bad_value("study.why", "acc_after",
                                        f"one accuracy per class ({len(b)})", len(a))
        accuracy = pd.DataFrame({"class": _names(class_names, len(b)), "accuracy_before": b,
                                 "accuracy_after": a, "change": a - b})
    return WhyReport(criterion=scores.criterion, removed=chosen, all_scores=frame,
                     per_class_accuracy=accuracy)


def why_unit(layer: str, unit: int, scores_by_criterion: Mapping[str, object], *,
             class_names: Sequence[str] | None = None, normalize: str | None = "mean"):
    """One unit's score, rank and percentile under every criterion computed so far.

    Returns a DataFrame with one row per criterion (``relevance[<class>]`` columns for
    class-aware ones).

    Examples
    --------
    >>> import torch
    >>> from xprune_nb.core.scores import Scores
    >>> by = {"magnitude": Scores("magnitude", "channel", {"fc1": torch.tensor([1.0, 3.0])}),
    ...       "lrp": Scores("lrp", "channel", {"fc1": torch.tensor([5.0, 0.5])})}
    >>> why_unit("fc1", 1, by)[["criterion", "rank"]].values.tolist()
    [['magnitude', 1], ['lrp', 0]]
    """
    import pandas as pd

    rows = []
    for name, scores in scores_by_criterion.items():
        if layer not in scores.values:
            continue
        size = scores.values[layer].numel()
        if not 0 <= int(unit) < size:
            raise ConfigError.bad_value("study.why", "unit", f"an index in [0, {size})", unit)
        frame = scores.to_frame(normalize=normalize)
        row = frame[(frame["layer"] == layer) & (frame["unit"] == int(unit))].copy()
        row.insert(0, "criterion", name)
        row["units"] = len(frame)
        _per_class_columns(row, scores.per_class, class_names)
        rows.append(row)
    if not rows:
        valid = sorted({k for s in scores_by_criterion.values() for k in s.values})
        raise ConfigError.unknown_name("study.why", "layer", valid, layer)
    return pd.concat(rows, ignore_index=True)
