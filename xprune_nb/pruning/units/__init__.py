"""Unit kinds: what can be pruned, one module per kind, looked up by name.

Examples
--------
>>> from xprune_nb.pruning import units
>>> sorted(units.available())
['block', 'channel', 'head', 'head_mask', 'recurrent', 'weight']
>>> units.get("channel", "Study.score").structural
True
"""

from __future__ import annotations

from ...core.errors import ConfigError
from .base import ModelEnv, UnitKind, Units

__all__ = ["ModelEnv", "UnitKind", "Units", "register", "get", "available", "present",
           "scorable_by", "prunable_table", "study_prunable"]

_REGISTRY: dict[str, type[UnitKind]] = {}


def register(kind: type[UnitKind]) -> type[UnitKind]:
    """Register a unit kind under its ``name`` (usable as a class decorator)."""
    if not kind.name:
        raise ValueError(f"{kind.__name__} has no name")
    _REGISTRY[kind.name] = kind
    return kind


def available() -> list[str]:
    """Names of every registered unit kind (the valid ``granularity=`` values)."""
    return list(_REGISTRY)


def get(name: object, call: str, param: str = "granularity") -> UnitKind:
    """The unit kind called ``name``; an unknown name lists the valid ones."""
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ConfigError.unknown_name(call, param, _REGISTRY, name)
    return _REGISTRY[name]()


def present(model, env: ModelEnv) -> list[str]:
    """The unit kinds ``model`` has at least one prunable unit of (e.g. no ``head`` for a CNN)."""
    found = []
    for name, kind in _REGISTRY.items():
        try:
            if kind().offered(model, env):
                found.append(name)
        except Exception:  # noqa: BLE001 - a kind that cannot analyse this model: not offered
            continue
    return found


def scorable_by(criterion_cls, kinds: list[str]) -> list[str]:
    """Those of ``kinds`` the criterion can score (by name, or by the method a kind uses)."""
    return [k for k in kinds if k in criterion_cls.granularities
            or _REGISTRY[k].score_as in criterion_cls.granularities]


def study_prunable(study, granularity: str = "channel"):
    """Table of the prunable units of the study's current model (and what can't go, and why).

    Examples
    --------
    >>> import xprune_nb as xp
    >>> study = xp.Study(xp.zoo.load("toy_mlp"), xp.datasets.load("moons"))
    >>> "group" in study.prunable().columns
    True
    """
    kind = get(granularity, "Study.prunable")
    return prunable_table(kind.find(study.model, study.env))


def prunable_table(units: Units):
    """One row per prunable group (with its units and layers) and per layer that can't go,
    with why: what ``Study.prunable()`` shows."""
    import pandas as pd

    rows = [{"group": k, "units": units.sizes.get(k), "layers": ", ".join(layers),
             "prunable": True, "reason": ""} for k, layers in units.groups.items()]
    rows += [{"group": n, "units": None, "layers": n, "prunable": False, "reason": why}
             for n, why in units.skipped.items()]
    frame = pd.DataFrame(rows, columns=["group", "units", "layers", "prunable", "reason"])
    frame["units"] = frame["units"].astype("Int64")   # counts, with <NA> where not prunable
    return frame


# one line per kind
from .block import BlockUnits  # noqa: E402
from .channel import ChannelUnits  # noqa: E402
from .head import HeadUnits, MaskedHeadUnits  # noqa: E402
from .recurrent import RecurrentUnits  # noqa: E402
from .weight import WeightUnits  # noqa: E402

register(WeightUnits)
register(ChannelUnits)
register(HeadUnits)
register(MaskedHeadUnits)
register(BlockUnits)
register(RecurrentUnits)
