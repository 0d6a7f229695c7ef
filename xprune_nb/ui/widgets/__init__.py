"""Interactive panels (ipywidgets 8) over a :class:`~xprune_nb.Study`.

``xp.Panel(study)`` shows a metrics strip, a toolbar (Score, Preview, Prune, Retrain, Stop,
Undo, Export), a status line and one tab per section (Score, Prune, Retrain, Explain, History,
Export). It is a thin view: every button calls one method of the headless core.

Examples
--------
>>> import xprune_nb as xp
>>> study = xp.Study(xp.zoo.load("digits_cnn"), xp.datasets.load("digits"))
>>> panel = xp.Panel(study)          # display it in a notebook: last line of a cell
>>> panel.buttons["score"].click(); panel.wait()
True
>>> "Scored" in panel.status
True
"""

from __future__ import annotations

try:
    import ipywidgets  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without the widgets extra
    from ...core.errors import MissingDependencyError

    raise MissingDependencyError.for_package("ipywidgets", "xprune_nb.Panel",
                                             "widgets") from exc

from ._preview import PrunePreview, preview_prune
from .panel import Panel

__all__ = ["Panel", "PrunePreview", "preview_prune"]
