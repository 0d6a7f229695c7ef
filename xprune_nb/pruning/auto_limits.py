"""The accuracy limits of ``auto_prune``, judged on the validation split: overall, per class
and per sensitive group (``max_group_drop``, Hooker et al. 2020: pruning costs some groups far
more than the average); the group limit is also reported on the test split."""

from __future__ import annotations

import math

import torch

from ..core.errors import ConfigError
from ..data.groups import per_group_accuracy

__all__ = ["val_state", "violations", "check_group_limit", "group_sentence", "groups_on_test"]


def _state(study, model, name: str) -> tuple[float, torch.Tensor, dict[str, float]]:
    from ..measure.training import evaluate_split

    split = study.data.split(name)
    acc, _, preds, y = evaluate_split(model, split, study.forward, return_predictions=True,
                                      name=name)
    k = study.data.num_classes
    counts = torch.bincount(y, minlength=k).double()
    hits = torch.zeros(k, dtype=torch.float64).index_add_(0, y, (preds == y).double())
    per_class = hits / counts.clamp(min=1)
    per_class[counts == 0] = float("nan")
    groups = per_group_accuracy(preds, y, getattr(split, "groups", None),
                                getattr(study.data, "group_names", None))
    return acc, per_class, groups


def val_state(study, model) -> tuple[float, torch.Tensor, dict[str, float]]:
    """Validation accuracy, per-class accuracy (NaN for an absent class) and per-group
    accuracy (``{}`` without groups) of ``model``."""
    return _state(study, model, "val")


def check_group_limit(study, call: str, max_group_drop) -> None:
    """A group limit needs groups: refused, before anything changes, for a study without."""
    if max_group_drop is not None and not getattr(study.data, "group_names", None):
        raise ConfigError.bad_value(call, "max_group_drop", "None for a study without "
                                    "sensitive groups (give Study(..., groups=...), see "
                                    "docs/groups.md)", max_group_drop)


def _worst_drop(before: dict[str, float], after: dict[str, float]) -> tuple[float, str]:
    drops = [(before[g] - after[g], g) for g in before
             if g in after and not math.isnan(before[g]) and not math.isnan(after[g])]
    return max(drops) if drops else (0.0, "")


def violations(study, model, ref, limits, measure) -> tuple[list[str], dict]:
    """The limits ``model`` breaks against ``ref`` (:func:`val_state` of the start), and the
    numbers judged (validation)."""
    acc0, per0, groups0 = ref
    acc, per, groups = val_state(study, model)
    drop = acc0 - acc
    both = ~torch.isnan(per0) & ~torch.isnan(per)
    class_drop = float((per0 - per)[both].max()) if both.any() else 0.0
    drift = measure._drift(model) if limits["max_drift"] is not None else math.nan
    values = {"accuracy": acc, "accuracy_drop": drop, "class_drop": class_drop, "drift": drift}
    broken = []
    if groups0:
        values["group_drop"], worst = _worst_drop(groups0, groups)
        values["worst_group_accuracy"] = min(groups.values())
    if limits.get("grounding") is not None:
        wrong, found = limits["grounding"].judge(model)
        values.update(found)
        broken += [wrong] if wrong else []
    if limits["max_accuracy_drop"] is not None and drop > limits["max_accuracy_drop"]:
        broken.append(f"accuracy drop {drop:.4f} > max_accuracy_drop="
                      f"{limits['max_accuracy_drop']}")
    if limits["max_class_drop"] is not None and class_drop > limits["max_class_drop"]:
        broken.append(f"worst class drop {class_drop:.4f} > max_class_drop="
                      f"{limits['max_class_drop']}")
    if limits.get("max_group_drop") is not None and values["group_drop"] > limits[
            "max_group_drop"]:
        broken.append(f"group {worst!r} drop {values['group_drop']:.4f} > max_group_drop="
                      f"{limits['max_group_drop']}")
    if limits["max_drift"] is not None and not drift <= limits["max_drift"]:
        broken.append(f"drift {drift:.4f} > max_drift={limits['max_drift']}")
    return broken, values


def groups_on_test(study, model) -> dict[str, float]:
    """Per-group accuracy of ``model`` on the test split (what the group limit is reported on)."""
    return _state(study, model, "test")[2]


def group_sentence(before: dict[str, float], after: dict[str, float]) -> str:
    """The largest per-group accuracy drop on the test split, in words."""
    drop, worst = _worst_drop(before, after)
    if not worst:
        return "group accuracy on test: n/a (no group measured)"
    return (f"on test, the group that lost most is {worst!r} ({before[worst]:.4f} -> "
            f"{after[worst]:.4f}, drop {drop:.4f}); worst group accuracy "
            f"{min(after.values()):.4f}")
