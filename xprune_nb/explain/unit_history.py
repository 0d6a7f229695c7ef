"""The life of one unit through a study's history: every score and rank it got, and when (and
by which action) it was removed — read from the record, so it works at any step, also after
retraining or ``goto``, for any unit that ever existed.

A structural removal renumbers the units that stay (unit 7 becomes unit 5 once two units below
it are gone), so one unit has one index per step. We name it by its index in the numbering of
one step (``at``, default 0: the original model, where every unit that ever existed has an
index) and follow it through each step's removals.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field

from ..core.errors import ConfigError

__all__ = ["UnitWhy", "unit_history"]


def _forward(p: int, removed: list[int]) -> int | None:
    """Index after a structural removal of ``removed`` (None: this unit was removed)."""
    if p in removed:
        return None
    return p - bisect_left(removed, p)


def _backward(p: int, removed: list[int]) -> int:
    """Index before a structural removal of the unit that has index ``p`` after it."""
    q = p
    for r in removed:   # sorted: each removed index at or below q shifts the unit up by one
        if r <= q:
            q += 1
    return q


def _kind_of(step) -> str | None:
    return step.config.get("granularity") if step.kind == "prune" else None


def _renumbers(granularity: str | None) -> bool:
    from ..pruning import units

    try:
        return granularity is not None and units.get(granularity, "Study.why").structural
    except ConfigError:
        return False


@dataclass
class UnitWhy:
    """What happened to one unit, step by step.

    Attributes
    ----------
    layer, unit : str, int
        The group (layer) and the unit's index in the numbering of step ``at``.
    at : int
        The step whose numbering ``unit`` uses (0: the original model).
    removed_at : int or None
        The step that removed the unit on the path to the current model (None: still there).
    events : DataFrame
        One row per score of the unit and per removal, in step order: ``step``, ``action``,
        ``event`` (``scored`` / ``removed``), ``scores_of_step`` (the step whose scores the row
        shows: a prune ranks by its parent's), ``on_path`` (the step leads to the current model),
        ``unit_then`` (the unit's index at that step), ``criterion``, ``score``,
        ``normalized``, ``rank`` (0 = least important), ``units`` (ranked), ``percentile``,
        ``relevance[<class>]`` for class-aware criteria and ``relied_on_by`` (class names).
    """

    layer: str
    unit: int
    at: int
    current: int
    removed_at: int | None
    removed_elsewhere: list[int] = field(default_factory=list)
    events: object = None

    def to_frame(self):
        """The events (a copy)."""
        return self.events.copy()

    def summary(self) -> dict:
        """The answer in one line each: status, and the score, rank and classes at removal."""
        out = {"layer": self.layer, "unit": self.unit, "numbering": f"step {self.at}"}
        frame = self.events
        if self.removed_at is not None:
            row = frame[(frame["step"] == self.removed_at) & (frame["event"] == "removed")]
            out["status"] = f"removed at step {self.removed_at}"
            if len(row):
                r = row.iloc[0]
                out["removed_by"] = r["action"]
                out["score_at_removal"] = _number(r.get("score"))
                out["rank_at_removal"] = (f"{int(r['rank'])} of {int(r['units'])}"
                                          if _number(r.get("rank")) == _number(r.get("rank"))
                                          else "n/a: no scores kept for that step")
        else:
            alive = frame[frame["on_path"]]
            out["status"] = f"still in the model at the current step {self.current}"
            if len(alive) and "unit_then" in alive:
                out["index_now"] = int(alive["unit_then"].iloc[-1])
        out["relied_on_by"] = self.relied_on_by()
        if self.removed_elsewhere:
            out["removed_on_other_branches"] = ", ".join(f"step {s}"
                                                         for s in self.removed_elsewhere)
        return out

    def relied_on_by(self) -> str:
        """The classes (by name) that relied on the unit, from its latest class-aware score
        on the path to its removal (or to the current step)."""
        frame = self.events
        if "relied_on_by" not in frame:
            return "n/a: no class-aware criterion scored this unit"
        last = self.removed_at if self.removed_at is not None else self.current
        rows = frame[frame["on_path"] & (frame["step"] <= last)
                     & frame["relied_on_by"].notna()]
        if not len(rows):
            return "n/a: no class-aware criterion scored this unit"
        r = rows.iloc[-1]
        who = r["relied_on_by"] or "no class in particular"
        return f"{who} ({r['criterion']} scores of step {int(r['scores_of_step'])})"

    def plot(self, ax=None):
        """The unit's percentile under each criterion, step by step (removal marked)."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(5, 3))
        frame = self.events[self.events["event"] == "scored"]
        for criterion, rows in frame.groupby("criterion"):
            ax.plot(rows["step"], rows["percentile"], "o-", label=str(criterion))
        if self.removed_at is not None:
            ax.axvline(self.removed_at, color="crimson", ls="--", label="removed")
        ax.set_xlabel("step")
        ax.set_ylabel("percentile (0 = least important)")
        ax.set_title(f"{self.layer} unit {self.unit}")
        ax.legend(fontsize=8)
        return ax

    def __repr__(self) -> str:
        return f"UnitWhy({self.layer!r}, {self.unit}, {self.summary()['status']})"

    def _repr_html_(self) -> str:
        from .plots import html_report

        return html_report(f"{self.layer}, unit {self.unit} (numbering of step {self.at})",
                           self.summary(), self.events)


def _number(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _valid_layers(study) -> list[str]:
    from ..models.mechanisms.model_tools import prunable_layers

    names = set(prunable_layers(study.original))
    for by in study.timeline.all_scores.values():
        for scores in by.values():
            names.update(scores.values)
    for step in study.history:
        names.update(step.removed)
    return sorted(names)


def _index_at_steps(study, layer: str, unit: int, at: int, granularity: str) -> dict:
    """The unit's index at every step of the history (None once removed, on that branch)."""
    history = study.history
    original = unit
    for step in reversed(study.timeline.path(at)):   # from step `at` back to the original
        if _kind_of(step) == granularity and _renumbers(granularity):
            original = _backward(original, sorted(int(r) for r in step.removed.get(layer, ())))
    index = {0: original}
    for step in history:   # parents come before children in the history
        if step.index == 0:
            continue
        p = index.get(step.parent)
        if p is not None and _kind_of(step) == granularity and layer in step.removed:
            removed = sorted(int(r) for r in step.removed[layer])
            if p in removed:
                p = None
            elif _renumbers(granularity):
                p = _forward(p, removed)
        index[step.index] = p
    return index


def unit_history(study, layer: str, unit: int, *, at: int = 0, granularity: str | None = None,
                 call: str = "Study.why"):
    """Follow unit ``unit`` of ``layer`` (numbered as at step ``at``) through the history."""
    import pandas as pd

    from .why import _per_class_columns

    valid = _valid_layers(study)
    if layer not in valid:
        raise ConfigError.unknown_name(call, "layer", valid, layer)
    if isinstance(unit, bool) or not isinstance(unit, int) or unit < 0:
        raise ConfigError.bad_value(call, "unit", "a unit index (an int >= 0)", unit)
    at = study.timeline.index(at, call)
    if granularity is None:
        used = [_kind_of(s) for s in study.history if _kind_of(s) and layer in s.removed]
        used += [s.granularity for by in study.timeline.all_scores.values()
                 for s in by.values() if layer in s.values]
        granularity = used[0] if used else "channel"
    _check_exists(study, layer, unit, at, granularity, call)
    index = _index_at_steps(study, layer, unit, at, granularity)
    on_path = {s.index for s in study.timeline.path(study.current)}
    names = study.data.class_names
    rows = []

    def add(step, event, scores, p, normalize="mean", scored_at=None):
        row = {"step": step.index, "action": step.label, "event": event,
               "scores_of_step": step.index if scored_at is None else scored_at,
               "on_path": step.index in on_path, "unit_then": p,
               "criterion": scores.criterion if scores is not None else None}
        if scores is not None and layer in scores.values:
            frame = scores.to_frame(normalize=normalize)
            size = scores.values[layer].numel()
            if p is not None and 0 <= p < size:
                hit = frame[(frame["layer"] == layer) & (frame["unit"] == p)].copy()
                hit["units"] = len(frame)
                _per_class_columns(hit, scores.per_class, names)
                row.update({k: v for k, v in hit.iloc[0].items() if k not in ("layer", "unit")})
        rows.append(row)

    for step in study.history:
        p = index.get(step.index)
        if p is not None:
            for scores in study.timeline.all_scores.get(step.index, {}).values():
                if scores.granularity == granularity:
                    add(step, "scored", scores, p)
        parent_p = index.get(step.parent) if step.parent is not None else None
        if (parent_p is not None and p is None and _kind_of(step) == granularity):
            # the scores this prune ranked by, with its own normalisation
            scores = study.timeline.scores.get(step.parent)
            add(step, "removed", scores, parent_p,
                normalize=step.config.get("normalize", "mean"), scored_at=step.parent)
    events = pd.DataFrame(rows)
    if events.empty:
        events = pd.DataFrame(columns=["step", "action", "event", "on_path", "unit_then",
                                       "criterion", "score", "rank", "units", "percentile"])
    removals = events[events["event"] == "removed"] if len(events) else events
    on = removals[removals["on_path"]]["step"].tolist() if len(removals) else []
    other = removals[~removals["on_path"].astype(bool)]["step"].tolist() if len(removals) else []
    return UnitWhy(layer=layer, unit=unit, at=at, current=study.current,
                   removed_at=int(on[0]) if on else None,
                   removed_elsewhere=[int(s) for s in other], events=events)


def _check_exists(study, layer: str, unit: int, at: int, granularity: str, call: str) -> None:
    """Refuse a unit index beyond the layer's size at step ``at``."""
    from ..pruning import units

    try:
        kind = units.get(granularity, call)
        found = kind.find(study.model_at(at), study.env)
    except Exception:  # noqa: BLE001 - a kind that cannot list units: no size check possible
        return
    size = found.sizes.get(layer)
    if isinstance(size, int) and unit >= size:
        raise ConfigError.bad_value(call, "unit", f"an index in [0, {size}) (the units of "
                                    f"{layer!r} at step {at})", unit)
