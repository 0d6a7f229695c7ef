"""One round of a prune: select, apply through the unit kind, rewind, recalibrate, record.

Called by ``Study.prune`` inside the study's transaction: if anything here fails or is
interrupted, the transaction rebuilds the exact model of the current step.
"""

from __future__ import annotations

import copy
import time

from ..core.history import Step
from ..core.scores import Scores
from ..measure.step import measure_step
from ..pruning import units as _units
from ..pruning.plan import PruneConfig, select_removal, units_for

__all__ = ["prune_round", "rescore"]


def prune_round(study, scores: Scores, fraction: float, cfg: PruneConfig, *, round_index: int,
                call: str, rewind_to: int | None = None) -> Step:
    """Prune ``fraction`` of the alive units of ``study.model`` and commit the step."""
    start = time.perf_counter()
    kind = _units.get(scores.granularity, call)
    timeline = study.timeline
    model = timeline.model
    units = units_for(kind, model, study.env, scores, timeline.current)
    removal = select_removal(kind, model, units, scores, fraction, cfg,
                             cfg.round_layer_amounts(), call, refuse_empty=round_index == 0)
    structure = copy.deepcopy(timeline.step.structure)
    config = {"criterion": scores.criterion, "granularity": scores.granularity,
              "score_options": dict(scores.options), **cfg.to_dict(),
              "round": round_index + 1, "fraction": fraction}
    step = Step(len(timeline.history), "prune", timeline.current, config=config,
                removed={k: v.tolist() for k, v in removal.items()},
                calls=[{"score": scores.call()}, {"prune": cfg.call()}])
    # the model is changed in place (the dependency graph built while scoring is reused); a
    # failure from here on is rolled back by rebuilding the current step's exact model
    timeline.mark_dirty()
    plan = kind.apply(model, units, removal, study.env)
    if plan:
        structure.append({"kind": kind.name, "plan": plan})
    step.structure = structure
    if rewind_to is not None:
        _rewind(study, model, rewind_to, structure)
    if kind.structural and _wants_recalibration(cfg, model):
        from ..models.mechanisms.recalibrate import recalibrate_batchnorm, samples_for

        # bounded by cost: a big model recalibrates on fewer examples
        # (models/mechanisms/recalibrate.py)
        samples = samples_for(_macs(study, model, structure))
        report = recalibrate_batchnorm(model, study.data.train.X, forward=study.forward,
                                       seed=study.seed, samples=samples)
        # the settings, so a replay under other defaults recalibrates the same way
        step.config["recalibration"] = {k: v for k, v in report.as_dict().items()
                                        if k != "seconds"}
    measure_step(study, step, model, seconds=time.perf_counter() - start)
    timeline.commit(step, model)
    return step


def _macs(study, model, structure: list) -> int | None:
    """MACs per example of the pruned model (counted once: the step's measurement reuses it)."""
    from ..measure.step import structure_macs

    try:
        return structure_macs(study, structure, model)
    except Exception:  # noqa: BLE001 - uncountable: recalibrate with the full default
        return None


def _wants_recalibration(cfg: PruneConfig, model) -> bool:
    if cfg.recalibrate is False:
        return False
    try:
        from ..models.mechanisms.recalibrate import has_batchnorm
    except ImportError:     # recalibration not available in this build
        return False
    return bool(cfg.recalibrate) or (cfg.recalibrate is None and has_batchnorm(model))


def _rewind(study, model, index: int, structure: list) -> None:
    """Lottery-ticket rewinding: surviving weights take their values at step ``index``."""
    from ..pruning.rebuild import rebuild

    timeline = study.timeline
    donor = timeline.model_at(index)
    later = structure[len(timeline.history[index].structure):]
    donor = rebuild(donor, later, [], study.env.example, study.forward)
    donor_state = donor.state_dict()
    state = model.state_dict()
    for key in state:
        if key.endswith("_mask"):
            continue
        src = key if key in donor_state else key.replace("weight_orig", "weight")
        if src in donor_state and donor_state[src].shape == state[key].shape:
            state[key] = donor_state[src].clone()
    model.load_state_dict(state)


def rescore(study, scores: Scores) -> Scores:
    """Score the current model again as ``scores`` were made (the next round of an iterative
    prune)."""
    o = {k: v for k, v in scores.options.items() if k != "seed"}
    return study.score(scores.criterion, scores.granularity, samples=o.pop("samples"),
                       classes=o.pop("classes"), prune_output=o.pop("prune_output"), **o)
