"""Scoring one model's units with one criterion: the service behind ``Study.score``.

The unit kind says which layers the criterion's hooks reach and how per-layer scores combine into
one score per group; the criterion computes the importances; this module checks that the model
was left untouched and that every score is finite, and wraps the result in :class:`Scores`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import nn

from ..core.errors import ModelError, NotScoredError
from ..core.scores import Scores
from ..criteria import ScoringContext
from ..models.mechanisms.model_tools import eval_mode
from .units import ModelEnv, UnitKind

__all__ = ["score_units", "fingerprint", "reference_indices", "reference_sample",
           "criterion_and_kind", "evidence_for", "reference_for"]


def criterion_and_kind(criterion: str, granularity: str, call: str):
    """The criterion class and unit kind named, checked to work together (one message shape
    for ``Study.score``, ``sensitivity`` and ``auto_prune``)."""
    from .. import criteria
    from ..core.errors import ConfigError
    from . import units

    cls = criteria.get(criterion, call)
    kind = units.get(granularity, call)
    if kind.name not in cls.granularities and kind.score_as not in cls.granularities:
        raise ConfigError.bad_value(call, "granularity",
                                    f"one of {list(cls.granularities)} for {criterion!r}",
                                    granularity)
    return cls, kind


def reference_indices(y: torch.Tensor, samples: int | None, classes: list[int] | None, *,
                      seed: int, call: str) -> torch.Tensor:
    """``samples`` training rows in total (default: 256, or all available), stratified by class
    and drawn only from ``classes`` when given; deterministic under ``seed``."""
    from ..data import stratified_indices

    if samples is None:
        pool = y if classes is None else y[torch.isin(y, torch.tensor(classes))]
        samples = min(256, len(pool))
    return stratified_indices(y, samples, seed=seed, classes=classes, call=call)


def reference_sample(data, samples: int | None, classes: list[int] | None, *, seed: int,
                     call: str, with_groups: bool = False):
    """``(inputs, labels)`` of a score's reference examples: ``samples`` in total (default: the
    study's ``score_samples``, or all available when fewer), stratified by class from the
    training split, only from ``classes`` when given; deterministic under ``seed``. A user's
    loader or dataset has only the sampled items read. ``with_groups`` adds the examples'
    sensitive-group codes (``None`` without groups)."""
    from ..data import draw
    from ..data.convert import DEFAULT_SCORE_SAMPLES

    if samples is None:
        default = data.sampling.get("score_samples", DEFAULT_SCORE_SAMPLES)
        return draw(data.train, default, seed=seed, classes=classes, clip=True, call=call,
                    param="score_samples", with_groups=with_groups)
    return draw(data.train, samples, seed=seed, classes=classes, call=call,
                with_groups=with_groups)


def reference_for(scorer, data, samples: int | None, classes: list[int] | None, *, seed: int,
                  call: str):
    """``(inputs, labels, extras)``: the reference sample of :func:`reference_sample` and what
    ``scorer`` reads besides (``extras`` are keyword arguments of :func:`score_units`): the
    evidence masks (:func:`evidence_for`) and the examples' sensitive groups. A criterion that
    needs groups (``needs_groups``, e.g. ``group_relevance``) is refused on a study without
    them, before anything is drawn."""
    names = getattr(data, "group_names", None) or None
    if getattr(scorer, "needs_groups", False) and not names:
        from ..core.errors import ConfigError

        raise ConfigError(f"{call}: criterion {scorer.name!r} scores units by how their "
                          "relevance differs between sensitive groups, and this study has no "
                          "groups; give Study(..., groups=...) or (X, y, groups) splits (see "
                          "docs/groups.md), or use another criterion.")
    inputs, targets, groups = reference_sample(data, samples, classes, seed=seed, call=call,
                                               with_groups=True)
    return inputs, targets, {"evidence": evidence_for(scorer, data, inputs, call),
                             "groups": groups, "group_names": names}


def evidence_for(scorer, data, inputs, call: str) -> torch.Tensor | None:
    """The evidence masks ``(N, H, W)`` of the reference ``inputs`` (rows of the training
    split) for a criterion that reads them (``scorer.wants_evidence``: e.g. ``attention`` with
    ``relevance="evidence"``), from the data's boxes; ``None`` for every other criterion."""
    if not getattr(scorer, "wants_evidence", False):
        return None
    from ..core.errors import ConfigError

    name = (getattr(data, "source", None) or {}).get("name")
    if name != "digits_boxes":
        raise ConfigError.bad_value(call, "relevance", "'evidence' only on data with evidence "
                                    "boxes (digits_boxes)", name or "other data")
    from ..data.ground_truth import boxes
    from ..explain.grounding import _inside

    # the sample is drawn by content (tensors or a loader alike): find each row by its bytes
    train = data.train.X
    rows = {r.numpy().tobytes(): i for i, r in enumerate(train.reshape(len(train), -1))}
    idx = [rows.get(r.numpy().tobytes()) for r in inputs.reshape(len(inputs), -1)]
    if any(i is None for i in idx):
        raise ConfigError.bad_value(call, "relevance", "'evidence' on reference examples of "
                                    "the training split", "examples not in it")
    box = boxes(data, "train", rows=idx)
    return torch.from_numpy(_inside(box, tuple(train.shape[-2:])))


