"""``Study.pathways`` and ``Study.pathways_compare``: pick the step's model, the classes and the
inputs, then hand over to the flow (:mod:`.flow`) and the assembly (:mod:`.build`)."""

from __future__ import annotations

import math
from numbers import Integral

import torch

from ...core.errors import ConfigError, ModelError
from ...core.progress import StopSignal, make_progress
from .nodes import GRANULARITIES, check_supported, node_specs, original_ids

__all__ = ["pathways", "pathways_compare", "pick_classes", "MAX_DEFAULT_CLASSES"]

#: ``classes=None`` means every class up to this many; beyond, the caller must choose
MAX_DEFAULT_CLASSES = 10


def pick_classes(study, classes, call: str) -> list[int]:
    """``classes=``: an index, a name, or a list of them (``None``: every class when there are
    at most :data:`MAX_DEFAULT_CLASSES`)."""
    names = [str(n) for n in study.data.class_names]
    k = study.data.num_classes
    if classes is None:
        if k > MAX_DEFAULT_CLASSES:
            raise ConfigError(f"{call}(classes=None): the model has {k} classes; the flow is "
                              "computed per class, so choose a few, e.g. classes=[0, 3].")
        return list(range(k))
    items = [classes] if isinstance(classes, (str, Integral)) else classes
    if not isinstance(items, (list, tuple, range)) or not items:
        raise ConfigError.bad_value(call, "classes", f"class indices in [0, {k}) or names "
                                    f"from {names[:10]}", classes)
    out = []
    for c in items:
        if isinstance(c, str) and c in names:
            out.append(names.index(c))
        elif isinstance(c, Integral) and not isinstance(c, bool) and 0 <= c < k:
            out.append(int(c))
        else:
            raise ConfigError.bad_value(call, "classes", f"class indices in [0, {k}) or "
                                        f"names from {names[:10]}", classes)
    return list(dict.fromkeys(out))


