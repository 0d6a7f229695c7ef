"""``xprune_nb.datasets``: the bundled datasets and the data types, as users type them.

The data layer lives in :mod:`xprune_nb.data`; this module is the public path of its bundled
datasets (``xp.datasets.load("digits")``) and of :class:`Split` / :class:`DataBundle`.

Examples
--------
>>> import xprune_nb.datasets as ds
>>> data = ds.load("digits")
>>> data.input_shape, data.num_classes, len(data.train), len(data.val), len(data.test)
((1, 8, 8), 10, 1079, 359, 359)
"""

from .data.bundled import available, load
from .data.split import DataBundle, Split

__all__ = ["Split", "DataBundle", "load", "available"]
