"""xprune_nb: explainable pruning of PyTorch models, right inside Jupyter.

Score every prunable unit with a criterion (magnitude, gradient, Taylor, activation, LRP,
conductance, Shapley), prune (masks or real structured removal), retrain, explain what changed,
and export the result as a script.

Examples
--------
>>> import xprune_nb as xp
>>> study = xp.Study(xp.zoo.load("digits_cnn"), xp.datasets.load("digits"))  # doctest: +SKIP
>>> study.score("taylor"); study.prune(0.3); study.evaluate()                  # doctest: +SKIP

Heavy optional packages (captum, shap, zennit, ipywidgets, torch-pruning) are imported only
when a feature needs them.
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import (
    ConfigError,
    DataError,
    MissingDependencyError,
    ModelError,
    NotScoredError,
    PruneError,
    StoppedError,
    StudyBusyError,
    StudyFileError,
    XPruneError,
)
from .history import History, Step
from .metrics import Metrics
from .scores import Scores
from .study import Study
from .training import Callback, StopSignal

__version__ = "0.1.0"

__all__ = [
    "Study", "Scores", "Step", "History", "Metrics", "Callback", "StopSignal",
    "XPruneError", "ConfigError", "DataError", "ModelError", "PruneError", "NotScoredError",
    "StudyFileError", "StoppedError", "StudyBusyError", "MissingDependencyError",
    "data", "datasets", "zoo", "criteria", "explain", "Panel", "Recipe", "load_pruned",
    "compare_techniques", "pareto_plot",
    "__version__",
]

_LAZY_MODULES = {"data", "datasets", "zoo", "criteria", "explain"}
_LAZY_ATTRS = {
    "Panel": ("xprune_nb.widgets", "Panel"),
    "Recipe": ("xprune_nb.recipe", "Recipe"),
    "load_pruned": ("xprune_nb.io.checkpoint", "load_pruned"),
    "compare_techniques": ("xprune_nb.compare", "compare_techniques"),
    "pareto_plot": ("xprune_nb.compare", "pareto_plot"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY_MODULES:
        return importlib.import_module(f"xprune_nb.{name}")
    if name in _LAZY_ATTRS:
        module, attr = _LAZY_ATTRS[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'xprune_nb' has no attribute {name!r}")


def load_ipython_extension(ipython) -> None:
    """``%load_ext xprune_nb``: register the ``%xprune`` magics."""
    from .magics import load_ipython_extension as _load

    _load(ipython)
