"""Sensitivity analysis: prune each layer (group) alone at several amounts and measure the damage.

The service behind ``Study.sensitivity``. It scores a *copy* of the current model once, then, for
every group and every amount, selects that group's least important units exactly as a prune
would (:func:`~xprune_nb.pruning.plan.select_removal`), applies them to a fresh copy through the
unit kind's preview, recalibrates BatchNorm (EagleEye: a recalibrated candidate's accuracy
predicts its accuracy after fine-tuning; the raw one does not), and measures accuracy and loss
on the validation split, explanation drift on the study's probe, MACs and parameters. Nothing of
the study changes: no step, no scores, no weights (Distiller and SparseML answer "how much can I
prune each layer?" the same way, without the explanations).

Examples
--------
>>> import xprune_nb as xp
>>> study = xp.Study(xp.zoo.load("digits_cnn"), xp.datasets.load("digits"), seed=0)
>>> sens = sensitivity(study, "taylor", amounts=(0.5,), samples=64)
>>> sorted(sens.to_frame()["layer"])
['conv1', 'conv2', 'fc1']
>>> len(study.history)
1
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from numbers import Real

import torch
from torch import nn

from ..core.errors import ConfigError, PruneError
from ..core.params import Interval, Options, check, check_classes, validate
from ..core.progress import StopSignal, make_progress
from . import units as _units
from .plan import PruneConfig, select_removal
from .sensitivity_result import Sensitivity

__all__ = ["sensitivity", "Sensitivity", "DEFAULT_AMOUNTS", "Measurer", "evaluate_candidate",
           "check_amounts", "score_copy", "group_rows"]

#: Amounts analysed by default: 10 % to 90 % of each group's units.
DEFAULT_AMOUNTS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
METRICS = ("accuracy", "loss", "drift", "worst_group_accuracy", "group_accuracy_gap")
#: metrics that need a study with sensitive groups (``Study(groups=...)``)
GROUP_METRICS = ("worst_group_accuracy", "group_accuracy_gap")
_AMOUNT = Interval(Real, 0, 1, "neither")
#: BatchNorm recalibration of a candidate: batches of 64 training examples. Fewer than a prune's
#: 10: candidates are only compared with each other, and this is most of a candidate's cost.
RECALIBRATION_BATCHES = 5


def check_amounts(call: str, amounts) -> list[float]:
    """``amounts=``: a non-empty sequence of fractions in (0, 1), returned sorted, unique."""
    if isinstance(amounts, (str, bytes)) or not isinstance(amounts, Sequence) or not amounts:
        raise ConfigError.bad_value(call, "amounts", "a non-empty list of numbers in (0, 1)",
                                    amounts)
    for i, a in enumerate(amounts):
        check(call, f"amounts[{i}]", a, _AMOUNT)
    return sorted({float(a) for a in amounts})


class Measurer:
    """Measures candidates of one study: validation accuracy and loss, probe drift, MACs and
    parameters. The original model's saliency on the probe is computed once and reused (the
    same numbers as :func:`xprune_nb.explain.drift.probe_drift`'s ``saliency_spearman``, at
    half the cost per candidate)."""

    def __init__(self, study) -> None:
        self.study = study
        self._reference = None

    def _drift(self, model: nn.Module) -> float:
        try:
            from ..explain.drift import _compare_maps, _valid, probe_saliency
            from ..explain.numbers import finite_mean
        except ImportError:   # explanations are an optional extra: drift stays NaN
            return math.nan

        s = self.study
        # the history's probe saliency: input gradients, or per token (ids, dicts with masks)
        if self._reference is None:
            self._reference = probe_saliency(s.original, s.probe_x, s.probe_y,
                                             forward=s.forward)[0]
        if self._reference is None:   # no map to compare (ids no embedding reads)
            return math.nan
        current = probe_saliency(model, s.probe_x, s.probe_y, forward=s.forward)[0]
        if current is None:
            return math.nan
        rho = _compare_maps(self._reference, current, _valid(s.probe_x, self._reference),
                            0.1)[0]
        # maps that rank nothing (a model whose saliency vanished) are left out, as in the
        # history's probe drift; NaN when no probe input has a ranking
        return 1.0 - finite_mean(rho)

    def __call__(self, model: nn.Module) -> dict:
        from ..data.groups import group_summary, per_group_accuracy
        from ..measure.metrics import count_macs, count_params
        from ..measure.training import evaluate_split

        s = self.study
        names = getattr(s.data, "group_names", None)
        acc, loss, preds, y = evaluate_split(model, s.data.val, s.forward, name="val",
                                             return_predictions=True)
        total, nonzero = count_params(model)
        out = {"accuracy": acc, "loss": loss, "drift": self._drift(model),
               "macs": count_macs(model, s.env.example[:1], s.forward),
               "params": total, "nonzero_params": nonzero}
        if names:   # Fairlearn's by_group, group_min and between-groups difference, on val
            by_group = per_group_accuracy(preds, y, getattr(s.data.val, "groups", None), names)
            out.update(group_summary(by_group))
            out.update({f"accuracy[{g}]": a for g, a in by_group.items()})
        return out


def evaluate_candidate(study, kind: _units.UnitKind, base: nn.Module, units: _units.Units,
                       removal: dict[str, torch.Tensor], *, recalibrate: bool,
                       measure: Measurer) -> dict:
    """Apply ``removal`` to a copy of ``base`` (via the kind's preview), recalibrate BatchNorm
    when asked and the kind changes shapes, and measure the copy."""
    trial = kind.preview(base, units, removal, study.env)
    if recalibrate and kind.structural:
        from ..models.mechanisms.recalibrate import recalibrate_batchnorm

        recalibrate_batchnorm(trial, study.data.train.X, batches=RECALIBRATION_BATCHES,
                              forward=study.forward, seed=study.seed)
    return measure(trial)


def _wants_recalibration(recalibrate: bool | None, model: nn.Module) -> bool:
    if recalibrate is False:
        return False
    try:
        from ..models.mechanisms.recalibrate import has_batchnorm
    except ImportError:    # recalibration not available in this build
        return False
    return bool(recalibrate) or has_batchnorm(model)


def sensitivity(study, criterion: str = "taylor", *, granularity: str = "channel",
                amounts: Sequence[float] = DEFAULT_AMOUNTS, metric: str = "accuracy",
                samples: int | None = None, classes: Sequence[int | str] | None = None,
                recalibrate: bool | None = None, batch_size: int = 64,
                progress: bool | Callable[[int, int], object] = False,
                stop: StopSignal | None = None, call: str = "Study.sensitivity",
                **criterion_options) -> Sensitivity:
    """Prune each group of the current model alone at each amount, on copies, and measure it.

    Parameters
    ----------
    study : Study
        Never changed: the analysis runs on copies of ``study.model``.
    criterion : str
        A registered criterion (e.g. ``"taylor"``, ``"lrp"``, ``"magnitude"``).
    granularity : str
        A unit kind (:func:`xprune_nb.pruning.units.available`).
    amounts : sequence of float in (0, 1)
        Fractions of each group's alive units to remove, one group at a time.
    metric : {"accuracy", "loss", "drift", "worst_group_accuracy", "group_accuracy_gap"}
        What the heat map, :meth:`Sensitivity.most_sensitive` and the HTML view show.
        ``"worst_group_accuracy"`` ranks layers by their worst-group cost (the validation
        accuracy of the worst-served sensitive group); it and the gap between the best and the
        worst group need a study with groups (``Study(groups=...)``), whose rows always carry
        them with one ``accuracy[<group>]`` column per group.
    samples, classes, batch_size
        Reference examples for scoring, as in ``Study.score``.
    recalibrate : bool, optional
        Re-estimate BatchNorm statistics of every structural candidate (default: when the
        model has BatchNorm).
    progress, stop
        The progress protocol: one tick per group; a stop raises StoppedError (nothing
        changed, so the study is as it was).
    **criterion_options
        The criterion's options (e.g. ``rule="zplus"`` for lrp).

    Returns
    -------
    Sensitivity
        ``.to_frame()`` (layer, amount, accuracy, loss, drift, macs, params..., and the
        group columns with groups), ``.plot()``,
        ``.most_sensitive()``, ``.seconds``.

    Raises
    ------
    ConfigError
        A bad argument, named, before any work.

    Examples
    --------
    >>> import xprune_nb as xp
    >>> study = xp.Study(xp.zoo.load("toy_mlp"), xp.datasets.load("moons"), seed=0)
    >>> sens = sensitivity(study, "magnitude", amounts=(0.5, 0.9))
    >>> list(sens.most_sensitive().index) == sorted(sens.layers, key=lambda l: -float(
    ...     sens.damage().loc[l].mean()))
    True
    """
    start = time.perf_counter()
    from .scoring import criterion_and_kind

    cls, kind = criterion_and_kind(criterion, granularity, call)
    amounts = check_amounts(call, amounts)
    check(call, "metric", metric, Options(METRICS))
    names = getattr(study.data, "group_names", None) or []
    if metric in GROUP_METRICS and not names:
        raise ConfigError.bad_value(call, "metric", f"one of {list(METRICS[:3])} for a study "
                                    "without sensitive groups (give Study(..., groups=...), "
                                    "see docs/groups.md)", metric)
    classes = check_classes(call, classes, study.data.num_classes, study.data.class_names,
                            criterion=cls)
    validate(call, samples=samples, batch_size=batch_size, recalibrate=recalibrate)
    scorer = cls.for_call(call, **criterion_options)
    tick = make_progress(progress, call, f"sensitivity {criterion}", stop)

    base = copy.deepcopy(study.model).eval()
    scores, units = score_copy(study, base, kind, scorer, samples=samples, classes=classes,
                               batch_size=batch_size, call=call)
    recal = kind.structural and _wants_recalibration(recalibrate, base)
    result = Sensitivity(cls.name, kind.name, metric, amounts, step=study.current,
                         recalibrated=recal, group_names=list(names))
    measure = Measurer(study)
    result.baseline = {"layer": None, "amount": 0.0, "removed": 0, **measure(base)}
    groups = list(scores.values)
    if tick is not None:
        tick(0, len(groups))
    for gi, group in enumerate(groups):
        result.rows.extend(group_rows(study, kind, base, units, scores, group, amounts,
                                      baseline=result.baseline, recalibrate=recal,
                                      measure=measure, call=call))
        if tick is not None:
            tick(gi + 1, len(groups))
    result.seconds = time.perf_counter() - start
    return result


def score_copy(study, base: nn.Module, kind: _units.UnitKind, scorer, *, samples, classes,
               batch_size: int, call: str):
    """Score ``base`` (a copy of the study's model) like ``Study.score`` would, recording
    nothing; returns the scores and the units they were made on."""
    from .scoring import reference_for, score_units

    inputs, targets, extras = reference_for(scorer, study.data, samples, classes,
                                            seed=study.seed, call=call)
    scores = score_units(
        base, study.env, kind, scorer, inputs=inputs,
        targets=targets, classes=classes, num_classes=study.data.num_classes,
        seed=study.seed, batch_size=batch_size, prune_output=False, progress=None,
        step=study.current, call=call, **extras,
        options={**scorer.params, "samples": len(targets), "classes": classes,
                 "prune_output": False, "seed": study.seed, "batch_size": batch_size})
    return scores, scores._units[1]


def group_rows(study, kind, base, units, scores, group: str, amounts: Sequence[float], *,
               baseline: dict, recalibrate: bool, measure: Measurer,
               call: str) -> list[dict]:
    """Rows of one group: each amount removed from that group alone, measured on a copy."""
    others = [k for k in scores.values if k != group]
    cfg = PruneConfig(amount=0.0, scope="global", ignore=others, layer_amounts={})
    rows = []
    for amount in amounts:
        row = {"layer": group, "amount": amount, "removed": 0, "note": ""}
        try:
            removal = select_removal(kind, base, units, scores, 0.0, cfg, {group: amount},
                                     call, refuse_empty=False)
        except PruneError as exc:   # e.g. it would empty the group: a cell with the reason
            row.update({k: math.nan for k in baseline if k not in row})
            row["note"] = str(exc).split(": ", 1)[-1]
            rows.append(row)
            continue
        row["removed"] = sum(len(v) for v in removal.values())
        if row["removed"] == 0:
            row.update({k: v for k, v in baseline.items() if k not in row})
            row["note"] = "removes no unit at this amount"
        else:
            row.update(evaluate_candidate(study, kind, base, units, removal,
                                          recalibrate=recalibrate, measure=measure))
        rows.append(row)
    return rows

