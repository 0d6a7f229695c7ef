"""Recipes: a study's steps, model, data and seed as a file anyone can rerun.

* :mod:`~xprune_nb.record.recipe.core` -- :class:`Recipe` and :class:`StepConfig` (plain data,
  files);
* :mod:`~xprune_nb.record.recipe.schema` -- the allowed keys and value checks;
* :mod:`~xprune_nb.record.recipe.from_study` -- a study's history as a recipe;
* :mod:`~xprune_nb.record.recipe.replay` -- build a recipe's model and data, replay its steps.

A recipe is data people share: replaying one builds zoo models and bundled datasets by itself,
and runs nothing else (factories, importable classes, model source code) unless
``trust_source=True`` (``xprune-nb run --trust``).

Examples
--------
>>> from xprune_nb.record.recipe import Recipe
>>> r = Recipe.from_dict({"model": {"zoo": "toy_mlp"}, "data": {"dataset": "moons"},
...                       "steps": [{"score": {"criterion": "magnitude"}},
...                                 {"prune": {"amount": 0.5}}]})
>>> [s.action for s in r.steps]
['score', 'prune']
"""

from __future__ import annotations

from .core import ACTIONS, FORMAT, VERSION, Recipe, StepConfig
from .schema import is_import_path

__all__ = ["Recipe", "StepConfig", "FORMAT", "VERSION", "ACTIONS", "is_import_path"]
