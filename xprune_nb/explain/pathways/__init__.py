"""Relevance-flow maps: which units carry each class's evidence, layer to layer, and where it
went after pruning (``Study.pathways`` and ``Study.pathways_compare``).

Examples
--------
>>> import xprune_nb as xp
>>> study = xp.Study(xp.zoo.load("toy_mlp"), xp.datasets.load("moons"))
>>> study.pathways(classes=[0]).layers[-1]
'head'
"""

from .compare import PathwaysComparison, compare_pathways
from .flow import NodeSpec, compute_flow
from .result import Pathways

__all__ = ["Pathways", "PathwaysComparison", "compare_pathways", "compute_flow", "NodeSpec"]
