"""The package version, in one small module that writers can import without the package root.

>>> from xprune_nb.core.version import __version__
>>> __version__.count(".") >= 2
True
"""

__version__ = "0.1.0"
