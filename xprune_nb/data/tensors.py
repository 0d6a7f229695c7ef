"""User values that are small enough to hold (tensors, arrays, lists, a ``Dataset`` turned
into rows) as tensor :class:`Split` objects, checked on the way: labels are integer class
indices, inputs are finite numbers (or integer token ids), and rows and labels agree.

Examples
--------
>>> import torch
>>> split = as_split((torch.zeros(4, 2), torch.tensor([0, 1, 0, 1])))
>>> tuple(split.X.shape), split.y.tolist()
((4, 2), [0, 1, 0, 1])
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..core.errors import ConfigError, DataError
from .batch import batch_size, is_mapping, rebuild
from .split import Split

__all__ = ["as_split", "split_with_groups"]


def _to_tensor(value, what: str, call: str, name: str = "data") -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        if value.is_meta:   # .cpu() would raise a raw NotImplementedError
            raise DataError(f"{call}({name}=...): got {what} on the meta device (a shape "
                            "but no values); give tensors that hold data (e.g. on the CPU).")
        return value.detach().cpu()
    try:
        array = np.asarray(value)
        if not array.flags.writeable:
            # pandas hands out read-only views; torch warns on those ("NumPy array is not
            # writable") because it would share them. One copy of what was given, no warning.
            array = array.copy()
        tensor = torch.as_tensor(array)
    except Exception as exc:  # noqa: BLE001 - any conversion failure is a data error here
        raise DataError(
            f"{call}({name}=...): could not turn {what} into a tensor of numbers "
            f"({type(value).__name__}): {exc}"
        ) from exc
    if tensor.is_complex():
        raise DataError(f"{call}({name}=...): {what} must be real numbers, got complex values.")
    return tensor


def _is_labels(value) -> bool:
    """True for a flat sequence of numbers (class labels), not a sequence of examples."""
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return value.ndim == 1
    return isinstance(value, (list, tuple)) and all(
        isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in value)


def _from_pairs(pairs: Iterator, call: str, name: str, batched: bool):
    """(Split, group labels or None) from ``(x, y)`` or ``(x, y, g)`` items or batches."""
    xs, ys, gs = [], [], []
    for item in pairs:
        if not isinstance(item, (tuple, list)) or len(item) < 2:
            raise DataError(
                f"{call}({name}=...): each item or batch must be an (input, label) pair, "
                f"got {type(item).__name__}."
            )
        xs.append(_to_tensor(item[0], "an input", call, name))
        ys.append(_to_tensor(item[1], "a label", call, name))
        if len(item) >= 3:   # (x, y, g): the sensitive group, kept apart from the input
            g = item[2]
            gs.extend(g.reshape(-1).tolist() if isinstance(g, torch.Tensor) else (
                list(g) if batched else [g]))
    if not xs:
        raise DataError(f"{call}({name}=...): the data is empty; give at least one example.")
    try:
        if batched:
            split = Split(torch.cat(xs), torch.cat([y.reshape(-1) for y in ys]))
        else:
            split = Split(torch.stack(xs), torch.stack([y.reshape(()) for y in ys]))
    except RuntimeError as exc:   # inputs of different shapes, or a label that is not one number
        raise DataError(
            f"{call}({name}=...): every example must have the same input shape and one integer "
            f"label: {exc}"
        ) from exc
    return split, (gs if gs else None)


def as_split(value, *, call: str = "Study", name: str = "data") -> Split:
    """Convert ``(X, y)``, ``(X, y, groups)``, a ``Dataset``, a ``DataLoader`` (items or batches
    ``(x, y)`` or ``(x, y, g)``) or an object with ``X``/``y`` to a Split (read whole).

    Group labels given alone here are coded by themselves; a study codes them across its
    splits (:func:`xprune_nb.data.groups.attach_groups`).

    Examples
    --------
    >>> import torch
    >>> s = as_split((torch.zeros(4, 3), torch.tensor([0, 1, 0, 1])))
    >>> len(s), s.X.dtype, s.y.dtype
    (4, torch.float32, torch.int64)
    >>> as_split((torch.zeros(2, 3), torch.tensor([0, 1]), ["f", "m"])).groups.tolist()
    [0, 1]
    """
    import dataclasses

    split, raw = split_with_groups(value, call=call, name=name)
    if raw is None:
        return split
    from .groups import _encode, _raw

    codes, _ = _encode({name: _raw(raw, call, "groups")}, None, call, "groups")
    if len(codes[name]) != len(split):
        raise DataError(f"{call}({name}=...): {len(split)} examples but {len(codes[name])} "
                        "group labels; give one label per example.")
    return dataclasses.replace(split, groups=codes[name])


def split_with_groups(value, *, call: str = "Study", name: str = "data"):
    """(Split without groups, the group labels that came with ``value`` or None)."""
    raw = None
    if hasattr(value, "X") and hasattr(value, "y"):
        X, y = _to_inputs(value.X, call, name), _to_tensor(value.y, "y", call, name)
        raw = getattr(value, "groups", None)
    elif isinstance(value, (tuple, list)) and len(value) == 3 and not isinstance(
            value[0], (tuple, list)):
        X, y = _to_inputs(value[0], call, name), _to_tensor(value[1], "y", call, name)
        raw = value[2]
    elif isinstance(value, (tuple, list)) and len(value) == 2 and (
        not isinstance(value[0], (tuple, list))
        # (X.tolist(), y.tolist()): a tuple of examples and a flat list of labels as long
        or (isinstance(value, tuple) and _is_labels(value[1])
            and len(value[0]) == len(value[1]))
    ):
        X, y = _to_inputs(value[0], call, name), _to_tensor(value[1], "y", call, name)
    elif isinstance(value, DataLoader):
        split, raw = _from_pairs(iter(value), call, name,
                                 batched=value.batch_size is not None)
        X, y = split.X, split.y
    elif isinstance(value, Dataset) or (hasattr(value, "__getitem__")
                                        and hasattr(value, "__len__")):
        split, raw = _from_pairs((value[i] for i in range(len(value))), call, name,
                                 batched=False)
        X, y = split.X, split.y
    else:
        raise ConfigError.bad_value(
            call, name, "a DataBundle, a DataLoader, a Dataset or an (X, y) pair", value
        )
    if is_mapping(X):   # named inputs (input_ids, attention_mask...): each checked alike
        X = rebuild(X, {k: _check_inputs(v, call, f"{name}[{k!r}]") for k, v in X.items()})
    else:
        X = _check_inputs(X, call, name)
    rows = batch_size(X, call)
    if y.dim() != 1 or y.shape[0] != rows:
        raise DataError(
            f"{call}({name}=...): labels must be a 1-D tensor with one class index per example; "
            f"got labels of shape {tuple(y.shape)} for {rows} inputs."
        )
    if y.dtype.is_floating_point:
        if not torch.equal(y, y.round()):
            raise DataError(
                f"{call}({name}=...): labels must be integer class indices (classification); "
                "got non-integer values."
            )
    y = y.long()
    if (y < 0).any():
        raise DataError(f"{call}({name}=...): class indices must be >= 0, got {int(y.min())}.")
    return Split(X, y.contiguous()), raw


def _to_inputs(value, call: str, name: str):
    """Inputs as a tensor, or a mapping of named tensors (e.g. a tokenizer's output)."""
    if is_mapping(value):
        named = {k: _to_tensor(v, f"X[{k!r}]", call, name) for k, v in value.items()
                 if v is not None}
        if not named:
            raise DataError(f"{call}({name}=...): the named inputs hold no tensor.")
        return rebuild(value, named)
    return _to_tensor(value, "X", call, name)


def _check_inputs(X: torch.Tensor, call: str, name: str) -> torch.Tensor:
    if X.dim() == 0:
        raise DataError(f"{call}({name}=...): inputs must have a batch dimension (one row per "
                        "example), got a single number.")
    if X.shape[0] == 0:
        raise DataError(f"{call}({name}=...): the data is empty; give at least one example.")
    if X.is_complex():   # casting would drop the imaginary part (or make integers of it)
        raise DataError(f"{call}({name}=...): inputs must be real numbers (float) or integer "
                        f"ids, got {str(X.dtype).replace('torch.', '')}; pass e.g. "
                        "torch.view_as_real(X) or X.abs() as features.")
    if X.dtype.is_floating_point:
        X = X.to(torch.float32)
        if not torch.isfinite(X).all():
            raise DataError(f"{call}({name}=...): inputs contain NaN or infinite values.")
    elif X.dtype != torch.bool:
        X = X.long()   # token ids and other integer inputs stay integers (nn.Embedding)
    return X.contiguous()
