"""Model inputs that are a tensor or a mapping of tensors, handled alike.

Token models take dicts (a Hugging Face ``BatchEncoding``: ``input_ids``, ``attention_mask``,
``token_type_ids``) padded per batch, so two batches may differ in sequence length. These helpers
move, count, slice and join such inputs without knowing the model: a tensor is one input; a
``Mapping`` (``dict``, ``BatchEncoding``) holds one tensor per name, all with the same first
(batch) dimension. Joining batches of different lengths pads the shorter ones on the right with
the value of :data:`PAD_VALUES` for their name (0 otherwise), as a tokenizer's padding does.

Examples
--------
>>> import torch
>>> a = {"input_ids": torch.tensor([[5, 6]]), "attention_mask": torch.tensor([[1, 1]])}
>>> b = {"input_ids": torch.tensor([[7, 8, 9]]), "attention_mask": torch.tensor([[1, 1, 1]])}
>>> both = concat([a, b])
>>> both["input_ids"].tolist(), both["attention_mask"].tolist(), batch_size(both)
([[5, 6, 0], [7, 8, 9]], [[1, 1, 0], [1, 1, 1]], 2)
>>> take(both, [1])["input_ids"].tolist()
[[7, 8, 9]]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from ..core.errors import DataError

__all__ = ["Inputs", "is_mapping", "batch_size", "take", "concat", "to_device", "rebuild",
           "plain", "PAD_VALUES"]

#: What a tensor or a mapping of named tensors (``dict``, ``BatchEncoding``) can be.
Inputs = Any

#: padding value per input name when batches of different lengths are joined (``labels`` uses
#: -100, the index ``F.cross_entropy`` and Hugging Face losses ignore); any other name pads with 0
PAD_VALUES: dict[str, int] = {"input_ids": 0, "attention_mask": 0, "token_type_ids": 0,
                              "labels": -100}


def is_mapping(inputs: Inputs) -> bool:
    """True for named inputs (a ``dict``, a ``BatchEncoding`` or any other ``Mapping``)."""
    return isinstance(inputs, Mapping)


def _tensors(inputs: Inputs, call: str) -> dict[str, torch.Tensor]:
    if isinstance(inputs, torch.Tensor):
        return {"": inputs}
    if is_mapping(inputs):
        found = {str(k): v for k, v in inputs.items() if isinstance(v, torch.Tensor)}
        if found:
            return found
    raise DataError(f"{call}(inputs=...): expected a tensor or a mapping of tensors (e.g. "
                    f"input_ids, attention_mask), got {type(inputs).__name__}.")


def batch_size(inputs: Inputs, call: str = "batch_size") -> int:
    """Number of examples (rows) in ``inputs``; every tensor of a mapping must agree.

    Examples
    --------
    >>> batch_size(torch.zeros(3, 2)), batch_size({"input_ids": torch.zeros(4, 7)})
    (3, 4)
    """
    sizes = {name: int(t.shape[0]) if t.dim() else 0 for name, t in _tensors(inputs, call).items()}
    if len(set(sizes.values())) != 1:
        raise DataError(f"{call}(inputs=...): the named inputs must have the same number of "
                        f"rows, got {sizes}.")
    return next(iter(sizes.values()))


def rebuild(inputs: Inputs, values: dict[str, Any], drop: Sequence[str] = ()) -> Inputs:
    """``inputs``' container (a ``BatchEncoding`` stays one) with its tensors replaced by
    ``values``; other entries are kept, except those named in ``drop``."""
    if isinstance(inputs, torch.Tensor):
        return values[""]
    out = {k: values.get(str(k), v) for k, v in inputs.items() if k not in drop}
    # BatchEncoding and other dict subclasses rebuild from a dict; an exotic Mapping is a dict
    try:
        return type(inputs)(out)
    except Exception:  # noqa: BLE001 - a Mapping type that can't be built from a dict
        return out


def take(inputs: Inputs, rows) -> Inputs:
    """The given rows (a slice, a list or a tensor of indices) of every tensor in ``inputs``.

    Examples
    --------
    >>> take(torch.arange(6).reshape(3, 2), slice(0, 2)).tolist()
    [[0, 1], [2, 3]]
    """
    if not isinstance(rows, (slice, torch.Tensor)):
        rows = torch.as_tensor(list(rows) if not isinstance(rows, int) else [rows],
                               dtype=torch.long)
    return rebuild(inputs, {k: t[rows] for k, t in _tensors(inputs, "take").items()})


def _pad(t: torch.Tensor, shape: Sequence[int], value: float) -> torch.Tensor:
    """``t`` padded at the end of every non-batch dimension up to ``shape``."""
    widths: list[int] = []
    for have, want in zip(reversed(t.shape[1:]), reversed(shape)):
        widths += [0, want - have]
    return F.pad(t, widths, value=value) if any(widths) else t


def concat(parts: Sequence[Inputs], pad_values: Mapping[str, float] | None = None) -> Inputs:
    """Join inputs along the batch dimension, padding shorter ones at the end (right).

    Tensors of one name must have the same number of dimensions; a dimension that differs
    (a sequence length) is padded to the longest with ``pad_values[name]`` (default
    :data:`PAD_VALUES`, else 0). Plain tensors pad with 0.

    Examples
    --------
    >>> concat([torch.ones(1, 2), torch.ones(2, 3)]).tolist()
    [[1.0, 1.0, 0.0], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]
    """
    parts = list(parts)
    if not parts:
        raise DataError("concat(parts=...): nothing to join; give at least one batch.")
    pads = {**PAD_VALUES, **(dict(pad_values) if pad_values else {})}
    first = _tensors(parts[0], "concat")
    tensors = [_tensors(p, "concat") for p in parts]
    joined = {}
    for name in first:
        column = [t.get(name) for t in tensors]
        if any(c is None or c.dim() != column[0].dim() or c.dim() == 0 for c in column):
            raise DataError(f"concat(parts=...): every batch must hold {name or 'a tensor'!r} "
                            "with the same number of dimensions and a batch dimension.")
        shape = [max(c.shape[d] for c in column) for d in range(1, column[0].dim())]
        joined[name] = torch.cat([_pad(c, shape, pads.get(name, 0)) for c in column])
    return rebuild(parts[0], joined)


def to_device(inputs: Inputs, device: torch.device | str) -> Inputs:
    """``inputs`` with every tensor (in tuples, lists and mappings too) on ``device``.

    Examples
    --------
    >>> to_device({"input_ids": torch.zeros(1, 2, dtype=torch.long)}, "cpu")["input_ids"].device
    device(type='cpu')
    """
    if isinstance(inputs, torch.Tensor):
        return inputs.to(device)
    if is_mapping(inputs):
        return rebuild(inputs, {str(k): to_device(v, device) for k, v in inputs.items()})
    if isinstance(inputs, (tuple, list)):
        return type(inputs)(to_device(v, device) for v in inputs)
    return inputs


def plain(inputs: Inputs) -> Inputs:
    """``inputs`` as a file stores them: a mapping (a ``BatchEncoding`` too) becomes a plain
    ``dict`` of its entries, which ``torch.load(weights_only=True)`` reads back (a
    ``BatchEncoding`` is a class it refuses); a tensor stays as it is.

    Examples
    --------
    >>> from collections import OrderedDict
    >>> type(plain(OrderedDict(input_ids=torch.zeros(1, 2)))).__name__
    'dict'
    """
    return {str(k): v for k, v in inputs.items()} if is_mapping(inputs) else inputs
