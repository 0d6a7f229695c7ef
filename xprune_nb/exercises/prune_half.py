"""Exercise 1: prune the digits CNN to at most half of its parameters (removed for real) while
keeping at least 95% test accuracy.

The check reads the student's current step: any route that gets there passes (any criterion,
amount, schedule or number of epochs).
"""

from __future__ import annotations

from . import _answers, _view
from .feedback import student_check

__all__ = ["check_ex1", "MAX_PARAMS_FRACTION", "MIN_ACCURACY"]

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
    >>> from xprune_nb.exercises import check_ex1
    >>> study = xp.Study(xp.zoo.load("digits_cnn"), xp.datasets.load("digits"))
    >>> check_ex1(study).code
    'not_pruned'
    """
    study = _answers.study(study)
    now = study.current
    kinds = [s.kind for s in _view.path(study, now)]
    p0, p = _view.params(study, 0), _view.params(study, now)
    acc, frac = _view.accuracy(study, now), _view.params(study, now) / _view.params(study, 0)
    better = [s.index for s in _view.steps(study) if s.index != now and _meets(study, s.index)]
    if better and not _meets(study, now):
        return False, [f"Step {better[-1]} of your history meets both targets, but the check "
                       f"looks at your current step ({now}). Make it current with "
                       f"`study.goto({better[-1]})` and check again."], "not_current"
    if "prune" not in kinds:
        return False, [f"Your current step ({now}) has not been pruned: "
                       f"{'it is the original model' if now == 0 else 'only retrained'}. "
                       "Score the units (`study.score(...)`), then `study.prune(...)`."], \
            "not_pruned"
    if p >= p0 and _view.nonzero_params(study, now) < p0:
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
        return False, messages, code
    return True, [f"Your current step keeps {100 * frac:.0f}% of the parameters ({p} of {p0}) "
                  f"at {acc:.3f} test accuracy."], "ok"
