"""Checks of class indices, target labels and names against a dataset, with one message shape."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from ..core.errors import ConfigError

__all__ = ["check_classes", "check_labels"]


def _class_index(value) -> int | None:
    """``value`` as a class index if it is an integer (Python, NumPy or 0-d integer tensor),
    else None: 0.7, '1', True and NaN are not class indices."""
    if isinstance(value, torch.Tensor):
        if value.dim() != 0 or value.dtype.is_floating_point or value.dtype == torch.bool:
            return None
        return int(value)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        return None
    return int(value)


def check_classes(classes, num_classes: int, call: str, param: str = "classes") -> list[int]:
    """Validate a list of class indices (or one index); returns them as a list of ints.

    Refuses, naming ``param``: non-integers (``0.7``, ``'1'``, ``True``), indices outside
    ``[0, num_classes)``, and an empty list. Nothing is coerced.

    Examples
    --------
    >>> check_classes([0, 2], 3, "Study.score")
    [0, 2]
    >>> check_classes([0.7], 3, "Study.score")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    xprune_nb.core.errors.ConfigError: Study.score(classes=...): expected class indices ... got
    [0.7].
    """
    allowed = f"class indices (integers) in [0, {num_classes})"
    items = [classes] if _class_index(classes) is not None else classes
    if isinstance(items, (str, bytes, dict)) or not hasattr(items, "__iter__"):
        raise ConfigError.bad_value(call, param, allowed, classes)
    items = list(items)
    picked = [_class_index(c) for c in items]
    if not items or any(c is None or not 0 <= c < num_classes for c in picked):
        raise ConfigError.bad_value(call, param, allowed, items)
    return picked


def check_labels(labels, n: int, num_classes: int, call: str, param: str = "labels"
                 ) -> torch.Tensor:
    """Validate ``n`` target class indices (e.g. ``Study.saliency(labels=...)``); returns a
    long tensor.

    Examples
    --------
    >>> check_labels([1, 0], 2, 3, "Study.saliency").tolist()
    [1, 0]
    >>> check_labels([99, 99], 2, 3, "Study.saliency")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    xprune_nb.core.errors.ConfigError: Study.saliency(labels=...): expected 2 class indices ...
    """
    allowed = f"{n} class indices (integers) in [0, {num_classes})"
    if isinstance(labels, torch.Tensor):
        items = labels.reshape(-1).tolist() if labels.dim() <= 1 else None
    elif isinstance(labels, (str, bytes, dict)) or not hasattr(labels, "__iter__"):
        items = None
    else:
        items = list(labels)
    if items is None or len(items) != n:
        raise ConfigError.bad_value(call, param, allowed, labels)
    picked = [_class_index(c) for c in items]
    if any(c is None or not 0 <= c < num_classes for c in picked):
        raise ConfigError.bad_value(call, param, allowed, items)
    return torch.tensor(picked, dtype=torch.long)


def _names(names, count: int, call: str, param: str, what: str) -> list[str]:
    """Names in index order: a list of distinct strings, or a dict read by its values
    ({"no": 0, "yes": 1}) or by its keys ({0: "no", 1: "yes"}), never in insertion order."""
    if isinstance(names, dict):
        names = _by_index(names, count, call, param)
    if isinstance(names, (str, bytes)) or not isinstance(names, Iterable):
        raise ConfigError.bad_value(call, param, "a list of strings", names)
    names = list(names)
    if not all(isinstance(n, str) for n in names):
        raise ConfigError.bad_value(call, param, "a list of strings", names)
    if len(names) != count:
        raise ConfigError.bad_value(call, param, f"{count} names (the data has {count} {what})",
                                    f"{len(names)} names")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:   # two columns (or classes) under one name: one would hide the other
        raise ConfigError.bad_value(call, param, f"{count} distinct names", f"{repeated} named "
                                    "more than once")
    return names


def _by_index(names: dict, count: int, call: str, param: str) -> list:
    def index(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    if all(index(v) for v in names.values()):
        pairs = {v: k for k, v in names.items()}      # name -> index
    elif all(index(k) for k in names):
        pairs = dict(names)                            # index -> name
    else:
        pairs = None
    if pairs is None or sorted(pairs) != list(range(count)) or len(pairs) != len(names):
        raise ConfigError.bad_value(call, param, f"a list of {count} names, or a dict mapping "
                                    f"each name to its index 0..{count - 1} (or each index to "
                                    "its name)", names)
    return [pairs[i] for i in range(count)]
