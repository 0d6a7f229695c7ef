"""Automated pruning to a budget, under accuracy, per-class and explanation-drift constraints.

The service behind ``Study.auto_prune``. Each round measures the sensitivity of the current
model (every group pruned alone on copies, BatchNorm recalibrated), allocates per-group amounts
greedily by damage per unit of cost saved (:mod:`~xprune_nb.pruning.allocate`), then prunes
through the study's public calls (``study.score`` and ``study.prune(0.0, layer_amounts=...)``,
optionally ``study.retrain``), so every round is an ordinary history step: undoable, exported,
replayed from the recipe. A round that breaks a constraint is not kept: the study goes back to
the step before it (the rejected steps stay in the history as a side branch, with a note) and
the round is tried again with half the saving, twice at most; then auto_prune stops and says
what it reached.

auto_prune holds the study's lock from start to end (``study.busy_with`` names it; other
threads' changing calls and saves are refused with ``StudyBusyError``) and commits round by
round: each try (score, prune, retrain, judging, and going back after a rejection) is one
transaction. Whatever ends the run early -- ``stop``, Ctrl-C, an error, even a Ctrl-C while a
rejected try is being undone -- leaves the study on the last kept round (or where it started),
never on a rejected one. Constraints are judged on the validation split (accuracy and per-class
accuracy against the model auto_prune started from) and on the study's probe (explanation drift
``1 - saliency rank correlation`` against the original model, the history's drift).

Examples
--------
>>> import xprune_nb as xp
>>> study = xp.Study(xp.zoo.load("digits_cnn"), xp.datasets.load("digits"), seed=0)
>>> step = auto_prune(study, macs=0.6, max_accuracy_drop=0.05, steps=2, samples=64)
>>> step.metrics["macs"] <= 0.6 * 1.02 * study.history[0].metrics["macs"]
True
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from dataclasses import dataclass, field

from .. import criteria as _criteria
from ..core.errors import ConfigError, StoppedError
from ..core.params import PARAMS, check, validate
from ..core.progress import StopSignal, make_progress
from .allocate import allocate, damage_of
from .auto_grounding import grounding_check
from .auto_limits import check_group_limit, group_sentence, groups_on_test, val_state, violations
from .plan import check_retrain_args
from .sensitivity import Measurer, group_rows, score_copy

__all__ = ["auto_prune", "AutoOutcome", "AutoPruneWarning", "TOLERANCE", "AMOUNTS"]

log = logging.getLogger("xprune_nb.auto")

#: The budget counts as reached within this relative margin (2 %: 0.25 -> at most 0.255).
TOLERANCE = 0.02
#: Amounts of the per-round sensitivity analysis (fractions of each group's alive units).
AMOUNTS = (0.1, 0.2, 0.35, 0.5, 0.7)
#: Tries per round (each with half the saving of the last) before stopping.
TRIES = 3
#: Rounds beyond ``steps`` allowed to close a gap left by savings that did not add up.
TOP_UP = 3
BUDGETS = ("macs", "params", "latency")


class AutoPruneWarning(UserWarning):
    """auto_prune stopped before reaching its budget (the message says what it reached)."""


@dataclass
class AutoOutcome:
    """What one auto_prune call reached (also written, as a sentence, in the last step's note)."""

    budget: str
    target: float
    reached: float
    met: bool
    rounds: int
    rejected: int
    message: str
    seconds: float = 0.0
    history: list[dict] = field(default_factory=list)
    #: the grounding constraint's start/end numbers (validation and test), when it was set
    grounding: dict = field(default_factory=dict)


def _check_args(study, call, budgets, constraints, criterion, granularity, retrain, steps,
                samples):
    given = {k: v for k, v in budgets.items() if v is not None}
    if len(given) != 1:
        got = ", ".join(f"{k}={v!r}" for k, v in given.items()) or "none"
        raise ConfigError(f"{call}(macs=|params=|latency=...): expected exactly one budget, a "
                          f"fraction in (0, 1) of the current model, got {got}.")
    (name, value), = given.items()
    check(call, name, value, PARAMS["budget"])
    validate(call, **constraints, steps=steps, samples=samples)
    from .scoring import criterion_and_kind

    cls, kind = criterion_and_kind(criterion, granularity, call)
    if name != "params" and not kind.speeds_up:
        raise ConfigError.bad_value(call, "granularity", f"a unit kind that removes computation "
                                    f"for a {name} budget (masks leave dense MACs and latency "
                                    "as they are; use params= with masks)", granularity)
    check_retrain_args(call, retrain)
    return name, value, kind


class _Cost:
    """The budget's measure of a model: MACs, parameters (non-zero ones for masks) or the
    median batch-1 latency in milliseconds."""

    def __init__(self, study, name: str, kind) -> None:
        self.study, self.name, self.masks = study, name, not kind.structural

    def __call__(self, model) -> float:
        from ..measure.metrics import count_macs, count_params, measure_latency

        s = self.study
        if self.name == "macs":
            return float(count_macs(model, s.env.example[:1], s.forward))
        if self.name == "params":
            total, nonzero = count_params(model)
            return float(nonzero if self.masks else total)
        return measure_latency(model, s.data.example(1), s.forward, repeats=30, warmup=5)

    def proxy(self, row: dict) -> float:
        """The sensitivity column that predicts this cost (latency follows MACs)."""
        if self.name == "params":
            return float(row["nonzero_params" if self.masks else "params"])
        return float(row["macs"])


def _append_note(step, text: str) -> None:
    step.note = f"{step.note}; {text}" if step.note else text


def auto_prune(study, *, macs: float | None = None, params: float | None = None,
               latency: float | None = None, max_accuracy_drop: float | None = None,
               max_drift: float | None = None, max_class_drop: float | None = None,
               max_group_drop: float | None = None,
               max_grounding_drop: float | None = None, grounding_metric: str = "mass",
               grounding_masks=None, grounding_method: str = "saliency",
               criterion: str = "taylor", granularity: str = "channel",
               retrain: dict | None = None, steps: int = 10, samples: int | None = None,
               recalibrate: bool | None = None, progress=False, stop: StopSignal | None = None,
               call: str = "Study.auto_prune"):
    """Prune the study's model to a budget in rounds, never keeping a round that breaks a
    constraint.

    Parameters
    ----------
    study : Study
    macs, params, latency : float in (0, 1)
        Exactly one budget: the fraction of the *current* model's MACs, parameters (non-zero
        ones with ``granularity="weight"``) or measured batch-1 latency to reach.
    max_accuracy_drop, max_class_drop : float in [0, 1], optional
        Largest drop of validation accuracy, overall and of any one class, from the model
        auto_prune starts from (0.01 is one point).
    max_group_drop : float in [0, 1], optional
        Largest drop of any sensitive group's validation accuracy (a study with groups,
        docs/groups.md); the test split's group drops are reported in the note.
    max_drift : float in [0, 2], optional
        Largest explanation drift (``1 - saliency rank correlation`` with the original model on
        the study's probe, the history's drift). Also weighs drift into the allocation.
    max_grounding_drop : float in [0, 1], optional
        Largest drop of the mean grounding on the validation split from the model auto_prune
        starts from: the relevance mass on the evidence (``grounding_metric="mass"``) or the
        pointing-game hit rate (``"pointing"``) of ``grounding_method`` maps (any
        ``Study.saliency`` method, e.g. ``"attention_relevance"`` for ViTs) of the true class.
        The evidence is the data's boxes (``digits_boxes``) or ``grounding_masks``: one mask
        per validation row, shaped like the inputs (or ``(N, H, W)`` for images), or
        ``{"val": ..., "test": ...}``. Start and end grounding on the test split are reported
        in ``step.auto.grounding`` and the note (n/a without test evidence).
    criterion, granularity : str
        How units are scored and what a unit is.
    retrain : dict, optional
        ``Study.retrain`` arguments run after every round (e.g. ``{"epochs": 1}``).
    steps : int
        Planned rounds (the cost falls geometrically); up to 3 more close a remaining gap.
    samples, recalibrate
        Scoring examples; BatchNorm recalibration (default: on for models with BatchNorm).
    progress, stop
        One tick per round; a stop ends after the round in progress (kept rounds stay).
        Ctrl-C or an error undoes the try in progress only: the study stays on the last
        kept round.

    Returns
    -------
    Step
        The last kept step; its ``note`` says what was reached. When the budget can't be met
        under the constraints, an :class:`AutoPruneWarning` says so too.

    Examples
    --------
    >>> import xprune_nb as xp
    >>> study = xp.Study(xp.zoo.load("toy_mlp"), xp.datasets.load("moons"), seed=0)
    >>> step = auto_prune(study, params=0.5, steps=2)
    >>> "params" in step.note
    True
    """
    start = time.perf_counter()
    limits = {"max_accuracy_drop": max_accuracy_drop, "max_class_drop": max_class_drop,
              "max_drift": max_drift, "max_grounding_drop": max_grounding_drop,
              "max_group_drop": max_group_drop}
    name, budget, kind = _check_args(study, call, {"macs": macs, "params": params,
                                                   "latency": latency}, limits, criterion,
                                     granularity, retrain, steps, samples)
    validate(call, recalibrate=recalibrate)
    check_group_limit(study, call, max_group_drop)
    limits["grounding"] = grounding_check(study, call, max_grounding_drop, grounding_metric,
                                           grounding_masks, grounding_method)
    tick = make_progress(progress, call, f"auto_prune {name}", stop)
    with study.timeline.hold(call):
        return _run(study, call=call, name=name, budget=budget, kind=kind, limits=limits,
                    criterion=criterion, granularity=granularity, retrain=retrain,
                    steps=steps, samples=samples, recalibrate=recalibrate, tick=tick,
                    start=start)


def _run(study, *, call, name, budget, kind, limits, criterion, granularity, retrain, steps,
         samples, recalibrate, tick, start):
    """The rounds of :func:`auto_prune`, run while it holds the study's lock."""
    max_drift = limits["max_drift"]
    cost = _Cost(study, name, kind)
    try:
        c0 = cost(study.model)
    except Exception as exc:  # noqa: BLE001 - any failure to time the model refuses the budget
        raise ConfigError(f"{call}({name}=...): the current model can't be measured for a "
                          f"{name} budget ({exc}); use macs= or params=.") from exc
    if not (math.isfinite(c0) and c0 > 0):
        raise ConfigError(f"{call}({name}=...): the current model can't be timed (measured "
                          f"{c0!r}); use macs= or params=.")
    measure = Measurer(study)
    if max_drift is not None:
        now = measure._drift(study.model)
        if math.isfinite(now) and now > max_drift:
            raise ConfigError(f"{call}(max_drift=...): the current model already drifts "
                              f"{now:.4f} from the original (more than {max_drift}); raise "
                              "max_drift or start from an earlier step.")
    scorer = _criteria.get(criterion, call)()
    ref = val_state(study, study.model)
    origin = study.current   # the model the limits are judged against
    groups0 = groups_on_test(study, study.model) if limits["max_group_drop"] is not None else {}
    grounding = limits["grounding"]
    if grounding is not None:
        grounding.reference(study.model)
    target = budget * c0
    outcome = AutoOutcome(name, budget, 1.0, False, 0, 0, "")
    last = None
    message = None
    current = c0
    if tick is not None:
        tick(0, steps)
    while current > target * (1 + TOLERANCE):
        if outcome.rounds >= steps + TOP_UP:
            message = f"ran {outcome.rounds} rounds without closing the gap"
            break
        remaining = max(1, steps - outcome.rounds)
        goal = current * (target / current) ** (1 / remaining)
        base = study.model
        scores, units = score_copy(study, base, kind, scorer, samples=samples, classes=None,
                                   batch_size=64, call=call)
        recal = kind.structural and (recalibrate if recalibrate is not None else
                                     _has_bn(base))
        baseline = {"layer": None, "amount": 0.0, **measure(base)}
        rows = []
        for group in scores.values:
            rows += group_rows(study, kind, base, units, scores, group, AMOUNTS,
                               baseline=baseline, recalibrate=recal, measure=measure,
                               call=call)
        base_proxy = cost.proxy(baseline)
        for r in rows:
            # a row that removes no unit (0.1 of a 4-head group) saves nothing but is no
            # dead end: the group's larger amounts stay available to the allocation
            ok = r["note"] == "" or r.get("removed") == 0
            r["saved"] = base_proxy - cost.proxy(r) if ok else math.nan
            r["damage"] = damage_of(r, baseline, drift_weight=1.0 if max_drift is not None
                                    else 0.0)
        share = 1.0 - goal / current     # the fraction of the cost this round removes
        kept = False
        for attempt in range(TRIES):
            amounts = _at_least_one_unit(allocate(rows, share * base_proxy / 2 ** attempt),
                                         kind, base, units, scores)
            if not amounts:
                break
            # one try is one transaction: Ctrl-C or an error anywhere in it, going back after
            # a rejection included, leaves the study where the try began (the last kept round)
            with study.timeline.transaction(call):
                begin = study.current
                study.score(criterion, granularity, samples=samples)
                step = study.prune(0.0, layer_amounts=amounts, recalibrate=recalibrate)
                if retrain:
                    step = study.retrain(**{"progress": False, **retrain})
                broken, values = violations(study, study.model, ref, limits, measure)
                new_cost = cost(study.model)
                if broken:
                    _append_note(step, "auto_prune: rejected, " + "; ".join(broken))
                    study.goto(begin)
                else:
                    _append_note(step, f"auto_prune round {outcome.rounds + 1}: {name} "
                                 f"{new_cost / c0:.3f} of start (target {budget:g}), val "
                                 f"accuracy {values['accuracy']:.4f}")
            outcome.history.append({"round": outcome.rounds + 1, "try": attempt + 1,
                                    "step": step.index, "layer_amounts": amounts,
                                    name: new_cost / c0, **values, "kept": not broken})
            if broken:
                outcome.rejected += 1
                log.info("%s: round %d try %d rejected (%s)", call, outcome.rounds + 1,
                         attempt + 1, "; ".join(broken))
                continue
            outcome.rounds += 1
            current, last, kept = new_cost, step, True
            break
        if not kept:
            message = ("no group can be pruned further" if not amounts else
                       f"every try of round {outcome.rounds + 1} broke a constraint "
                       f"({'; '.join(broken)})")
            break
        try:
            if tick is not None:
                tick(min(outcome.rounds, steps), steps)
        except StoppedError:
            message = f"stopped by the user after round {outcome.rounds}"
            break
    outcome.reached = current / c0
    outcome.met = current <= target * (1 + TOLERANCE)
    outcome.seconds = time.perf_counter() - start
    rounds = f"{outcome.rounds} round{'s' if outcome.rounds != 1 else ''}"
    if outcome.met:
        outcome.message = (f"auto_prune reached {name} {outcome.reached:.3f} of the start "
                           f"(budget {budget:g}) in {rounds} ({outcome.rejected} rejected), "
                           f"{outcome.seconds:.1f} s.")
    else:
        outcome.message = (f"auto_prune stopped at {name} {outcome.reached:.3f} of the start, "
                           f"short of the budget {budget:g}: {message or 'no progress'}; "
                           f"{rounds} kept, {outcome.rejected} rejected.")
        warnings.warn(outcome.message, AutoPruneWarning, stacklevel=4)
    if groups0:
        outcome.message += " " + group_sentence(groups0, groups_on_test(study, study.model)) + "."
    if grounding is not None:
        outcome.grounding = grounding.report(study.model)
        outcome.message += " " + grounding.sentence(outcome.grounding) + "."
    log.info("%s: %s", call, outcome.message)
    if last is not None:
        _append_note(last, outcome.message)
        if limits["max_group_drop"] is not None:   # recorded: recipes and scripts re-check it
            last.config["group_limit"] = {"max_group_drop": float(limits["max_group_drop"]),
                                          "from": int(origin)}
    result = last if last is not None else study.step
    result.auto = outcome     # the details, for this session (not saved with the study)
    return result


def _at_least_one_unit(amounts: dict[str, float], kind, model, units, scores) -> dict:
    """The allocation as prune amounts. ``Study.prune`` turns each amount into a per-round
    fraction (``1 - (1 - a)``), which can fall a hair below an exact half unit that the
    sensitivity analysis rounded up: a tiny margin keeps both selections the same. An
    allocation whose amounts all round to zero units (a small last step on small groups)
    would be refused by the prune; it takes one unit from the group asked most of."""
    from .selection import _count

    amounts = {g: min(a + 1e-9, 0.9) for g, a in amounts.items()}
    alive = kind.alive(model, units)
    sizes = {g: int(alive[g].sum()) if alive and g in alive else int(scores.values[g].numel())
             for g in amounts}
    if not amounts or any(_count(1 - (1 - a), sizes[g]) for g, a in amounts.items()):
        return amounts
    group = max(amounts, key=lambda g: amounts[g] * sizes[g])
    return {**amounts, group: min(1.0 / sizes[group] + 1e-9, 0.9)}


def _has_bn(model) -> bool:
    try:
        from ..models.mechanisms.recalibrate import has_batchnorm
    except ImportError:
        return False
    return has_batchnorm(model)
