"""Finding what to explain in a study's record: the prune step behind ``why()``, the scores
computed on a model, and the drift table along the history."""

from __future__ import annotations

from ..core.errors import ConfigError

__all__ = ["why", "latest_prune", "DriftTable", "drift_table"]


def _latest_prune(study, index: int) -> int | None:
    for step in reversed(study.timeline.path(index)):
        if step.kind in ("prune", "dynamic"):
            return step.index
    return None


def latest_prune(study, step: int, call: str = "Study.why") -> int:
    """The prune step that ``step`` is, or the latest one on the path to it."""
    found = _latest_prune(study, study.timeline.index(step, call))
    if found is None:
        raise ConfigError(f"{call}(step=...): step {step} is not a prune step and has no prune "
                          "step before it; prune first.")
    return found


def why(study, step=None, unit: int | None = None, *, at: int = 0,
        granularity: str | None = None, call: str = "Study.why"):
    """Why units were removed.

    ``why()`` (or ``why(-1)``) explains the latest prune (or dynamic) step on the path to the
    current model, also after retraining; ``why(step)`` a given one (a retrain step: the prune
    before it). Both return a :class:`~xprune_nb.explain.WhyReport` (``.to_frame()``: every
    removed unit; ``.plot()``).

    ``why(layer, unit)`` follows one unit through the whole history, at any step, for any unit
    that ever existed: every score and rank it got, when it was removed (step and action), its
    score and rank then, and the classes (by name) that relied on it. ``unit`` is its index in
    the numbering of step ``at`` (default 0, the original model: a structural prune renumbers
    the units that stay). Returns a :class:`~xprune_nb.explain.UnitWhy`.

    Examples
    --------
    >>> import xprune_nb as xp
    >>> study = xp.Study(xp.zoo.load("toy_mlp"), xp.datasets.load("moons"))
    >>> _ = study.score("magnitude"); _ = study.prune(0.3)
    >>> study.why().summary()["criterion"]
    'magnitude'
    >>> gone = study.why().to_frame().iloc[0]
    >>> study.why(gone["layer"], int(gone["unit"])).removed_at
    1
    """
    if isinstance(step, str):
        from .unit_history import unit_history

        return unit_history(study, step, unit, at=at, granularity=granularity, call=call)
    from . import why_removed

    if step is None or step == -1:
        index = _latest_prune(study, study.current)
        if index is None:
            raise ConfigError(f"{call}: no prune step on the path to the current step "
                              f"{study.current}; prune first, or pass a step index.")
    else:
        index = study.timeline.index(step, call)
        if study.history[index].kind == "retrain":   # the prune it retrained after
            index = latest_prune(study, index, call)
    record = study.history[index]
    if record.kind == "dynamic":
        from .why_dynamic import why_dynamic

        return why_dynamic(study, record)
    if record.kind != "prune":
        prunes = [s.index for s in study.history if s.kind == "prune"]
        raise ConfigError.bad_value(call, "step", f"a prune step (one of {prunes})", step)
    scores = study.timeline.scores.get(record.parent)
    if scores is None:
        raise ConfigError(f"{call}: the scores behind step {index} are not available.")
    parent = study.history[record.parent]
    # rank as the prune did: with the normalisation it recorded
    return why_removed(scores, record.removed, per_class=scores.per_class,
                       acc_before=parent.per_class_accuracy,
                       acc_after=record.per_class_accuracy,
                       class_names=study.data.class_names,
                       normalize=record.config.get("normalize", "mean"))


class DriftTable:
    """Accuracy and saliency similarity to the original, one row per history step."""

    def __init__(self, rows: list[dict]) -> None:
        self.rows = rows

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame(self.rows).set_index("step")

    def plot(self, ax=None):
        """Accuracy and explanation similarity against the fraction of weights pruned."""
        from .plots import plot_drift

        return plot_drift(self.to_frame(), ax=ax)

    def _repr_html_(self) -> str:
        return "<b>Drift along the history</b>" + self.to_frame().to_html(na_rep="n/a",
            float_format=lambda x: f"{x:.4g}")


def drift_table(study, *, progress=False, stop=None) -> DriftTable:
    """Accuracy and explanation similarity to the original along the history: one row per
    step with the probe's drift numbers under their glossary names and the accuracy per class.

    On a big model a step leaves its drift for the first ask ("not measured yet" in the
    history): this call measures every such step (one saliency pass over the probe each,
    the original's computed once), reporting through ``progress`` and stoppable between steps
    with ``stop``; what was measured stays recorded even when stopped.

    Examples
    --------
    >>> import xprune_nb as xp
    >>> study = xp.Study(xp.zoo.load("toy_mlp"), xp.datasets.load("moons"))
    >>> study.drift().to_frame()["saliency_rank_correlation"].tolist()
    [1.0]
    """
    from ..core.progress import make_progress
    from ..measure.step import fill_drift

    fill_drift(study, progress=make_progress(progress, "Study.drift", "drift", stop))
    base = study.history[0].metrics
    rows = []
    for s in study.history:
        row = {"step": s.index, "action": s.label, "parent": s.parent,
               "fraction_pruned": 1 - s.metrics["nonzero_params"] / base["nonzero_params"],
               "accuracy": s.metrics["accuracy"]}
        # the glossary's names (explain/glossary.py) for the probe's drift numbers
        names = {"saliency_spearman": "saliency_rank_correlation",
                 "saliency_topk_iou": "saliency_topk_iou", "agreement": "agreement"}
        row.update({names[k]: v for k, v in s.drift.items() if k in names})
        if s.drift.get("saliency_reason"):   # why probe inputs are missing from the means
            row["saliency_reason"] = s.drift["saliency_reason"]
        for name, acc in zip(study.data.class_names, s.per_class_accuracy, strict=False):
            row[f"accuracy[{name}]"] = acc
        rows.append(row)
    return DriftTable(rows)
