"""Train/val/test tensors from a file: what an exported script's ``--data FILE`` reads.

Two formats, both read without running code:

* ``.pt`` (``torch.load(weights_only=True)``): ``{"train": {"X": ..., "y": ...}, "val": ...,
  "test": ..., "meta": {...}}``, as ``Recipe.save`` writes it. ``X`` is a tensor or a dict of
  named tensors (``input_ids``, ``attention_mask``, ...); ``meta`` (optional) holds
  ``class_names``, ``feature_names``, ``kind``, ``group_names``. A split may also hold
  ``"groups"``: the int64 sensitive-group code of every row (docs/groups.md).
* ``.npz`` (``numpy.load(allow_pickle=False)``): arrays ``train_X``, ``train_y``, ``val_X``, ...;
  named inputs as ``train_X.input_ids``, ``train_X.attention_mask``, ...; group codes as
  ``train_groups``, ...

``train`` is required, ``val`` and ``test`` are optional (the study stands in for missing ones
as it does for splits given in memory). Every split is checked: ``X`` rows match the integer
labels ``y``, values are finite. A failure is a :class:`~xprune_nb.core.errors.StudyFileError`
naming the file, the split and what was expected.

Examples
--------
>>> import tempfile, torch
>>> from pathlib import Path
>>> path = Path(tempfile.mkdtemp()) / "data.pt"
>>> torch.save({"train": {"X": torch.zeros(4, 2), "y": torch.tensor([0, 1, 0, 1])}}, path)
>>> read_splits(path)["train"][0].shape
torch.Size([4, 2])
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from ..core.errors import StudyFileError

__all__ = ["read_splits", "load_splits", "SPLITS"]

SPLITS = ("train", "val", "test")
_META = ("class_names", "feature_names", "kind", "group_names")


def _npz(path: Path, call: str) -> dict:
    try:
        with np.load(path, allow_pickle=False) as arrays:
            raw = {k: arrays[k] for k in arrays.files}
    except Exception as exc:  # noqa: BLE001 - damaged, not an npz, or holds objects
        raise StudyFileError(f"{call}(path=...): {str(path)!r} is not a readable .npz of plain "
                             f"arrays ({type(exc).__name__}: {exc}).") from exc
    out: dict = {}
    for key, arr in raw.items():
        split, _, rest = key.partition("_")
        part, _, name = rest.partition(".")
        if split not in SPLITS or part not in ("X", "y", "groups") or (
                part in ("y", "groups") and name):
            raise StudyFileError(f"{call}(path=...): {str(path)!r} holds array {key!r}; "
                                 "expected train_X, train_y, val_X, val_y, test_X, test_y "
                                 "(named inputs as train_X.input_ids, ...; group codes as "
                                 "train_groups, ...).")
        entry = out.setdefault(split, {})
        value = torch.from_numpy(np.ascontiguousarray(arr))
        if name:
            entry.setdefault("X", {})[name] = value
        else:
            entry[part] = value
    return out


def _check_split(name: str, entry, path: Path, call: str) -> tuple:
    where = f"{call}(path=...): {str(path)!r}, split {name!r}"
    if not isinstance(entry, Mapping) or "X" not in entry or "y" not in entry:
        got = sorted(map(str, entry)) if isinstance(entry, Mapping) else type(entry).__name__
        raise StudyFileError(f"{where}: expected {{'X': inputs, 'y': labels}}, got {got}.")
    X, y = entry["X"], entry["y"]
    inputs = dict(X) if isinstance(X, Mapping) else {"X": X}
    if not inputs or not all(isinstance(t, torch.Tensor) and t.dim() >= 1
                             for t in inputs.values()):
        raise StudyFileError(f"{where}: X must be a tensor or a dict of named tensors, each "
                             "with a batch dimension.")
    if not isinstance(y, torch.Tensor) or y.dim() != 1 or y.is_floating_point() or y.is_complex():
        raise StudyFileError(f"{where}: y must be a 1-D tensor of integer class labels, got "
                             f"{getattr(y, 'dtype', type(y).__name__)} of shape "
                             f"{tuple(getattr(y, 'shape', ()))}.")
    rows = {k: int(t.shape[0]) for k, t in inputs.items()}
    if any(r != len(y) for r in rows.values()) or len(y) == 0:
        raise StudyFileError(f"{where}: X has {rows} rows and y {len(y)}; they must agree and "
                             "not be empty.")
    if bool((y < 0).any()):
        raise StudyFileError(f"{where}: labels must be >= 0, got {int(y.min())}.")
    for k, t in inputs.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise StudyFileError(f"{where}: input {k!r} holds NaN or infinite values.")
    groups = entry.get("groups")
    if groups is None:
        return X, y.long()
    if not isinstance(groups, torch.Tensor) or groups.shape != y.shape or (
            groups.is_floating_point() or groups.is_complex() or groups.dtype == torch.bool):
        raise StudyFileError(f"{where}: groups must be a 1-D tensor of integer group codes, "
                             f"one per row ({len(y)}), got "
                             f"{getattr(groups, 'dtype', type(groups).__name__)} of shape "
                             f"{tuple(getattr(groups, 'shape', ()))}.")
    return X, y.long(), groups.long()   # codes are checked further when a study takes them


def read_splits(path: str | Path, *, call: str = "load_data") -> dict:
    """``{"train": (X, y), "val": ..., "test": ..., "meta": {...}}`` (``(X, y, groups)`` for
    a split with group codes) from a .pt or .npz file,
    checked (see the module docstring); splits the file lacks are absent."""
    from ..core.reading import read_torch_file

    path = Path(path)
    if not path.exists():
        raise StudyFileError(f"{call}(path=...): no such file {str(path)!r}.")
    if path.suffix.lower() == ".npz":
        stored = _npz(path, call)
    else:
        stored = read_torch_file(path, call=call, kind="data")
    if not isinstance(stored, Mapping) or "train" not in stored:
        got = sorted(map(str, stored)) if isinstance(stored, Mapping) else type(stored).__name__
        raise StudyFileError(f"{call}(path=...): {str(path)!r} must hold a 'train' split (and "
                             f"optionally 'val', 'test', 'meta'), got {got}.")
    extra = [k for k in stored if k not in (*SPLITS, "meta")]
    if extra:
        raise StudyFileError(f"{call}(path=...): {str(path)!r} holds unknown entries "
                             f"{sorted(map(str, extra))}; expected {list(SPLITS) + ['meta']}.")
    out: dict = {name: _check_split(name, stored[name], path, call)
                 for name in SPLITS if name in stored}
    meta = stored.get("meta") or {}
    if not isinstance(meta, Mapping) or any(k not in _META for k in meta):
        raise StudyFileError(f"{call}(path=...): {str(path)!r}: 'meta' may hold only {_META}.")
    out["meta"] = dict(meta)
    return out


def load_splits(path: str | Path, *, call: str = "load_data"):
    """The data bundle of a .pt or .npz file (see :func:`read_splits`)."""
    from .convert import bundle

    splits = read_splits(path, call=call)
    meta = splits.pop("meta")
    return bundle(**splits, **meta, call=f"{call}(path=...)")
