"""Exercise 4: find the layer most sensitive to pruning, and justify it with numbers.

The student prunes each layer group alone (``layer_amounts={name: f}`` with ``amount=0``, or
``ignore=[the others]``) from the same step, by the same fraction, undoing in between, and
reports the accuracy drop of each. The check finds those single-layer prune steps in the
student's history and recomputes every drop from the recorded metrics.
"""

from __future__ import annotations

from collections import defaultdict

from . import _answers, _view
from .feedback import AnswerError, join_names, student_check

__all__ = ["check_ex4", "DROP_TOLERANCE", "TIE_TOLERANCE"]

#: reported drops may differ from the recorded ones by this much (rounding)
DROP_TOLERANCE = 0.005
#: layers whose drop is this close to the largest one count as most sensitive too
TIE_TOLERANCE = 0.005


def _single_layer_runs(study):
    """Single-group prune steps, by the step they start from: {parent: {group: [records]}}."""
    runs: dict[int, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for r in _view.prune_records(study):
        if len(r.removed) == 1:
            runs[r.parent][next(iter(r.removed))].append(r)
    return runs


def _experiment(study):
    """The comparison: the start step whose single-layer runs cover the most groups, with
    one record per group (the latest). Returns (parent, {group: record}, all groups)."""
    runs = _single_layer_runs(study)
    if not runs:
        return None, {}, []
    parent = max(runs, key=lambda p: (len(runs[p]), -p))
    latest = {g: recs[-1] for g, recs in runs[parent].items()}
    return parent, latest, sorted(_view.group_sizes(study, parent))


@student_check("ex4", "Exercise 4 (the most sensitive layer)")
def check_ex4(study, most_sensitive, drops):
    """Check exercise 4.

    Parameters
    ----------
    study : Study
        The student's study, with one single-layer prune step per layer group.
    most_sensitive : str
        The layer (group) the student found most sensitive.
    drops : dict
        ``{layer: accuracy drop}``, the drop = accuracy before - accuracy after pruning that
        layer alone (as fractions, e.g. ``0.12`` for 12 points).

    Examples
    --------
    >>> import xprune_nb as xp
    >>> from xprune_nb.ui.exercises import check_ex4
    >>> study = xp.Study(xp.zoo.load("digits_cnn"), xp.datasets.load("digits"))
    >>> check_ex4(study, "conv1", {"conv1": 0.1}).code
    'no_experiment'
    """
    study = _answers.study(study)
    answer = _answers.name(most_sensitive, "most_sensitive", "a layer name such as `\"conv2\"`")
    reported = _answers.numbers_by_name(drops, "drops", "a dict `{layer: accuracy drop}`, one "
                                        "entry per layer you pruned alone")
    parent, runs, groups = _experiment(study)
    if not runs:
        return False, ["Your study has no step that pruned a single layer. Prune one layer "
                       "at a time: `study.prune(0.0, layer_amounts={name: fraction})` (or "
                       "`ignore=` the others), then `study.undo()` before the next layer."], \
            "no_experiment"
    missing = [g for g in groups if g not in runs]
    if missing:
        # never name the untried layers: one of them may be the answer
        return False, [f"From step {parent} you pruned {len(runs)} of the "
                       f"{len(runs) + len(missing)} prunable layers alone. Try every prunable "
                       "layer (`study.prunable()`) before choosing."], "missing_layers"
    fractions = {g: r.fractions.get(g, 0.0) for g, r in runs.items()}
    if max(fractions.values()) - min(fractions.values()) > 0.1:
        detail = ", ".join(f"'{g}' {100 * f:.0f}%" for g, f in sorted(fractions.items()))
        return False, ["Compare like with like: the layers lost different fractions of their "
                       f"units ({detail}). Prune the same fraction of each layer."], \
            "unequal_fractions"
    drop = {g: r.parent_accuracy - r.accuracy for g, r in runs.items()}
    names = {g.lower(): g for g in runs}
    chosen = names.get(answer.lower())
    if chosen is None:
        return False, [f"'{answer}' is not a layer group you pruned; they are "
                       f"{join_names(sorted(runs))} (see `study.prunable()`)."], "unknown_layer"
    messages, code = [], "ok"
    for name, value in sorted(reported.items()):
        real = names.get(name.lower())
        if real is None:
            raise AnswerError(f"`drops` has an entry for '{name}', which is not one of your "
                              f"layers ({join_names(sorted(runs))}).", code="drops_mismatch")
        if abs(value - drop[real]) <= DROP_TOLERANCE:
            continue
        rec = runs[real]
        after_retrain = [_view.accuracy(study, s.index) for s in _view.children(study, rec.index)
                         if s.kind == "retrain"]
        if abs(value - rec.accuracy) <= DROP_TOLERANCE:
            messages.append(f"`drops['{name}']` looks like the accuracy *after* pruning, not the "
                            "drop: subtract it from the accuracy before.")
            code = "accuracy_not_drop"
        elif abs(value + drop[real]) <= DROP_TOLERANCE and drop[real] != 0:
            messages.append(f"`drops['{name}']` has the wrong sign: a drop is accuracy before "
                            "minus accuracy after (positive when accuracy falls).")
            code = "drop_sign"
        elif any(abs(value - (rec.parent_accuracy - a)) <= DROP_TOLERANCE
                 for a in after_retrain):
            messages.append(f"`drops['{name}']` was measured after retraining. Sensitivity is the "
                            "drop right after pruning, before any retraining.")
            code = "after_retrain"
        elif 1 < abs(value) <= 100 and abs(value / 100 - drop[real]) <= DROP_TOLERANCE:
            messages.append(f"`drops['{name}']` is in percentage points; give fractions "
                            "(0.12 for 12 points), like `metrics['accuracy']`.")
            code = "percent"
        else:
            messages.append(f"`drops['{name}']` does not match step {rec.index} of your history "
                            f"(accuracy of step {rec.parent} minus that of step {rec.index}).")
            code = "drops_mismatch"
    missing = sorted(set(runs) - {names.get(n.lower()) for n in reported})
    if missing:
        messages.append(f"Justify with numbers for every layer; `drops` misses "
                        f"{join_names(missing)}.")
        code = "drops_mismatch" if code == "ok" else code
    if messages:
        return False, messages, code
    top = max(drop.values())
    if drop[chosen] >= top - TIE_TOLERANCE:
        return True, [f"'{chosen}' is the most sensitive of the {len(runs)} layers you pruned "
                      "alone. Explain why in the text cell."], "ok"
    if drop[chosen] <= min(drop.values()) + TIE_TOLERANCE:
        return False, [f"'{chosen}' is the layer whose pruning cost the *least* accuracy: the "
                       "most robust one. The question asks for the most sensitive."], \
            "least_sensitive"
    return False, [f"Pruning another layer alone cost more accuracy than pruning '{chosen}'. "
                   "Compare your drops: the largest drop marks the most sensitive layer."], \
        "not_most_sensitive"
