"""Sensitive groups that come with the data: one group per example, kept apart from the inputs.

A group (sex, age band, site...) labels every example of every split. It never reaches the
model: :class:`~xprune_nb.data.Split` keeps it in ``groups`` next to ``X`` and ``y``, and the
study reads it only to break accuracy down by group (Fairlearn's ``MetricFrame.by_group``).

Labels may be integers ``0 .. G-1`` (named by ``group_names``, default ``"0"``, ``"1"``...) or
strings (named by themselves, in sorted order). :func:`attach_groups` checks them against the
splits: one label per example, no NaN, every group present in every split.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from ..core.errors import ConfigError, DataError

__all__ = ["attach_groups", "per_group_accuracy", "group_summary"]

_SPLITS = ("train", "val", "test")


def _raw(value, call: str, param: str) -> np.ndarray:
    """``value`` as a flat NumPy array (numbers or strings), refusing what is not flat."""
    if isinstance(value, torch.Tensor):
        array = value.detach().cpu().numpy()
    elif isinstance(value, (str, bytes, dict)) or not hasattr(value, "__len__"):
        raise ConfigError.bad_value(call, param, "one group label per example (a 1-D tensor, "
                                    "array, list or pandas Series)", value)
    else:
        array = np.asarray(list(value) if not hasattr(value, "dtype") else value)
    if array.ndim != 1:
        raise DataError(f"{call}({param}=...): group labels must be 1-D (one per example), "
                        f"got shape {tuple(array.shape)}.")
    return array


def _is_text(array: np.ndarray) -> bool:
    return array.dtype.kind in "USO"


def _encode(raws: dict[str, np.ndarray], names, call: str, param: str
            ) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Integer codes per split and the group names, shared by all splits."""
    text = [_is_text(a) for a in raws.values()]
    if any(text) and not all(text):
        raise DataError(f"{call}({param}=...): group labels must be all strings or all "
                        "integers across the splits, got a mix.")
    if all(text):
        for split, a in raws.items():
            if any(v is None or (isinstance(v, float) and v != v) for v in a.tolist()):
                raise DataError(f"{call}({param}=...): the {split} split has missing (None/NaN) "
                                "group labels; every example needs a group.")
        vocab = sorted({str(v) for a in raws.values() for v in a.tolist()})
        index = {v: i for i, v in enumerate(vocab)}
        codes = {s: torch.tensor([index[str(v)] for v in a.tolist()], dtype=torch.long)
                 for s, a in raws.items()}
        default = vocab
    else:
        codes = {}
        for split, a in raws.items():
            if a.dtype.kind == "b" or a.dtype.kind not in "iuf":
                raise DataError(f"{call}({param}=...): group labels must be integers 0..G-1 or "
                                f"strings; the {split} split has {a.dtype} values.")
            if a.dtype.kind == "f":
                if np.isnan(a).any():
                    raise DataError(f"{call}({param}=...): the {split} split has NaN group "
                                    "labels; every example needs a group.")
                if not np.array_equal(a, np.round(a)):
                    raise DataError(f"{call}({param}=...): group labels must be integers, the "
                                    f"{split} split has non-integer values.")
            if len(a) and a.min() < 0:
                raise DataError(f"{call}({param}=...): group labels must be >= 0, the {split} "
                                f"split has {int(a.min())}.")
            codes[split] = torch.as_tensor(a.astype(np.int64))
        count = max(int(c.max()) + 1 for c in codes.values() if len(c))
        if names is not None and not isinstance(names, str) and len(names) > count:
            # named groups 0..len(names)-1, some absent from these labels (a sample too small,
            # a rare group): the check below names the group and the split
            count = len(names)
        default = [str(i) for i in range(count)]
    if names is None:
        names = default
    elif isinstance(names, str) or not all(isinstance(n, str) for n in names):
        raise ConfigError.bad_value(call, "group_names", "a list of strings", names)
    elif len(names) != len(default):
        raise ConfigError.bad_value(call, "group_names", f"{len(default)} names (the data has "
                                    f"{len(default)} groups: {default})", f"{len(names)} names")
    elif len(set(names)) != len(names):
        raise ConfigError.bad_value(call, "group_names", "distinct names", list(names))
    return codes, list(names)


