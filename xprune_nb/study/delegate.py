"""Facade methods that are one call of a service: ``Study.sensitivity = delegate(...)``.

The service is a function ``service(study, ...)`` in another module, imported on first use (so
``import xprune_nb`` stays light). The bound method has the service's signature (minus
``study``) and docstring, so ``help()``, tab completion and ``inspect.signature`` show the real
parameters.
"""

from __future__ import annotations

import functools
import importlib
import inspect

__all__ = ["delegate"]


class delegate:  # noqa: N801 - used like a function, in class bodies
    """A method of the facade that hands the study to ``"package.module:function"``."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.name = ""
        self._func = None

    def __set_name__(self, owner, name: str) -> None:
        self.name = name

    @property
    def func(self):
        if self._func is None:
            module, _, attr = self.path.partition(":")
            self._func = getattr(importlib.import_module(module), attr)
        return self._func

    def __get__(self, study, owner=None):
        func = self.func
        if study is None:   # on the class: the service itself, for help() and the docs
            return func

        @functools.wraps(func)
        def method(*args, **kwargs):
            return func(study, *args, **kwargs)

        # the study is bound; ``call`` (the name errors use) is the service's own business
        params = [p for p in list(inspect.signature(func).parameters.values())[1:]
                  if p.name != "call"]
        method.__signature__ = inspect.Signature(params)
        return method
