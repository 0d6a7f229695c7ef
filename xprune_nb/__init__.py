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

from .core.errors import (
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
from .core.history import History, Step
from .core.moved import MOVED as _MOVED
from .core.moved import install as _install_moved
from .core.scores import Scores
from .core.version import __version__
from .measure.metrics import Metrics
from .measure.training import Callback, StopSignal
from .study.facade import Study

_install_moved()

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
    "Panel": ("xprune_nb.ui.widgets", "Panel"),
    "Recipe": ("xprune_nb.record.recipe", "Recipe"),
    "load_pruned": ("xprune_nb.record.io.checkpoint", "load_pruned"),
    "compare_techniques": ("xprune_nb.ui.compare", "compare_techniques"),
    "pareto_plot": ("xprune_nb.ui.compare", "pareto_plot"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY_MODULES:
        return importlib.import_module(f"xprune_nb.{name}")
    if name in _LAZY_ATTRS:
        module, attr = _LAZY_ATTRS[name]
        return getattr(importlib.import_module(module), attr)
    if f"xprune_nb.{name}" in _MOVED:
        # ``xp.errors``, ``xp.params``... as before the layer packages (core/moved.py)
        return importlib.import_module(f"xprune_nb.{name}")
    raise AttributeError(f"module 'xprune_nb' has no attribute {name!r}")


def load_ipython_extension(ipython) -> None:
    """``%load_ext xprune_nb``: register the ``%xprune`` magics."""
    from .ui.magics import load_ipython_extension as _load

    _load(ipython)
