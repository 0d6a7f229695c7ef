"""Layers 3 and 4: the shared mechanisms on ``nn.Module`` s, and the model definitions.

``models.mechanisms`` (layer 3) holds what criteria, pruning, explanations and the timeline all
use on a model: weight masks, attention discovery, head gates and surgery, SDPA attention, block
gates and removal, recurrent slices, BatchNorm recalibration, LRP rules, the device, and
helpers that look at a user's model. The definitions (layer 4) are the zoo's classes
(``definitions``, ``token_models``, ``case_study``), the zoo itself (``zoo``) and its shipped
weights (``weights/``).

``xprune_nb.models`` is also the public home of the zoo's classes:

>>> from xprune_nb.models import ToyMLP
>>> ToyMLP().__class__.__name__
'ToyMLP'
"""

from . import definitions as _definitions
from .definitions import *  # noqa: F403 - the zoo's classes are public here, as before

__all__ = list(_definitions.__all__)
