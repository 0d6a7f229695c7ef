"""Resolve a class or a factory from a name stored in a file, without running code by accident.

Study files, checkpoints and recipes name the model they were made with (``module`` +
``qualname``, or ``"package.module:callable"``). Turning such a name into an object is the one
place where a data file could make us run code: importing a module runs its top-level code,
calling a function runs it, and even instantiating a class runs its ``__init__``. So:

* without ``trust_source`` nothing is imported at all: only the package's own architectures
  (:mod:`xprune_nb.models`, what the zoo builds) resolve; everything else is refused with an
  error that says to pass ``model=<an instance>`` or to opt in;
* with ``trust_source=True`` the named module is imported and the name walked attribute by
  attribute, and a class is accepted only if it is a subclass of ``torch.nn.Module`` -- checked
  before anything is called;
* constructor arguments stored in a file must be plain JSON values (str, int, float, bool,
  None, and lists and string-keyed dicts of those).

Examples
--------
>>> from xprune_nb.record.io.resolver import resolve_module_class
>>> resolve_module_class("xprune_nb.models", "ToyMLP", trust_source=False, call="demo").__name__
'ToyMLP'
>>> resolve_module_class("os", "abort", trust_source=False, call="demo")
Traceback (most recent call last):
...
xprune_nb.core.errors.StudyFileError: demo: the file names the class os.abort; ...
"""

from __future__ import annotations

import importlib
import keyword
import math
from collections.abc import Callable
from typing import Any

from torch import nn

from ...core.errors import ConfigError, StudyFileError

__all__ = ["PACKAGE_MODELS", "TRUST_HINT", "is_plain_json", "check_plain_kwargs",
           "split_import_path", "resolve_module_class", "resolve_factory", "build_module"]

#: the package's own architectures: resolving them never imports anything new
PACKAGE_MODELS = "xprune_nb.models"
#: how to opt in, in every message that refuses
TRUST_HINT = "trust_source=True (command line: --trust)"
_MAX_DEPTH = 32


def is_plain_json(value: Any, _depth: int = 0, *, tuples: bool = False) -> bool:
    """True for str, int, finite float, bool, None, and lists / str-keyed dicts of those
    (and tuples, with ``tuples=True``: an in-memory recipe's, which its file holds as lists).

    Examples
    --------
    >>> is_plain_json({"width": 8, "names": ["a", None], "p": 0.5})
    True
    >>> is_plain_json({"fn": print}), is_plain_json(float("nan")), is_plain_json((1, 2))
    (False, False, False)
    """
    if _depth > _MAX_DEPTH:
        return False
    if value is None or isinstance(value, (str, bool, int)):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if type(value) is list or (tuples and type(value) is tuple):
        return all(is_plain_json(v, _depth + 1, tuples=tuples) for v in value)
    if type(value) is dict:
        return all(isinstance(k, str) and is_plain_json(v, _depth + 1, tuples=tuples)
                   for k, v in value.items())
    return False


def _identifier(part: object) -> bool:
    return isinstance(part, str) and part.isidentifier() and not keyword.iskeyword(part)


def _dotted(name: object) -> bool:
    return isinstance(name, str) and all(_identifier(p) for p in name.split("."))


def check_plain_kwargs(kwargs: Any, *, call: str, param: str = "kwargs",
                       error: type[Exception] = StudyFileError) -> dict:
    """``kwargs`` as a dict, checked to be argument names mapped to plain JSON values.

    Raises ``error`` (``StudyFileError`` for files, ``ConfigError`` for recipes) naming
    ``call`` and ``param`` otherwise.

    Examples
    --------
    >>> check_plain_kwargs({"width": 8}, call="demo")
    {'width': 8}
    >>> check_plain_kwargs(None, call="demo")
    {}
    """
    if kwargs is None:
        return {}
    if not (type(kwargs) is dict and all(_identifier(k) for k in kwargs)
            and is_plain_json(kwargs)):
        raise error(f"{call}({param}=...): expected constructor arguments as plain values "
                    "(argument name -> number, string, bool, None, or lists and dicts of "
                    f"those), got {_show(kwargs)}.")
    return {k: _copy(v) for k, v in kwargs.items()}


def _copy(value: Any) -> Any:
    if type(value) is list:
        return [_copy(v) for v in value]
    if type(value) is dict:
        return {k: _copy(v) for k, v in value.items()}
    return value