def _check_options(call, *, samples, top, rule, epsilon, batch_size, granularity) -> None:
    from ...models.mechanisms.lrp import RULES

    for name, value in (("samples", samples), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
            raise ConfigError.bad_value(call, name, "a positive integer", value)
    if top is not None and (isinstance(top, bool) or not isinstance(top, Integral) or top < 1):
        raise ConfigError.bad_value(call, "top", "None or a positive integer (units kept per "
                                    "layer)", top)
    if rule not in RULES:
        raise ConfigError.unknown_name(call, "rule", RULES, rule)
    if (isinstance(epsilon, bool) or not isinstance(epsilon, (int, float))
            or not math.isfinite(epsilon) or epsilon <= 0):
        raise ConfigError.bad_value(call, "epsilon", "a finite number > 0", epsilon)
    if granularity is not None and granularity not in GRANULARITIES:
        raise ConfigError.unknown_name(call, "granularity", GRANULARITIES, granularity)


def _inputs(study, classes: list[int], inputs, samples: int, call: str
            ) -> dict[int, torch.Tensor]:
    from ...pruning.scoring import reference_indices
    from ..rows import pick_rows

    if inputs is not None:
        x, _ = pick_rows(study.data, inputs, samples, "test", seed=study.seed, call=call)
        return {c: x for c in classes}
    test = study.data.test
    out = {}
    for c in classes:
        if not bool((test.y == c).any()):
            raise ConfigError(f"{call}(classes=...): the test split has no example of class "
                              f"{c}; pass inputs= to explain it on other rows.")
        idx = reference_indices(test.y, samples, [c], seed=study.seed, call=call)
        out[c] = test.X[idx]
    return out


def _granularity(model, granularity):
    if granularity is not None:
        return granularity
    from ...models.mechanisms.attention.discovery import find_heads
    from .nodes import _converted

    return "head" if find_heads(_converted(model), single=True)[0] else "channel"


def _removed_at(study, index: int, granularity: str, layers: list[str], sizes: dict
                ) -> tuple[dict, dict]:
    """Original ids alive at ``index`` per layer, and the step that removed each other unit."""
    path = study.timeline.path(index)
    alive = {n: set(range(sizes[n])) for n in layers}
    removed: dict[str, dict[int, int]] = {n: {} for n in layers}
    ids = {n: list(range(sizes[n])) for n in layers}
    previous = 0
    for s in path[1:]:
        if len(s.structure) == previous:
            continue
        previous = len(s.structure)
        ids = original_ids(study, s.index, granularity, layers)
        for n in layers:
            now = set(ids[n] or [])
            for u in alive[n] - now:
                removed[n][u] = s.index
            alive[n] = now
    return ids, removed


def _why(study, index: int, granularity: str, ids: dict) -> dict:
    """A unit's score, rank and percentile under the scores computed at the step, if any."""
    scores = study.timeline.scores.get(index)
    if scores is None or scores.granularity != granularity:
        return {}
    frame = scores.to_frame()
    out = {}
    for row in frame.itertuples(index=False):
        layer_ids = ids.get(row.layer)
        if layer_ids is None or not 0 <= int(row.unit) < len(layer_ids):
            continue
        out[(row.layer, layer_ids[int(row.unit)])] = {
            "criterion": scores.criterion, "score": float(row.score),
            "rank": int(row.rank), "percentile": float(row.percentile)}
    return out


def pathways(study, step: int = -1, classes=None, inputs=None, top: int | None = None, *,
             granularity: str | None = None, samples: int = 8, rule: str = "epsilon",
             epsilon: float = 1e-6, batch_size: int = 32, progress=False,
             stop: StopSignal | None = None):
    """Which units carry each class's evidence, layer to layer: a relevance-flow map.

    Relevance of each chosen class's logit is propagated back by LRP (zennit) through the
    model of ``step``, layer by layer; the map's columns are the prunable layers (channels and
    neurons, or attention heads) and the output layer, its edges the relevance that flows from
    each unit to each unit of the next column (through skip connections too). Units are named
    by their index in the original model, so removed units appear (hollow) where they were.
    See ``docs/explain.md`` ("Pathways") for exactly what is computed.

    Parameters
    ----------
    step : int
        History step (default: the current one, ``-1``).
    classes : int, str or list, optional
        Classes to explain (indices or names); default every class (up to 10).
    inputs : tensor or list of test-row indices, optional
        Rows explained for every class; default ``samples`` test rows of each class.
    top : int, optional
        Keep only the ``top`` most relevant units of each layer (and their edges).
    granularity : {"channel", "head"}, optional
        Default: heads when the model has attention heads, else channels.
    samples, rule, epsilon, batch_size
        Rows per class; the LRP rule of every Linear/Conv layer and its stabiliser.
    progress, stop
        The progress/stop protocol (one tick per batch and class).

    Returns
    -------
    Pathways
        ``to_frame()`` -> ``(nodes, edges)``; ``plot()``; ``conservation()``;
        ``save_html(path)``.

    Examples
    --------
    >>> import xprune_nb as xp
    >>> study = xp.Study(xp.zoo.load("toy_mlp"), xp.datasets.load("moons"))
    >>> p = study.pathways(classes=[1])
    >>> nodes, edges = p.to_frame()
    >>> sorted(nodes.columns)[:3], p.conserved
    (['class', 'kept', 'layer'], True)
    """
    call = "Study.pathways"
    _check_options(call, samples=samples, top=top, rule=rule, epsilon=epsilon,
                   batch_size=batch_size, granularity=granularity)
    index = study.timeline.index(step, call, "step")
    picked = pick_classes(study, classes, call)
    rows = _inputs(study, picked, inputs, samples, call)
    tick = make_progress(progress, call, "pathways", stop)
    model = study.model if index == study.current else study.model_at(index)
    if type(model).__name__ == "DynamicNet":
        raise ModelError(f"{call}: step {index} is dynamic (input-adaptive), so its units "
                         "change per input; map the static step before it.")
    check_supported(model, call)
    granularity = _granularity(model, granularity)
    return _build(study, index, model, granularity, picked, rows, top=top, rule=rule,
                  epsilon=epsilon, batch_size=batch_size, tick=tick, call=call)


def _build(study, index, model, granularity, classes, rows, *, top, rule, epsilon, batch_size,
           tick, call):
    from .build import assemble
    from .flow import compute_flow

    specs = node_specs(model, study.env, granularity, call)
    original = node_specs(study.original, study.env, granularity, call)
    sizes = {s.name: s.units for s in original}
    for s in specs:   # a layer the original lacks (never expected) keeps its own size
        sizes.setdefault(s.name, s.units)
    ids, removed = _removed_at(study, index, granularity, list(sizes), sizes)
    try:
        flows = compute_flow(model, study.forward, specs, rows, rule=rule, epsilon=epsilon,
                             batch_size=batch_size, tick=tick, call=call)
    except RuntimeError as exc:
        if "runs more than once" in str(exc):
            raise ModelError(f"{call}: {exc}.") from exc
        raise
    from ...data.batch import batch_size as rows_of

    inputs = rows_of(next(iter(rows.values())))
    return assemble(step=index, granularity=granularity, specs=specs, flows=flows, ids=ids,
                    sizes=sizes, removed_at=removed, class_names=list(study.data.class_names),
                    inputs=inputs, rule=rule, why=_why(study, index, granularity, ids), top=top,
                    module_order=[n for n, _ in study.original.named_modules()])


def pathways_compare(study, before: int = 0, after: int = -1, classes=None, *, inputs=None,
                     granularity: str | None = None, samples: int = 8, rule: str = "epsilon",
                     epsilon: float = 1e-6, progress=False, stop: StopSignal | None = None):
    """Where each class's evidence went between two steps: the paths pruning cut and the
    units that took them up.

    Both maps are computed on the same inputs with units named by their original index. Per
    class: the share of the ``before`` flow that went through units removed by ``after``, the
    ``after`` logit as a fraction of the ``before`` one, the kept units whose share of the
    relevance grew most, whether retraining happened in between and whether the evidence was
    re-routed, in one plain sentence.

    Returns a :class:`~xprune_nb.explain.pathways.PathwaysComparison` (``to_frame()``,
    ``paths()``, ``plot()``, ``sentences()``).

    Examples
    --------
    >>> import xprune_nb as xp
    >>> study = xp.Study(xp.zoo.load("toy_mlp"), xp.datasets.load("moons"))
    >>> _ = study.score("lrp"); _ = study.prune(0.3)
    >>> comp = study.pathways_compare(0, -1, classes=[0])
    >>> bool(0.0 <= comp.to_frame()["cut_share"].iloc[0] <= 1.0)
    True
    """
    from ...data.batch import batch_size as rows_of
    from .compare import compare_pathways

    call = "Study.pathways_compare"
    _check_options(call, samples=samples, top=None, rule=rule, epsilon=epsilon,
                   batch_size=32, granularity=granularity)
    b = study.timeline.index(before, call, "before")
    a = study.timeline.index(after, call, "after")
    picked = pick_classes(study, classes, call)
    rows = _inputs(study, picked, inputs, samples, call)
    tick = make_progress(progress, call, "pathways", stop)
    models = {i: (study.model if i == study.current else study.model_at(i)) for i in {a, b}}
    for m in models.values():
        if type(m).__name__ == "DynamicNet":
            raise ModelError(f"{call}: a dynamic (input-adaptive) step cannot be mapped; "
                             "compare the static steps around it.")
        check_supported(m, call)
    granularity = _granularity(models[b], granularity)

    def half(offset):
        if tick is None:
            return None
        return lambda d, t: tick(offset + d, 2 * t)

    maps = []
    for index, off in ((b, 0), (a, 1)):
        total = sum((rows_of(x) + 31) // 32 for x in rows.values())
        maps.append(_build(study, index, models[index], granularity, picked, rows, top=None,
                           rule=rule, epsilon=epsilon, batch_size=32,
                           tick=half(off * total), call=call))
    retrained = any(s.kind == "retrain" for s in study.timeline.path(a)
                    if not study.timeline.is_ancestor(s.index, b))
    return compare_pathways(maps[0], maps[1], retrained=retrained,
                            accuracy_before=study.history[b].per_class_accuracy,
                            accuracy_after=study.history[a].per_class_accuracy)
