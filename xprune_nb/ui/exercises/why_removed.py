"""Exercise 3: explain why units were removed in a prune step.

Three questions about a prune step of the student's own study, each recomputed from it with
``study.why(step)`` and the accuracy per class recorded by the history:

- ``closest_unit``: the removed unit that came closest to being kept in the global ranking;
- ``percentile``: that unit's percentile in the global ranking (0-100);
- ``hurt_class``: the class whose test accuracy dropped most in this step.
"""

from __future__ import annotations

from . import _answers, _view
from .feedback import AnswerError, join_names, student_check

__all__ = ["check_ex3", "PERCENTILE_TOLERANCE"]

PERCENTILE_TOLERANCE = 0.5
_TIE = 1e-9
_NOT_GIVEN = object()
_Q = "`closest_unit`: "


def _report(study, index: int):
    step = _view.step(study, index)
    if step.kind != "prune":
        prunes = [s.index for s in _view.steps(study) if s.kind == "prune"]
        raise AnswerError(f"Step {index} is a '{step.kind}' step; the questions are about a "
                          f"prune step (yours: {prunes or 'none yet'}).", code="not_prune_step")
    removed = study.why(index).to_frame()
    if not len(removed):
        raise AnswerError(f"Step {index} removed no units; prune a larger amount.",
                          code="nothing_removed")
    return removed


def _closest(removed):
    top = removed["normalized"].max()
    return {(str(r.layer), int(r.unit)) for r in removed.itertuples()
            if r.normalized >= top - _TIE}, top


def _check_unit(study, index, removed, answer, out) -> str:
    layer, unit = _answers.unit(answer, "closest_unit")
    closest, _ = _closest(removed)
    if (layer, unit) in closest:
        out.append(_Q + f"right, ({layer!r}, {unit}) was the closest call of step {index}.")
        return "ok"
    sizes = _view.group_sizes(study, _view.step(study, index).parent)
    if layer not in sizes:
        out.append(_Q + f"'{layer}' is not a layer (group) that step {index} could prune; "
                   f"those are {join_names(sorted(sizes))}.")
        return "unknown_layer"
    if not 0 <= unit < sizes[layer]:
        out.append(_Q + f"'{layer}' had units 0 to {sizes[layer] - 1} before step {index}; "
                   f"unit {unit} does not exist. Indices are in the numbering of the model "
                   "before the step (the one `study.why` lists).")
        return "out_of_range"
    rows = removed[(removed["layer"] == layer) & (removed["unit"] == unit)]
    if not len(rows):
        out.append(_Q + f"({layer!r}, {unit}) was not removed in step {index}: it is still "
                   f"in the model. Look only at the rows of `study.why({index}).to_frame()`.")
        return "still_there"
    row = rows.iloc[0]
    if row["normalized"] <= removed["normalized"].min() + _TIE:
        out.append(_Q + f"({layer!r}, {unit}) is the removed unit *furthest* from being "
                   "kept (the least important). You want the one that came closest to the "
                   "cut-off.")
        return "farthest"
    by_raw = removed.loc[removed["score"].idxmax()]
    if (str(by_raw["layer"]), int(by_raw["unit"])) == (layer, unit):
        out.append(_Q + "that unit has the highest *raw* score among the removed ones, but "
                   "the global ranking is not made from the raw `score` column. Which column "
                   "of `study.why(step).to_frame()` is it made from?")
        return "raw_score"
    out.append(_Q + f"({layer!r}, {unit}) was removed, but another removed unit was closer "
               "to being kept in the global ranking.")
    return "not_closest"


