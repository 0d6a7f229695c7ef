"""Study methods for recipes and export (``recipe``, ``from_recipe``, ``export_script``)."""

from __future__ import annotations


class ExportMixin:
    """Recipe and export methods of :class:`~xprune_nb.study.Study`."""
