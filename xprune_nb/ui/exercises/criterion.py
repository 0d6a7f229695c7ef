"""Exercise 2: which criterion keeps the saliency maps closest to the original model's?

The student prunes one branch per criterion from the same step, by the same amount, and
measures :func:`~xprune_nb.ui.exercises.saliency_similarity` for each. The check finds those
branches in the student's own history, recomputes the similarity of each, and accepts any
criterion within :data:`TOLERANCE` of the closest one.
"""

from __future__ import annotations

from collections import defaultdict

from . import _answers, _view
from .feedback import AnswerError, join_names, student_check
from .measures import saliency_similarity

__all__ = ["check_ex2", "TOLERANCE", "MIN_CRITERIA"]

#: criteria whose similarity is this close to the best one count as closest too
TOLERANCE = 0.02
#: the student's reported numbers may differ from the recomputed ones by this much
NUMBER_TOLERANCE = 0.02
MIN_CRITERIA = 3


def _settings(r) -> tuple:
    return (r.granularity, round(r.amount, 4), tuple(sorted(r.layer_amounts.items())))


def _experiment(study):
    """The prune steps of the comparison: branches that start from the same step with the
    same settings, the set with the most distinct criteria (the latest branch per criterion).

    Returns ``(parent, {criterion: record}, all records)``; ``parent`` is None without any."""
    records = _view.prune_records(study)
    groups: dict[tuple, dict] = defaultdict(dict)
    for r in records:
        groups[(r.parent, _settings(r))][r.criterion] = r
    if not groups:
        return None, {}, records
    best = max(groups, key=lambda k: (len(groups[k]), -k[0]))
    return best[0], groups[best], records


@student_check("ex2", "Exercise 2 (which criterion keeps the saliency closest)")
def check_ex2(study, closest, similarity):
    """Check exercise 2.

    Parameters
    ----------
    study : Study
        The student's study, with one prune branch per compared criterion.
    closest : str
        The criterion the student found keeps the saliency maps closest.
    similarity : dict
        ``{criterion: saliency_similarity}`` the student measured for each branch.

    Examples
    --------
    >>> import xprune_nb as xp
    >>> from xprune_nb.ui.exercises import check_ex2
    >>> study = xp.Study(xp.zoo.load("digits_cnn"), xp.datasets.load("digits"))
    >>> check_ex2(study, "lrp", {"lrp": 0.5}).code
    'no_branches'
    """
    study = _answers.study(study)
    parent, runs, records = _experiment(study)
    answer = _answers.name(closest, "closest", "a criterion name such as `\"magnitude\"`")
    reported = _answers.numbers_by_name(similarity, "similarity",
                                        "a dict `{criterion: similarity}`, one entry per "
                                        "criterion you compared")
    if not runs:
        return False, ["Your study has no prune steps yet. Make one branch per criterion: "
                       "`study.goto(0)`, then `study.score(criterion)` and `study.prune(...)`, "
                       "for each criterion."], "no_branches"
    if len(runs) < MIN_CRITERIA:
        same_parent = {r.criterion for r in records if r.parent == parent}
        if len(same_parent) >= MIN_CRITERIA:
            detail = "; ".join(f"'{r.criterion}': {r.granularity}, amount {r.amount:g}"
                               + (f", layer_amounts {r.layer_amounts}" if r.layer_amounts
                                  else "")
                               for r in records if r.parent == parent)
            return False, ["Compare like with like: your branches were pruned with different "
                           f"settings ({detail}). Use the same granularity and amount for every "
                           "criterion."], "unequal_amounts"
        parents = sorted({r.parent for r in records})
        if len({r.criterion for r in records}) >= MIN_CRITERIA and len(parents) > 1:
            return False, ["Your prune steps do not start from the same model (they start "
                           f"from steps {', '.join(map(str, parents))}): each prune was applied "
                           "to an already pruned model. Go back with `study.goto(0)` before "
                           "each criterion, so every branch starts from the original."], \
                "not_branched"
        return False, [f"You compared {len(runs)} criteria ({join_names(sorted(runs))}); "
                       f"compare at least {MIN_CRITERIA}, including `\"random\"` as a baseline, "
                       "each on its own branch from the same step."], "too_few"
    if "random" not in runs:
        return False, ["Include `\"random\"` as a baseline: without it you cannot tell whether "
                       "a criterion keeps the maps closer than chance would."], "no_baseline"
    sims = {name: saliency_similarity(study, r.index, before=parent) for name, r in runs.items()}
    key = {n.lower(): n for n in runs}
    chosen = key.get(answer.lower())
    if chosen is None:
        return False, [f"'{answer}' is not one of the criteria your branches from step {parent} "
                       f"used ({join_names(sorted(runs))}). Answer with one you compared."], \
            "not_compared"
    messages = []
    for name, value in sorted(reported.items()):
        real = key.get(name.lower())
        if real is None:
            raise AnswerError(f"`similarity` has an entry for '{name}', but your branches used "
                              f"{join_names(sorted(runs))}.", code="numbers_mismatch")
        if abs(value - sims[real]) > NUMBER_TOLERANCE:
            messages.append(f"Your similarity for '{name}' ({value:.3f}) does not match "
                            f"`saliency_similarity(study, {runs[real].index})` for its prune "
                            "step. Measure the prune step itself (not a retrained step), "
                            "against the step the branches start from.")
    missing = sorted(set(runs) - {key.get(n.lower()) for n in reported})
    if missing:
        messages.append(f"Report a similarity for every branch; missing: {join_names(missing)}.")
    if messages:
        return False, messages, "numbers_mismatch"
    best = max(sims.values())
    if sims[chosen] >= best - TOLERANCE:
        return True, [f"'{chosen}' kept the saliency maps closest among the "
                      f"{len(runs)} criteria you compared. Now explain why in the text cell."], \
            "ok"
    by_accuracy = max(runs, key=lambda n: runs[n].accuracy)
    if chosen == by_accuracy:
        return False, [f"'{chosen}' kept the highest accuracy, but the question is about the "
                       "saliency maps: compare the similarity numbers, not the accuracies."], \
            "accuracy_not_saliency"
    if sims[chosen] == min(sims.values()):
        return False, [f"'{chosen}' is the branch whose saliency maps changed the *most*. "
                       "Higher similarity means closer to the original."], "least_close"
    return False, [f"Another criterion you compared kept the maps closer than '{chosen}'. "
                   "Sort your `similarity` numbers: the largest is the closest."], "not_closest"