def _check_percentile(removed, answer, out) -> str:
    value = _answers.number(answer, "percentile", "a percentile between 0 and 100")
    _, top = _closest(removed)
    row = removed[removed["normalized"] >= top - _TIE].iloc[0]
    truth, rank = float(row["percentile"]), int(row["rank"])
    if abs(value - truth) <= PERCENTILE_TOLERANCE:
        out.append("`percentile`: right.")
        return "ok"
    if abs(100 * value - truth) <= PERCENTILE_TOLERANCE:
        out.append("`percentile`: percentiles here run from 0 to 100; you gave a fraction.")
        return "fraction"
    if abs(value - rank) < 0.5 and rank != round(truth):
        out.append("`percentile`: that is the unit's rank (its position, 0 = least important), "
                   "not its percentile. Look at the `percentile` column.")
        return "rank_not_percentile"
    if abs((100 - value) - truth) <= PERCENTILE_TOLERANCE:
        out.append("`percentile`: counted from the wrong end: percentile 0 is the least "
                   "important unit of all, 100 the most important.")
        return "inverted"
    out.append("`percentile`: not the percentile of the closest-call unit. Find that unit's row "
               f"in `study.why(step).to_frame()` (percentile {'>' if value < truth else '<'} "
               "what you gave).")
    return "wrong_percentile"


def _check_class(study, index, answer, out) -> str:
    names = _view.class_names(study)
    parent = _view.step(study, index).parent
    before = _view.per_class_accuracy(study, parent)
    after = _view.per_class_accuracy(study, index)
    if answer is None:
        raise _answers.Unanswered("hurt_class", "a class (its index or its name)")
    if isinstance(answer, str) and answer in names:
        k = names.index(answer)
    elif not isinstance(answer, bool) and isinstance(answer, int) and 0 <= answer < len(after):
        k = answer
    else:
        raise AnswerError(f"`hurt_class` should be a class index 0-{len(after) - 1} or a class "
                          f"name ({join_names(names)}); got {answer!r}.", code="unknown_class")
    change = [a - b for a, b in zip(after, before)]
    worst = min(change)
    if change[k] <= worst + _TIE:
        out.append("`hurt_class`: right.")
        return "ok"
    if after[k] <= min(after) + _TIE:
        out.append("`hurt_class`: that class has the lowest accuracy *after* the step, but it "
                   "was not the one that lost the most: compare before and after "
                   "(`change` = after - before).")
        return "lowest_after"
    if change[k] >= max(change) - _TIE and max(change) > worst:
        out.append("`hurt_class`: that class gained (or lost least) in this step; the question "
                   "asks which one dropped most: the most negative change.")
        return "sign"
    out.append("`hurt_class`: another class lost more accuracy in this step. Look at the "
               f"per-class accuracy table of `study.why({index})`.")
    return "not_largest"


@student_check("ex3", "Exercise 3 (why were these units removed)")
def check_ex3(study, step, *, closest_unit=_NOT_GIVEN, percentile=_NOT_GIVEN,
              hurt_class=_NOT_GIVEN):
    """Check the answers given (any of ``closest_unit``, ``percentile``, ``hurt_class``) about
    a prune ``step`` of ``study``.

    Examples
    --------
    >>> import xprune_nb as xp
    >>> from xprune_nb.ui.exercises import check_ex3
    >>> study = xp.Study(xp.zoo.load("digits_cnn"), xp.datasets.load("digits"))
    >>> check_ex3(study, 0, closest_unit=("conv1", 0)).code
    'not_prune_step'
    """
    study = _answers.study(study)
    index = _answers.step_index(study, step)
    given = {k: v for k, v in (("closest_unit", closest_unit), ("percentile", percentile),
                               ("hurt_class", hurt_class)) if v is not _NOT_GIVEN}
    if not given:
        raise AnswerError("Give at least one answer: `closest_unit=`, `percentile=` or "
                          "`hurt_class=`.", code="unanswered")
    removed = _report(study, index) if {"closest_unit", "percentile"} & set(given) else None
    out: list[str] = []
    codes = []
    if "closest_unit" in given:
        codes.append(_check_unit(study, index, removed, given["closest_unit"], out))
    if "percentile" in given:
        codes.append(_check_percentile(removed, given["percentile"], out))
    if "hurt_class" in given:
        if _view.step(study, index).kind != "prune":
            _report(study, index)  # raises the "not a prune step" message
        codes.append(_check_class(study, index, given["hurt_class"], out))
    wrong = [c for c in codes if c != "ok"]
    return not wrong, out, (wrong[0] if wrong else "ok")
