"""``xprune_nb.data.public``: the bundled datasets and the data types, as users type them.

The data layer lives in :mod:`xprune_nb.data`; this module is the public path of its bundled
datasets (``xp.datasets.load("digits")``) and of :class:`Split` / :class:`DataBundle`.

Examples
--------
>>> import xprune_nb.data.public as ds
>>> data = ds.load("digits")
>>> data.input_shape, data.num_classes, len(data.train), len(data.val), len(data.test)
((1, 8, 8), 10, 1079, 359, 359)
"""

from .bundled import available, load
from .split import DataBundle, Split

__all__ = ["Split", "DataBundle", "load", "available"]
