"""Dynamic pruning as a study step: ``Study.dynamic`` builds a DyFiP-style input-adaptive model
(:mod:`xprune_nb.pruning.dynamic.build`) and records it as a ``dynamic`` step.

The step's structure ends with ``{"kind": "dynamic", "plan": ...}``: replaying it wraps the
(possibly statically pruned) model of the parent step into the same :class:`DynamicNet`, and the
step's snapshot holds the branch's weights, so undo/goto, save/load, recipes, exported scripts
and ``load_pruned`` restore it exactly.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping

from torch import nn

from ...core.errors import ConfigError, ModelError, StoppedError
from ...core.history import Step
from ...core.params import validate
from ...measure.step import measure_step
from .build import DEFAULTS

__all__ = ["dynamic", "replay", "is_dynamic", "default_criterion", "usable_criterion"]


def is_dynamic(model: nn.Module) -> bool:
    """True for a model built by :func:`dynamic` (input-adaptive)."""
    from .net import DynamicNet

    return isinstance(model, DynamicNet)


#: class-aware criteria whose channel relevance needs one input tensor (zennit's LRP rules,
#: captum's layer conductance): for named inputs Study.dynamic uses the others
_TENSOR_ONLY = ("lrp", "conductance")
#: the default criterion for named (token) inputs: learned class-wise masks, fast on tokens
TOKEN_CRITERION = "xmask"


def default_criterion(example) -> str:
    """What ``Study.dynamic(criterion=None)`` uses for inputs like ``example``."""
    return TOKEN_CRITERION if isinstance(example, Mapping) else "lrp"


def usable_criterion(name: str, example) -> bool:
    """False for a criterion that cannot score channels of a model with these inputs."""
    return not (isinstance(example, Mapping) and name in _TENSOR_ONLY)


def replay(model: nn.Module, plan: dict, example, forward=None) -> nn.Module:
    """Wrap ``model`` (the parent step's model) into the recorded dynamic model."""
    from .net import rebuild_dynamic

    return rebuild_dynamic(model, plan, example, call="rebuild")


def dynamic(study, *, k: int = DEFAULTS["k"], confidence: float = DEFAULTS["confidence"],
            keep: float = DEFAULTS["keep"], at: str | None = DEFAULTS["at"],
            criterion: str | None = None, epochs: int = DEFAULTS["epochs"],
            samples: int | None = None, max_paths: int = DEFAULTS["max_paths"],
            finetune: int = DEFAULTS["finetune"], progress=False, stop=None) -> Step:
    """Make the current model input-adaptive (DyFiP; Sabih, Hannig & Teich, EuroMLSys 2022).

    A small branch after layer ``at`` predicts the top-``k`` classes; when its top-1
    probability reaches ``confidence`` the input exits early, otherwise the later layers run
    only the ``keep`` fraction of channels that the class-wise relevance (``criterion``,
    class-aware, default LRP) marks as important for the predicted class subset, through
    precomputed smaller layers (at most ``max_paths`` of them). ``criterion=None`` means
    ``"lrp"``, or ``"xmask"`` for a model taking named inputs (a dict / ``BatchEncoding``:
    ``input_ids``, ``attention_mask``...), whose branch averages the hidden states over the
    tokens the attention mask keeps and whose paths carry the mask. Records a ``dynamic`` step;
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
    from ... import criteria
    from .build import build_dynamic, check_dynamic_args

    call = "Study.dynamic"
    validate(call, confidence=confidence, keep=keep, samples=samples)
    from ...core.progress import make_progress

    make_progress(progress, call, "dynamic")   # checked here, not by the score it runs
    check_dynamic_args(k=k, confidence=confidence, keep=keep, epochs=epochs,
                       max_paths=max_paths, num_classes=study.data.num_classes, call=call)
    if criterion is None:
        criterion = default_criterion(study.timeline.example)
    cls = criteria.get(criterion, call)
    if not cls.class_aware:
        aware = [n for n in criteria.available() if criteria.get(n, call).class_aware]
        raise ConfigError.bad_value(call, "criterion", f"a class-aware criterion ({aware})",
                                    criterion)
    if not usable_criterion(criterion, study.timeline.example):
        aware = [n for n in criteria.available() if criteria.get(n, call).class_aware
                 and n not in _TENSOR_ONLY and "channel" in criteria.get(n, call).granularities]
        raise ConfigError.bad_value(
            call, "criterion", "a class-aware criterion that scores channels of a model with "
            f"named inputs ({aware}; {criterion!r} propagates relevance from one input tensor, "
            f"and the model takes {sorted(map(str, study.timeline.example))})", criterion)
    if is_dynamic(study.model):
        raise ConfigError(f"{call}: the current model is dynamic already; go back to a static "
                          "step (study.undo()) first.")
    timeline = study.timeline
    with timeline.transaction(call):
        start = time.perf_counter()
        try:
            scores = study.score(criterion, granularity="channel", samples=samples,
                                 progress=progress, stop=stop)
        except ModelError as exc:   # e.g. GPT-2's Conv1D projections: no channel groups
            raise ModelError(f"{call}: dynamic pruning slices channels after the branch "
                             f"point, and this model's channels cannot be scored: {exc}"
                             ) from exc
        if not scores.per_class:
            raise ModelError(f"{call}: criterion {criterion!r} gave no class-wise relevance.")
        net = build_dynamic(study.model, train_X=study.data.train.X,
                            train_y=study.data.train.y, per_class_scores=scores.per_class,
                            forward=study.forward, k=k, confidence=confidence, keep=keep,
                            at=at, epochs=epochs, seed=study.seed, max_paths=max_paths,
                            example=study.env.example, finetune=finetune, call=call)
        if stop is not None and stop.requested:   # after the branch's training: roll back
            raise StoppedError(f"{call}: stopped by the user; the study is unchanged.")
        from .net import dynamic_plan

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
