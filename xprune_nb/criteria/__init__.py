"""Importance criteria and their registry.

Criteria are looked up by name, so widgets, recipes and the command line can name them. Built-in
criteria are registered as import paths and imported on first use, so that heavy optional
dependencies (captum, zennit) load only for the criteria that need them. Register your own with
:func:`register`.

Examples
--------
>>> from xprune_nb import criteria
>>> "taylor" in criteria.available()
True
>>> criteria.create("magnitude", p=2)
MagnitudeCriterion(p=2)
"""

from __future__ import annotations

import importlib

from ..core.errors import ConfigError
from .base import GRANULARITIES, Criterion, ScoringContext

__all__ = ["Criterion", "ScoringContext", "GRANULARITIES", "register", "get", "create",
           "available"]

_REGISTRY: dict[str, type[Criterion] | str] = {
    "magnitude": "xprune_nb.criteria.magnitude:MagnitudeCriterion",
    "random": "xprune_nb.criteria.baseline:RandomCriterion",
    "gradient": "xprune_nb.criteria.gradient:GradientCriterion",
    "taylor": "xprune_nb.criteria.gradient:TaylorCriterion",
    "activation": "xprune_nb.criteria.activation:ActivationCriterion",
    "lrp": "xprune_nb.criteria.lrp:LRPCriterion",
    "conductance": "xprune_nb.criteria.conductance:ConductanceCriterion",
    "shapley": "xprune_nb.criteria.shapley:ShapleyCriterion",
    "attention": "xprune_nb.criteria.attention:AttentionCriterion",
    "skip": "xprune_nb.criteria.skip:SkipCriterion",
    "xmask": "xprune_nb.criteria.xmask:XMaskCriterion",
    "group_relevance": "xprune_nb.criteria.group_relevance:GroupRelevanceCriterion",
}


def register(cls: type[Criterion], name: str | None = None, *, replace: bool = False
             ) -> type[Criterion]:
    """Make a :class:`Criterion` subclass available by name (usable as a class decorator)."""
    key = name or cls.name
    if not key or not key.isidentifier():
        raise ConfigError.bad_value("criteria.register", "name", "a Python identifier", key)
    if key in _REGISTRY and not replace:
        raise ConfigError(
            f"criteria.register(name=...): {key!r} is already registered; pass replace=True "
            "to override it."
        )
    _REGISTRY[key] = cls
    return cls


def available() -> list[str]:
    """Names of every registered criterion."""
    return sorted(_REGISTRY)


def get(name: str, call: str = "Study.score") -> type[Criterion]:
    """The criterion class registered as ``name``."""
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ConfigError.unknown_name(call, "criterion", available(), name)
    entry = _REGISTRY[name]
    if isinstance(entry, str):
        module, _, attr = entry.partition(":")
        entry = getattr(importlib.import_module(module), attr)
        _REGISTRY[name] = entry
    return entry


def create(name: str, call: str = "Study.score", **options) -> Criterion:
    """Instantiate the criterion ``name`` with ``options`` (validated)."""
    return get(name, call).for_call(call, **options)
