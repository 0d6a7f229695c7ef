"""Dynamic pruning as a study step: ``Study.dynamic`` builds a DyFiP-style input-adaptive model
(:mod:`xprune_nb.pruning.dynamic_build`) and records it as a ``dynamic`` step.

The step's structure ends with ``{"kind": "dynamic", "plan": ...}``: replaying it wraps the
(possibly statically pruned) model of the parent step into the same :class:`DynamicNet`, and the
step's snapshot holds the branch's weights, so undo/goto, save/load, recipes, exported scripts
and ``load_pruned`` restore it exactly.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping

import torch
from torch import nn

from ..errors import ConfigError, ModelError, StoppedError
from ..history import Step
from ..measure import measure_step
from ..params import validate
from .dynamic_build import DEFAULTS

__all__ = ["dynamic", "replay", "is_dynamic"]


def is_dynamic(model: nn.Module) -> bool:
    """True for a model built by :func:`dynamic` (input-adaptive)."""
    from .dynamic import DynamicNet

    return isinstance(model, DynamicNet)


def replay(model: nn.Module, plan: dict, example: torch.Tensor, forward=None) -> nn.Module:
    """Wrap ``model`` (the parent step's model) into the recorded dynamic model."""
    from .dynamic import rebuild_dynamic

    return rebuild_dynamic(model, plan, example, call="rebuild")


def dynamic(study, *, k: int = DEFAULTS["k"], confidence: float = DEFAULTS["confidence"],
            keep: float = DEFAULTS["keep"], at: str | None = DEFAULTS["at"],
            criterion: str = "lrp", epochs: int = DEFAULTS["epochs"],
            samples: int | None = None, max_paths: int = DEFAULTS["max_paths"],
            finetune: int = DEFAULTS["finetune"], progress=False, stop=None) -> Step:
    """Make the current model input-adaptive (DyFiP; Sabih, Hannig & Teich, EuroMLSys 2022).

    A small branch after layer ``at`` predicts the top-``k`` classes; when its top-1
    probability reaches ``confidence`` the input exits early, otherwise the later layers run
    only the ``keep`` fraction of channels that the class-wise relevance (``criterion``,
    class-aware, default LRP) marks as important for the predicted class subset, through
    precomputed smaller layers (at most ``max_paths`` of them). Records a ``dynamic`` step;
    ``study.evaluate()`` then reports mean and longest-path MACs, the share of early exits and
    batch-1 latency. See docs/dynamic.md for the defaults and when it pays. ``progress``
    follows the relevance scoring; ``stop`` ends the call during scoring or after the
    branch's training, leaving the study unchanged.

    Examples
    --------
    >>> import xprune_nb as xp
    >>> study = xp.Study(xp.zoo.load("digits_cnn"), xp.datasets.load("digits"))
    >>> step = study.dynamic(k=2, keep=0.5, epochs=1, samples=64)  # doctest: +SKIP
    >>> step.kind                                                    # doctest: +SKIP
    'dynamic'
    """
    from .. import criteria
    from .dynamic_build import build_dynamic, check_dynamic_args

    call = "Study.dynamic"
    validate(call, confidence=confidence, keep=keep, samples=samples)
    from ..progress import make_progress

    make_progress(progress, call, "dynamic")   # checked here, not by the score it runs
    check_dynamic_args(k=k, confidence=confidence, keep=keep, epochs=epochs,
                       max_paths=max_paths, num_classes=study.data.num_classes, call=call)
    cls = criteria.get(criterion, call)
    if not cls.class_aware:
        aware = [n for n in criteria.available() if criteria.get(n, call).class_aware]
        raise ConfigError.bad_value(call, "criterion", f"a class-aware criterion ({aware})",
                                    criterion)
    if is_dynamic(study.model):
        raise ConfigError(f"{call}: the current model is dynamic already; go back to a static "
                          "step (study.undo()) first.")
    if isinstance(study.timeline.example, Mapping):
        raise ModelError(f"{call}: the model takes named inputs (a dict / BatchEncoding: "
                         f"{sorted(map(str, study.timeline.example))}); dynamic paths split the "
                         "model into a trunk and branches that pass one tensor, so they are "
                         "not supported for such models yet. Prune heads or blocks instead.")
    timeline = study.timeline
    with timeline.transaction(call):
        start = time.perf_counter()
        scores = study.score(criterion, granularity="channel", samples=samples,
                             progress=progress, stop=stop)
        if not scores.per_class:
            raise ModelError(f"{call}: criterion {criterion!r} gave no class-wise relevance.")
        net = build_dynamic(study.model, train_X=study.data.train.X,
                            train_y=study.data.train.y, per_class_scores=scores.per_class,
                            forward=study.forward, k=k, confidence=confidence, keep=keep,
                            at=at, epochs=epochs, seed=study.seed, max_paths=max_paths,
                            example=study.env.example, finetune=finetune, call=call)
        if stop is not None and stop.requested:   # after the branch's training: roll back
            raise StoppedError(f"{call}: stopped by the user; the study is unchanged.")
        from .dynamic import dynamic_plan

        plan = dynamic_plan(net)
        config = {"k": k, "confidence": confidence, "keep": keep, "at": plan["at"],
                  "criterion": criterion, "epochs": epochs, "samples": scores.options[
                      "samples"], "max_paths": max_paths, "finetune": finetune}
        step = Step(len(timeline.history), "dynamic", timeline.current, config=config,
                    structure=copy.deepcopy(timeline.step.structure)
                    + [{"kind": "dynamic", "plan": plan}], calls=[{"dynamic": dict(config)}])
        step.note = (f"branch after {plan['at']!r}, {len(plan['paths'])} sliced paths, "
                     f"k={k}, confidence={confidence}, keep={keep}")
        measure_step(study, step, net.eval(), seconds=time.perf_counter() - start)
        timeline.commit(step, net)
    return step
