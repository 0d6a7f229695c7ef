"""What the checks read from a student's study, in one place: steps, their kind, metrics,
removed units and criterion. Only the public Study API is used (``history``, ``current``,
``scores_at``, ``model_at``, ``why``), and nothing here changes the study."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PruneRecord:
    """One prune step as the checks see it."""

    index: int
    parent: int
    criterion: str
    granularity: str
    amount: float
    layer_amounts: dict
    removed: dict  # group -> number of units removed (non-empty groups only)
    fractions: dict  # group -> fraction of that group's units removed
    accuracy: float
    parent_accuracy: float


def steps(study) -> list:
    return list(study.history)


def step(study, index: int):
    return study.history[index]


def accuracy(study, index: int) -> float:
    return float(study.history[index].metrics["accuracy"])


def params(study, index: int) -> int:
    return int(study.history[index].metrics["params"])


def nonzero_params(study, index: int) -> int:
    m = study.history[index].metrics
    return int(m.get("nonzero_params", m["params"]))


def path(study, index: int) -> list:
    """The steps from the original model to ``index``, in order."""
    out = []
    while index is not None:
        s = study.history[index]
        out.append(s)
        index = s.parent
    return out[::-1]


def group_sizes(study, index: int) -> dict[str, int]:
    """Units per channel group of the model at step ``index`` (from the scores made there)."""
    scores = study.scores_at(index)
    if scores is None or scores.granularity != "channel":
        return {}
    return {k: int(v.numel()) for k, v in scores.values.items()}


def prune_records(study) -> list[PruneRecord]:
    out = []
    for s in study.history:
        if s.kind != "prune" or s.parent is None:
            continue
        c = s.config
        removed = {k: len(v) for k, v in s.removed.items() if len(v)}
        sizes = group_sizes(study, s.parent)
        fractions = {k: n / sizes[k] for k, n in removed.items() if sizes.get(k)}
        out.append(PruneRecord(
            index=s.index, parent=s.parent, criterion=str(c.get("criterion", "?")),
            granularity=str(c.get("granularity", "?")), amount=float(c.get("amount", 0.0)),
            layer_amounts=dict(c.get("layer_amounts") or {}), removed=removed,
            fractions=fractions, accuracy=accuracy(study, s.index),
            parent_accuracy=accuracy(study, s.parent)))
    return out


def children(study, index: int) -> list:
    return [s for s in study.history if s.parent == index]


def per_class_accuracy(study, index: int) -> list[float]:
    return [float(a) for a in study.history[index].per_class_accuracy]


def class_names(study) -> list[str]:
    names = getattr(study.data, "class_names", None)
    return [str(n) for n in names] if names else []
