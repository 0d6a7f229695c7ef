"""Hints on request, from a nudge to a method; none of them is the answer."""

from __future__ import annotations

import numbers

from .feedback import Hint, join_names

__all__ = ["hint", "HINTS"]

HINTS: dict[str, tuple[str, ...]] = {
    "ex1": (
        "Two numbers matter: the parameter ratio (`study.compare(0, -1)`, row `params`) and the "
        "test accuracy (`study.evaluate()`). Watch both after every step in "
        "`study.history.to_frame()`.",
        "`study.prune(amount)` removes a fraction of the *units* (channels, neurons), not of "
        "the parameters. Try a few amounts, read the parameter ratio after each one in "
        "`study.compare(0, -1)`, and `study.undo()` between them.",
        "Pruning alone usually costs accuracy; `study.retrain(epochs=...)` lets the remaining "
        "units take over. If one big cut hurts too much, prune in rounds "
        "(`steps=`, `retrain={...}`), or compare criteria such as `\"taylor\"` and "
        "`\"magnitude\"`.",
    ),
    "ex2": (
        "Each criterion needs its own branch from the same model: `study.goto(0)`, "
        "`study.score(criterion)`, `study.prune(amount)`. Use one amount for all of them.",
        "`saliency_similarity(study, step)` compares the gradient saliency maps of a step with "
        "the original's (1 = same ranking of pixels). Measure it for each branch's prune step "
        "and collect the numbers in a dict.",
        "For the *why*: think about what each criterion looks at. Some only look at weights; "
        "others measure how much each unit contributes to the model's output on real "
        "examples. Which kind should preserve what the model attends to? The random baseline "
        "tells you what 'no information' gives.",
    ),
    "ex3": (
        "`study.why(step)` lists every removed unit with its raw `score`, its per-layer "
        "`normalized` score, and its global `rank` and `percentile`.",
        "All units, of every layer, are ranked together in one list. Read how `study.why` "
        "describes its columns (`help(study.why)`, the glossary of docs/explain.md): which "
        "column is that one ranking made from? A unit that *almost* stayed sits near the "
        "boundary between removed and kept in that ranking.",
        "The per-class table of `study.why(step)` has the accuracy of each class before and "
        "after the step; `change` = after - before.",
    ),
    "ex4": (
        "Sensitivity of a layer = how much accuracy falls when you prune *that layer alone*. "
        "`study.prunable()` lists the layer groups.",
        "`study.prune(0.0, layer_amounts={name: 0.5})` prunes half of one group and nothing "
        "else (or pass `ignore=` the other groups). Undo before the next layer so every run "
        "starts from the same model, and do not retrain in between.",
        "Drop = accuracy of the step you started from minus accuracy after the prune; both are "
        "in `study.history.to_frame()`. For the *why*, look at how many units each layer has "
        "and where it sits: what happens to everything after it when it loses units?",
    ),
    "ex5": (
        "In the panel: the Score tab chooses the criterion, the Prune tab the amount. The "
        "metrics strip on top shows parameters and accuracy against the original.",
        "Prune removes a fraction of the units, not of the parameters; watch the parameter "
        "count in the strip after each Prune, and Undo to try another amount.",
        "After pruning, use Retrain (a few epochs) and check again.",
    ),
}


def hint(exercise: str, level: int = 1) -> Hint:
    """Hint number ``level`` (1 = a nudge, higher = more specific) for ``exercise``.

    Never raises: an unknown exercise or level gives a note saying what exists.

    Examples
    --------
    >>> from xprune_nb.ui.exercises import hint
    >>> hint("ex1", 1).level
    1
    >>> print(hint("ex9"))  # doctest: +ELLIPSIS
    There are no hints for 'ex9'; exercises with hints: ...
    """
    key = exercise.strip().lower() if isinstance(exercise, str) else exercise
    if key not in HINTS:
        return Hint(str(exercise), 0, f"There are no hints for {exercise!r}; exercises with "
                    f"hints: {join_names(HINTS)}.")
    hints = HINTS[key]
    if isinstance(level, bool) or not isinstance(level, numbers.Integral) \
            or not 1 <= level <= len(hints):
        return Hint(key, 0, f"{key} has hints 1 to {len(hints)}; you asked for {level!r}.")
    return Hint(key, int(level), hints[int(level) - 1], of=len(hints))