def _show(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def split_import_path(path: Any, *, call: str, param: str,
                      error: type[Exception] = ConfigError) -> tuple[str, str]:
    """``"package.module:attr.path"`` as ``(module, qualname)``, both dotted identifiers.

    Examples
    --------
    >>> split_import_path("mypkg.nets:make", call="demo", param="model.factory")
    ('mypkg.nets', 'make')
    """
    if isinstance(path, str) and path.count(":") == 1:
        module, qualname = path.split(":")
        if _dotted(module) and _dotted(qualname):
            return module, qualname
    raise error(f"{call}({param}=...): expected 'package.module:callable' made of Python "
                f"identifiers, got {_show(path)}.")


def _walk(obj: Any, qualname: str, where: str, call: str, error: type[Exception]) -> Any:
    for part in qualname.split("."):
        # dunder attributes lead out of the named object (``__class__``, ``__globals__``...)
        if part.startswith("__"):
            raise error(f"{call}: {where} names a private attribute ({part!r}); refused.")
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise error(f"{call}: cannot find {where} ({exc}); pass model=<a fresh instance "
                        "of the original architecture>.") from exc
    return obj


def _package_object(module: str, qualname: str, call: str, error: type[Exception]) -> Any:
    """The named object inside :mod:`xprune_nb.models` (already imported by the package)."""
    from ... import models

    obj = _walk(models, qualname, f"{module}.{qualname}", call, error)
    if not (isinstance(obj, type) and issubclass(obj, nn.Module)
            and obj.__module__.partition(".")[0] == "xprune_nb"
            and (obj.__module__ + ".").startswith(PACKAGE_MODELS + ".")):
        raise error(f"{call}: {module}.{qualname} is not a model class of xprune_nb; "
                    "refusing to call it.")
    return obj


def _import(module: str, call: str, what: str, error: type[Exception]):
    if module == "__main__":
        raise error(f"{call}: {what} was defined in a notebook or script, so it cannot be "
                    "imported; pass model=<a fresh instance of the original architecture>.")
    try:
        return importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - ImportError, or any error the module raises
        raise error(f"{call}: cannot import {module!r} for {what} ({type(exc).__name__}: "
                    f"{' '.join(str(exc).split())[:200]}); pass model=<a fresh instance of "
                    "the original architecture>.") from exc


def resolve_module_class(module: str, qualname: str, *, trust_source: bool, call: str,
                         error: type[Exception] = StudyFileError) -> type[nn.Module]:
    """The ``nn.Module`` subclass a file names, imported only when that is allowed.

    Parameters
    ----------
    module, qualname : str
        Where the class lives, as stored in the file (``"mypkg.nets"``, ``"Net"``).
    trust_source : bool
        Without it only :mod:`xprune_nb.models` classes resolve and *nothing is imported*
        (importing a module runs its code). With it the module is imported, and the object
        must be a subclass of ``torch.nn.Module`` (checked before anything is called).
    call : str
        The public call, for messages (``"Study.load"``).
    error : exception class
        ``StudyFileError`` (default, for files) or ``ConfigError`` (for recipes).

    Returns
    -------
    type
        The class; nothing has been instantiated.

    Examples
    --------
    >>> resolve_module_class("xprune_nb.models", "DigitsCNN", trust_source=False,
    ...                      call="demo").__name__
    'DigitsCNN'
    """
    where = f"{module}.{qualname}"
    if not (_dotted(module) and _dotted(qualname)):
        raise error(f"{call}: the stored class name {_show(where)} is not an import path "
                    "of Python identifiers; the file is damaged.")
    if module == PACKAGE_MODELS or module.startswith(PACKAGE_MODELS + "."):
        return _package_object(module, qualname, call, error)
    if not trust_source:
        raise error(
            f"{call}: the file names the class {where}; rebuilding it would import and run "
            f"code from {module!r}. Pass model=<a fresh instance of the original "
            f"architecture>, or opt in with {TRUST_HINT} if you trust this file.")
    obj = _walk(_import(module, call, f"the model class {where}", error), qualname,
                where, call, error)
    # the file chose this name: refuse anything but a module class (os.system, os.abort...)
    if not (isinstance(obj, type) and issubclass(obj, nn.Module)):
        raise error(f"{call}: {where} is not a torch.nn.Module class; refusing to call it.")
    return obj


def resolve_factory(path: str, *, trust_source: bool, call: str, param: str,
                    error: type[Exception] = ConfigError) -> Callable:
    """The callable a recipe names as ``"package.module:callable"``.

    A factory is arbitrary code, so it needs ``trust_source=True``; the package's own model
    classes (``"xprune_nb.models:ToyMLP"``) are the exception. Nothing is imported without
    trust.

    Examples
    --------
    >>> resolve_factory("xprune_nb.models:ToyMLP", trust_source=False, call="demo",
    ...                 param="model.factory").__name__
    'ToyMLP'
    >>> resolve_factory("os:system", trust_source=False, call="demo", param="model.factory")
    Traceback (most recent call last):
    ...
    xprune_nb.core.errors.ConfigError: demo(model.factory=...): the recipe names the callable ...
    """
    module, qualname = split_import_path(path, call=call, param=param, error=error)
    if module == PACKAGE_MODELS or module.startswith(PACKAGE_MODELS + "."):
        return _package_object(module, qualname, call, error)
    if not trust_source:
        raise error(
            f"{call}({param}=...): the recipe names the callable {path!r}; calling it runs "
            f"code from {module!r}. By themselves recipes build only zoo models and bundled "
            f"datasets: pass {TRUST_HINT} if you trust this recipe, or pass the "
            "model=/data= yourself.")
    obj = _walk(_import(module, call, repr(path), error), qualname, repr(path), call, error)
    if not callable(obj):
        raise error(f"{call}({param}=...): {path!r} is not callable.")
    return obj


def build_module(module: str, qualname: str, kwargs: Any, *, trust_source: bool, call: str,
                 error: type[Exception] = StudyFileError) -> nn.Module:
    """Resolve the class (see :func:`resolve_module_class`), check ``kwargs`` are plain
    values, and instantiate it.

    Examples
    --------
    >>> net = build_module("xprune_nb.models", "ToyMLP", {}, trust_source=False, call="demo")
    >>> type(net).__name__
    'ToyMLP'
    """
    cls = resolve_module_class(module, qualname, trust_source=trust_source, call=call,
                               error=error)
    kwargs = check_plain_kwargs(kwargs, call=call, error=error)
    try:
        return cls(**kwargs)
    except Exception as exc:  # noqa: BLE001 - wrong arguments, or the class fails to build
        raise error(f"{call}: cannot build {module}.{qualname}(**{_show(kwargs)}) "
                    f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]}); pass "
                    "model=<a fresh instance of the original architecture>.") from exc