def fingerprint(model: nn.Module) -> tuple:
    """Names, shapes and exact sums of every tensor of ``model``'s state (cheap change check)."""
    # summed in float64 without a float64 copy of each tensor (that copy was most of the cost)
    return tuple((k, tuple(v.shape), float(v.sum(dtype=torch.float64)) if v.is_floating_point()
                  else int(v.sum())) for k, v in model.state_dict().items())


def score_units(model: nn.Module, env: ModelEnv, kind: UnitKind, scorer, *,
                inputs: torch.Tensor, targets: torch.Tensor, classes: list[int] | None,
                num_classes: int, seed: int, batch_size: int, prune_output: bool,
                progress: Callable[[int, int], None] | None, step: int, call: str,
                options: dict, evidence: torch.Tensor | None = None,
                groups: torch.Tensor | None = None, group_names: list[str] | None = None
                ) -> Scores:
    """Score every unit of ``kind`` in ``model`` with ``scorer`` (a Criterion instance);
    ``evidence``, ``groups`` and ``group_names`` reach the criterion in its context."""
    start = time.perf_counter()
    if type(model).__name__ == "DynamicNet":
        raise ModelError(f"{call}: the current model is dynamic (input-adaptive); go back to "
                         "the static step before it (study.undo()) to score and prune.")
    units = kind.find(model, env, prune_output=prune_output)
    if not units.groups:
        raise ModelError(kind.nothing_found(units, call))
    ctx = ScoringContext(model=model, granularity=kind.score_as, layers=units.layers,
                         inputs=inputs, targets=targets, classes=classes,
                         num_classes=num_classes, forward=env.forward, seed=seed,
                         batch_size=batch_size, progress=progress, units=units,
                         evidence=evidence, groups=groups, group_names=group_names)
    criterion = type(scorer)
    # a criterion that only reads weights (declared on its own class, not inherited) needs no
    # change check; every other one is checked before and after
    checked = not vars(criterion).get("read_only", False)
    before = fingerprint(model) if checked else None
    with eval_mode(model):
        raw = getattr(scorer, f"{kind.score_as}_scores")(ctx)
        per_class_raw = None
        if criterion.class_aware:
            per_class_fn = getattr(scorer, f"per_class_{kind.score_as}_scores", None)
            per_class_raw = per_class_fn(ctx) if per_class_fn is not None else None
    if checked and fingerprint(model) != before:   # a criterion must never change the model
        raise ModelError(f"{call}: criterion {criterion.name!r} changed the model's weights or "
                         "buffers (e.g. a forward() that updates a buffer); the study is "
                         "unchanged. Make the model's eval-mode forward side-effect free.")
    errors_raw = None
    if getattr(criterion, "standard_errors_", None) is not None:
        try:
            errors_raw = scorer.standard_errors_
        except NotScoredError:
            errors_raw = None
    # scores live on the CPU whatever device the model computes on (rankings, files, plots)
    raw, per_class_raw, errors_raw = (_cpu(r) for r in (raw, per_class_raw, errors_raw))
    try:
        values = kind.combine(units, raw)
        per_class = kind.combine(units, per_class_raw) if per_class_raw else None
        # standard errors of a mean over coupled layers: a conservative mean of errors
        errors = kind.combine(units, errors_raw) if errors_raw else None
    except KeyError as exc:
        raise ModelError(f"{call}: criterion {criterion.name!r} returned no scores for "
                         f"{exc.args[0]!r}.") from None
    for key, v in values.items():
        if not torch.isfinite(v).all():
            raise ModelError(f"{call}: criterion {criterion.name!r} gave NaN or infinite scores "
                             f"for {key!r}; check the model's weights and the reference data.")
    scores = Scores(criterion=criterion.name, granularity=kind.name, values=values,
                    groups=dict(units.groups) if kind.structural else {}, step=step,
                    per_class=per_class, options=options, skipped=dict(units.skipped),
                    errors=errors, seconds=time.perf_counter() - start)
    scores._units = (model, units)   # reused by the prune that follows on this same model
    return scores


def _cpu(found):
    """A criterion's ``{name: tensor}`` (or None) with every tensor on the CPU."""
    if not found:
        return found
    return {k: v.detach().cpu() if isinstance(v, torch.Tensor) else v for k, v in found.items()}
