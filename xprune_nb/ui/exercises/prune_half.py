"""Exercise 1: prune the digits CNN to at most half of its parameters (removed for real) while
keeping at least 95% test accuracy.

The check reads the student's current step: any route that gets there passes (any criterion,
amount, schedule or number of epochs).
"""

from __future__ import annotations

from . import _answers, _view
from .feedback import student_check

__all__ = ["check_ex1", "check_ex5", "MAX_PARAMS_FRACTION", "MIN_ACCURACY", "PANEL_WORDS"]

MAX_PARAMS_FRACTION = 0.5
MIN_ACCURACY = 0.95
#: metrics are recorded once per step, so the comparison is exact; this only absorbs rounding
_EPS = 1e-9


def _meets(study, index: int) -> bool:
    return (_view.params(study, index) <= MAX_PARAMS_FRACTION * _view.params(study, 0) + _EPS
            and _view.accuracy(study, index) >= MIN_ACCURACY - _EPS)


@student_check("ex1", "Exercise 1 (half the parameters, >= 95% accuracy)")
def check_ex1(study):
    """Check exercise 1 on the study's current step.

    Passes when the current model has at most half the original parameters (counted on the
    real tensor shapes: masked weights do not count as removed) and a test accuracy of at
    least 0.95.

    Returns
    -------
    Feedback
        Says what is missing and what to look at; never raises.

    Examples
    --------
    >>> import xprune_nb as xp
    >>> from xprune_nb.ui.exercises import check_ex1
    >>> study = xp.Study(xp.zoo.load("digits_cnn"), xp.datasets.load("digits"))
    >>> check_ex1(study).code
    'not_pruned'
    """
    return _judge(study, panel=False)


@student_check("ex5", "Exercise 5 (half the parameters, >= 95% accuracy)")
def check_ex5(study):
    """Exercise 1 done in the panel (``05_prune_half_app.ipynb``): the same verdict as
    :func:`check_ex1`, said in the panel's words (tabs and buttons, never code).

    Examples
    --------
    >>> import xprune_nb as xp
    >>> from xprune_nb.ui.exercises import check_ex5
    >>> study = xp.Study(xp.zoo.load("digits_cnn"), xp.datasets.load("digits"))
    >>> "`" in str(check_ex5(study)), check_ex5(study).code
    (False, 'not_pruned')
    """
    return _judge(study, panel=True)


#: what :func:`check_ex5` says, per reason: the panel's tabs and buttons, no code
PANEL_WORDS = {
    "not_current": "Step {step} of your history meets both targets, but the check looks at "
                   "the step you are on ({now}). Go back to step {step} in the History tab, "
                   "then check again.",
    "not_pruned": "Your model has not been pruned yet. In the Score tab, score the units; "
                  "then remove some in the Prune tab.",
    "masked_weights": "Your model still has all of its parameters: the 'weight' granularity "
                      "sets single weights to zero but keeps every layer the same size. "
                      "Choose the 'channel' granularity in the Score tab, so that whole "
                      "channels and neurons go and the layers really shrink.",
    "too_many_params": "Your model keeps {frac:.0f}% of the original parameters ({p} of "
                       "{p0}); the target is at most {target:.0f}%. The Prune tab's amount "
                       "is a share of the units (channels, neurons), not of the parameters: "
                       "watch the parameter count in the strip at the top after each Prune.",
    "no_retrain": "Test accuracy is {acc:.3f}, below {min}. You have not retrained since "
                  "pruning: retraining (the Retrain tab) lets the remaining units take over.",
    "low_accuracy": "Test accuracy is {acc:.3f}, below {min}, even after retraining. In the "
                    "History tab, see at which step accuracy fell most. Prune less at once, "
                    "try another criterion in the Score tab, or retrain for more epochs.",
}


def _codes(frac: float, acc: float, kinds: list[str]) -> list[str]:
    """The reasons a pruned step misses the targets, in the order check_ex1 gives them."""
    out = []
    if frac > MAX_PARAMS_FRACTION + _EPS:
        out.append("too_many_params")
    if acc < MIN_ACCURACY - _EPS:
        out.append("low_accuracy" if "retrain" in kinds[kinds.index("prune"):]
                   else "no_retrain")
    return out


def _judge(study, panel: bool):
    """(passed, messages, code) for the current step; ``panel``: say it without code."""
    words = PANEL_WORDS if panel else None
    study = _answers.study(study)
    now = study.current
    kinds = [s.kind for s in _view.path(study, now)]
    p0, p = _view.params(study, 0), _view.params(study, now)
    acc, frac = _view.accuracy(study, now), _view.params(study, now) / _view.params(study, 0)
    better = [s.index for s in _view.steps(study) if s.index != now and _meets(study, s.index)]
    if better and not _meets(study, now):
        if words is not None:
            return False, [words["not_current"].format(step=better[-1], now=now)], \
                "not_current"
        return False, [f"Step {better[-1]} of your history meets both targets, but the check "
                       f"looks at your current step ({now}). Make it current with "
                       f"`study.goto({better[-1]})` and check again."], "not_current"
    if "prune" not in kinds:
        if words is not None:
            return False, [words["not_pruned"]], "not_pruned"
        return False, [f"Your current step ({now}) has not been pruned: "
                       f"{'it is the original model' if now == 0 else 'only retrained'}. "
                       "Score the units (`study.score(...)`), then `study.prune(...)`."], \
            "not_pruned"
    if p >= p0 and _view.nonzero_params(study, now) < p0:
        if words is not None:
            return False, [words["masked_weights"]], "masked_weights"
        return False, ["Your model still has all of its parameters: you masked single weights "
                       "(`granularity=\"weight\"`), which sets them to zero but keeps the "
                       "tensors the same size. Remove whole channels and neurons instead "
                       "(`granularity=\"channel\"`), so the layers really shrink."], \
            "masked_weights"
    messages, code = [], "ok"
    if frac > MAX_PARAMS_FRACTION + _EPS:
        messages.append(
            f"Your model keeps {100 * frac:.0f}% of the original parameters ({p} of {p0}); the "
            f"target is at most {100 * MAX_PARAMS_FRACTION:.0f}%. Note that `prune(amount)` "
            "removes a fraction of the *units* (channels, neurons), not of the parameters: "
            "compare `study.compare(0, -1)` to see the parameter ratio.")
        code = "too_many_params"
    if acc < MIN_ACCURACY - _EPS:
        retrained = "retrain" in kinds[kinds.index("prune"):]
        if not retrained:
            messages.append(
                f"Test accuracy is {acc:.3f}, below {MIN_ACCURACY}. You have not retrained "
                "since pruning: fine-tuning lets the remaining units take over "
                "(`study.retrain(...)`).")
            code = "no_retrain" if code == "ok" else code
        else:
            messages.append(
                f"Test accuracy is {acc:.3f}, below {MIN_ACCURACY}, even after retraining. "
                "Look at `study.history.to_frame()`: did accuracy fall most at a prune step? "
                "Prune less at once (or in several rounds with retraining in between), try "
                "another criterion, or retrain for more epochs.")
            code = "low_accuracy" if code == "ok" else code
    if messages:
        if words is not None:   # the same verdict, said in the panel's terms
            messages = [words[c].format(frac=100 * frac, p=p, p0=p0, acc=acc,
                                        target=100 * MAX_PARAMS_FRACTION, min=MIN_ACCURACY)
                        for c in _codes(frac, acc, kinds)]
        return False, messages, code
    return True, [f"Your current step keeps {100 * frac:.0f}% of the parameters ({p} of {p0}) "
                  f"at {acc:.3f} test accuracy."], "ok"
