"""What the items and batches of a user's source are: ``(input, label)`` pairs, ``(x, y, g)``
triples whose third entry is the sensitive group (docs/groups.md), or mappings with a
``labels`` entry; and the labels a dataset exposes without reading its items.

Examples
--------
>>> import torch
>>> x, y, g = split_batch((torch.zeros(2, 3), torch.tensor([0, 1]), ["f", "m"]), "demo", "data",
...                       with_groups=True)
>>> y.tolist(), g
([0, 1], ['f', 'm'])
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

from ..core.errors import DataError
from .batch import batch_size as rows_of
from .batch import is_mapping, rebuild

__all__ = ["is_stream", "known_labels", "split_batch", "join_groups"]


def is_stream(value) -> bool:
    """True for what a study keeps as given: a ``DataLoader``, a ``Dataset`` or another
    re-iterable source of ``(input, label)`` items (not tensors, arrays or ``(X, y)`` pairs)."""
    if isinstance(value, (torch.Tensor, tuple, list, Mapping, str, bytes)) or any(
            hasattr(value, a) for a in ("X", "train", "__array_interface__")) or type(
            value).__module__.split(".")[0] in ("numpy", "pandas"):
        return False
    if isinstance(value, (DataLoader, IterableDataset)):
        return True
    return (hasattr(value, "__getitem__") and hasattr(value, "__len__")) or (
        hasattr(value, "__iter__") and not hasattr(value, "shape"))


def known_labels(dataset) -> torch.Tensor | None:
    """The labels a dataset exposes without reading its items (``targets`` / ``labels``), or
    None. Only used when there is one integer label per item."""
    try:
        size = len(dataset)
    except TypeError:
        return None
    for attr in ("targets", "labels"):
        value = getattr(dataset, attr, None)
        if value is None or callable(value):
            continue
        try:
            labels = torch.as_tensor(value)
        except Exception:  # noqa: BLE001 - an attribute of another kind: not labels
            continue
        if labels.dim() == 1 and len(labels) == size and not labels.is_floating_point():
            return labels.long()
    return None


def _many(v) -> bool:
    """True for a value that is not one label (a sequence, a tensor of several numbers)."""
    if isinstance(v, torch.Tensor):
        return v.numel() != 1
    if isinstance(v, np.ndarray):
        return v.size != 1
    return isinstance(v, (list, tuple, dict))


def _group_values(g, rows: int, call: str, name: str) -> list:
    """The group labels of one collated batch as a list of plain values (numbers or strings)."""
    if isinstance(g, torch.Tensor):
        values = g.reshape(-1).tolist()
    elif isinstance(g, np.ndarray):
        values = g.reshape(-1).tolist()
    elif isinstance(g, (list, tuple)):
        if any(_many(v) for v in g):
            raise DataError(f"{call}({name}=...): each (x, y, g) item needs one group label "
                            "(a number or a string) as g, got a sequence.")
        values = [v.item() if isinstance(v, (torch.Tensor, np.generic)) else v for v in g]
    else:
        values = [g]
    if len(values) != rows:
        raise DataError(f"{call}({name}=...): a batch has {rows} labels but {len(values)} group "
                        "labels; each (x, y, g) item needs one group.")
    return values


def join_groups(parts: list, call: str, name: str) -> list | None:
    """The group labels of consecutive batches joined (None when no batch had any); a source
    whose items are sometimes ``(x, y, g)`` and sometimes pairs is refused."""
    if all(p is None for p in parts):
        return None
    if any(p is None for p in parts):
        raise DataError(f"{call}({name}=...): some items are (x, y, g) and others (x, y); give "
                        "every item its group, or none.")
    return [v for p in parts for v in p]


def split_batch(batch, call: str, name: str, with_groups: bool = False):
    """``(inputs, labels)`` of one collated batch: a ``(x, y, ...)`` pair, or a mapping whose
    ``labels`` (or ``label``) entry holds the labels and whose other tensors are the inputs.
    With ``with_groups``: ``(inputs, labels, groups)``, ``groups`` the third entries of a
    ``(x, y, g)`` batch as a list of plain values, or None."""
    g = None
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        x, y = batch[0], batch[1]
        g = batch[2] if len(batch) >= 3 else None
    elif is_mapping(batch) and ("labels" in batch or "label" in batch):
        key = "labels" if "labels" in batch else "label"
        y = batch[key]
        x = rebuild(batch, {k: v for k, v in batch.items() if k != key}, drop=(key,))
    else:
        raise DataError(f"{call}({name}=...): each item or batch must be an (input, label) pair "
                        f"or a mapping with a 'labels' entry, got {type(batch).__name__}.")
    y = torch.as_tensor(y)
    if y.is_floating_point() and not torch.equal(y, y.round()):
        raise DataError(f"{call}({name}=...): labels must be integer class indices; got "
                        "non-integer values.")
    y = y.reshape(-1).long()
    if isinstance(x, torch.Tensor) and x.is_floating_point():
        x = x.to(torch.float32)
    if rows_of(x, call) != len(y):
        raise DataError(f"{call}({name}=...): a batch has {rows_of(x, call)} inputs but "
                        f"{len(y)} labels.")
    if not with_groups:
        return x, y
    return x, y, (None if g is None else _group_values(g, len(y), call, name))