def attach_groups(data, groups=None, group_names=None, *, raw_groups=None, call: str = "Study"):
    """``data`` (a :class:`~xprune_nb.data.DataBundle`) with one group label per example.

    Parameters
    ----------
    data : DataBundle
        The study's data.
    groups : dict, optional
        ``{"train": labels, "val": labels, "test": labels}``, each aligned with its split
        (tensor, array, list or pandas Series). A split that stands in for a missing one (see
        ``DataBundle.split_names``) needs no entry.
    group_names : list of str, optional
        A name per group, for integer labels ``0 .. G-1``.
    raw_groups : dict, optional
        Labels that came inside the splits (``(X, y, groups)``, a loader yielding
        ``(x, y, g)``); ``groups`` may not repeat them.

    Examples
    --------
    >>> import torch
    >>> from xprune_nb.data import bundle
    >>> s = (torch.zeros(4, 2), torch.tensor([0, 1, 0, 1]))
    >>> d = attach_groups(bundle(s), {"train": ["a", "b", "a", "b"]})
    >>> d.group_names, d.train.groups.tolist()
    (['a', 'b'], [0, 1, 0, 1])
    """
    raws = {k: v for k, v in (raw_groups or {}).items() if v is not None}
    if groups is not None:
        if not isinstance(groups, dict) or not set(groups) <= set(_SPLITS) or not groups:
            raise ConfigError.bad_value(call, "groups", 'a dict {"train": labels, "val": ..., '
                                        '"test": ...}', groups)
        twice = sorted(set(groups) & set(raws))
        if twice:
            raise ConfigError.bad_value(call, "groups", "labels for splits that came without "
                                        "them", f"labels again for {twice}")
        raws.update({k: _raw(v, call, f"groups[{k!r}]") for k, v in groups.items()})
    elif group_names is not None and not raws:
        raise ConfigError.bad_value(call, "group_names", "names only together with groups",
                                    list(group_names))
    if not raws:
        return data
    given = set(groups) if groups is not None else set()
    raws = {k: _raw(v, call, "groups") for k, v in raws.items()}
    from .split import Split

    # a stream given labels: one per item of its dataset, picked at the drawn indices
    picked = {s: data.split(s) for s in given if not isinstance(data.split(s), Split)}
    for split, stream in picked.items():
        if not stream.map_style:
            raise ConfigError.bad_value(
                call, f"groups[{split!r}]", "labels only for tensor splits or a Dataset with "
                "__len__ (one label per item); an iterable has no item positions to align "
                "labels with: make its items (x, y, g) instead", f"labels for "
                f"{stream.describe()['type']}")
        if len(raws[split]) != stream.size:
            raise DataError(f"{call}(groups=...): the {split} split's dataset has {stream.size} "
                            f"items but {len(raws[split])} group labels; give one label per "
                            "item of the dataset (only the drawn items' labels are used).")
    stand_in = getattr(data, "split_names", {}) or {}
    missing = [s for s in _SPLITS if s not in raws and s not in stand_in]
    if missing:
        raise ConfigError.bad_value(call, "groups", f"labels for every split ({missing} have "
                                    "none)", sorted(raws))
    for split, a in raws.items():
        if split not in picked and len(a) != len(data.split(split)):
            raise DataError(f"{call}(groups=...): the {split} split has "
                            f"{len(data.split(split))} examples but {len(a)} group labels; give "
                            "one label per example.")
    codes, names = _encode(raws, group_names, call, "groups")
    full = {}
    for split, stream in picked.items():   # the drawn items, in sample order
        n = stream.limit if stream.limit is not None else stream.size
        full[split], codes[split] = codes[split], codes[split][stream.order()[:n]]
    for split in _SPLITS:
        own = codes.get(split, codes.get(stand_in.get(split, ""), None))
        if own is None:
            continue
        absent = [names[g] for g in range(len(names)) if not bool((own == g).any())]
        if absent:
            raise DataError(f"{call}(groups=...): group(s) {absent} have no examples in the "
                            f"{split} split; every group needs examples in every split to be "
                            "measured (merge rare groups, split so each group appears, or "
                            "draw more examples of a sampled split: eval_samples= / "
                            "score_samples=).")
        codes[split] = own
    splits = {s: _with_groups(data.split(s), codes[s], full.get(s)) for s in _SPLITS}
    # a stand-in split is the same object as the split it stands in for: keep it so
    splits.update({s: splits[o] for s, o in stand_in.items()})
    return dataclasses.replace(data, group_names=names, **splits)


def _with_groups(split, codes: torch.Tensor, full: torch.Tensor | None):
    """``split`` with group codes: a copy of a tensor split; a stream (a new object for each
    study, never copied whole) keeps its sample's codes and the labels given per item."""
    from .split import Split

    if isinstance(split, Split):
        return dataclasses.replace(split, groups=codes)
    split.groups, split.given_groups = codes, full
    return split


def per_group_accuracy(pred: torch.Tensor, y: torch.Tensor, groups: torch.Tensor | None,
                       names: list[str] | None) -> dict[str, float]:
    """Accuracy of each group (``MetricFrame.by_group``); ``{}`` without groups.

    Examples
    --------
    >>> import torch
    >>> per_group_accuracy(torch.tensor([1, 0, 1]), torch.tensor([1, 1, 1]),
    ...                    torch.tensor([0, 0, 1]), ["a", "b"])
    {'a': 0.5, 'b': 1.0}
    """
    if groups is None or not names:
        return {}
    hit = (pred.cpu() == y.cpu()).double()
    return {name: float(hit[groups == g].mean()) if bool((groups == g).any()) else float("nan")
            for g, name in enumerate(names)}


def group_summary(by_group: dict[str, float]) -> dict[str, float]:
    """Worst-group accuracy (``MetricFrame.group_min``) and the gap between the best and the
    worst group (``difference(method="between_groups")``); ``{}`` without groups.

    Examples
    --------
    >>> group_summary({"a": 0.5, "b": 0.75})
    {'worst_group_accuracy': 0.5, 'group_accuracy_gap': 0.25}
    """
    values = [v for v in by_group.values() if v == v]
    if not values:
        return {}
    return {"worst_group_accuracy": min(values), "group_accuracy_gap": max(values) - min(values)}
