"""Pruning: unit selection, unstructured masks, structured removal and schedules.

``groups`` (torch-pruning's dependency graph) is imported only when structured pruning is used,
so that ``import xprune_nb`` stays fast.
"""

from .schedules import SCHEDULES, step_fractions
from .selection import SCOPES, select_units

__all__ = ["SCOPES", "SCHEDULES", "select_units", "step_fractions"]
