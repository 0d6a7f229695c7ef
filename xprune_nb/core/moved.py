"""Import paths that moved in the architecture pass keep working: ``xprune_nb.errors``,
``xprune_nb.zoo``, ``xprune_nb.compare``... (the paths docs/api.md lists).

A finder on ``sys.meta_path`` answers an old name with the module at its new home, so
``import xprune_nb.errors`` and ``xprune_nb.errors is xprune_nb.core.errors`` both hold, and a
study file that names ``xprune_nb.token_models`` still resolves. Only the names in ``MOVED``
are answered; the module imported is always the package's own, so nothing outside the package
can be reached this way.

>>> import xprune_nb.errors, xprune_nb.core.errors
>>> xprune_nb.errors is xprune_nb.core.errors
True
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

__all__ = ["MOVED", "install"]

#: old public path -> the module that holds it now
MOVED = {
    "xprune_nb.cli": "xprune_nb.ui.cli",
    "xprune_nb.compare": "xprune_nb.ui.compare",
    "xprune_nb.datasets": "xprune_nb.data.public",
    "xprune_nb.distributed": "xprune_nb.record.distributed",
    "xprune_nb.errors": "xprune_nb.core.errors",
    "xprune_nb.exercises": "xprune_nb.ui.exercises",
    "xprune_nb.io": "xprune_nb.record.io",
    "xprune_nb.magics": "xprune_nb.ui.magics",
    "xprune_nb.params": "xprune_nb.core.params",
    "xprune_nb.progress": "xprune_nb.core.progress",
    "xprune_nb.recipe": "xprune_nb.record.recipe",
    "xprune_nb.token_models": "xprune_nb.models.token_models",
    "xprune_nb.widgets": "xprune_nb.ui.widgets",
    "xprune_nb.zoo": "xprune_nb.models.zoo",
}


class _MovedLoader(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec):
        # the real module, not a copy: one module object under both names
        module = importlib.import_module(self.target)
        self._own_spec = module.__spec__
        return module

    def exec_module(self, module) -> None:
        # already executed under its new name; the import system has just set __spec__ to
        # the alias's, which would break the module's own relative imports: put it back
        module.__spec__ = self._own_spec


class _MovedFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        new = MOVED.get(fullname)
        if new is None:
            return None
        return importlib.util.spec_from_loader(fullname, _MovedLoader(new))


def install() -> None:
    """Put the finder on ``sys.meta_path`` once (``import xprune_nb`` calls this)."""
    if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
        sys.meta_path.append(_MovedFinder())
