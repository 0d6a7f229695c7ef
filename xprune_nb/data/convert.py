"""Turn what a user passes as data into the one :class:`DataBundle` a study works on.

Users bring a bundled :class:`~xprune_nb.datasets.DataBundle`, their own ``DataLoader``,
``Dataset`` or iterable, or ``(X, y)`` pairs of tensors or arrays. Tensors and arrays become
:class:`Split` tensors (small data: sampling, evaluation and saving stay exact and
deterministic). Loaders, datasets and iterables are kept as given
(:class:`~xprune_nb.data.stream.StreamSplit`): never copied whole, read through seeded,
bounded samples (``eval_samples``, ``score_samples``), and iterated as they are for retraining.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import ConfigError, DataError
from .batch import batch_size, is_mapping, rebuild, take
from .sampling import stratified_indices
from .split import DataBundle, Split  # the one Split and the one data bundle
from .stream import StreamSplit, is_stream, known_labels

__all__ = ["StudyData", "as_split", "resolve_data", "bundle", "check_samples",
           "DEFAULT_EVAL_SAMPLES", "DEFAULT_SCORE_SAMPLES"]

#: examples evaluated from a streamed validation or test split unless ``eval_samples=`` says
#: otherwise (bundled datasets and tensors are evaluated whole by default)
DEFAULT_EVAL_SAMPLES = 1000
#: reference examples a score draws unless ``samples=`` / ``score_samples=`` says otherwise
DEFAULT_SCORE_SAMPLES = 256
_ALL = ("all", None)


def check_samples(call: str, param: str, value, auto: bool = False):
    """Validate a sample size: a positive integer, or ``"all"`` / ``None`` (every example), or
    (with ``auto``) ``"auto"``. Returns the integer, ``None`` for all, or ``"auto"``.

    Examples
    --------
    >>> check_samples("Study", "eval_samples", "all") is None
    True
    >>> check_samples("Study", "eval_samples", 0)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    xprune_nb.errors.ConfigError: Study(eval_samples=...): expected a positive integer, ...
    """
    if value in _ALL and not isinstance(value, bool):
        return None
    if auto and value == "auto":
        return "auto"
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value > 0:
        return int(value)
    allowed = "a positive integer, or 'all' (or None) for every example" + (
        ", or 'auto' (every example of tensors, a bounded sample of loaders and datasets)"
        if auto else "")
    raise ConfigError.bad_value(call, param, allowed, value)


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


#: The one data bundle: every source (a bundled dataset, your tensors, loaders, a recipe's data
#: file or factory) becomes a :class:`~xprune_nb.datasets.DataBundle`; ``StudyData`` is its name
#: where the study's own data is meant.
StudyData = DataBundle


def bundle(train, val=None, test=None, *, class_names=None, feature_names=None,
           kind: str = "custom", call: str = "Study", groups=None, group_names=None,
           **_ignored) -> StudyData:
    """Splits given separately (``(X, y)`` pairs, Datasets, loaders...) and what is known about
    them, as the one data bundle a study works on.

    Examples
    --------
    >>> import torch
    >>> split = (torch.zeros(4, 2), torch.tensor([0, 1, 0, 1]))
    >>> data = bundle(split, split, split, class_names=["no", "yes"])
    >>> data.num_classes, data.class_names, len(data.val)
    (2, ['no', 'yes'], 4)
    """
    import types

    return resolve_data(types.SimpleNamespace(
        train=train, val=val, test=test, class_names=class_names,
        feature_names=feature_names, kind=kind), call=call, groups=groups,
        group_names=group_names)


def _frame_columns(split):
    """The columns of ``X`` when a split is ``(X, y)`` with ``X`` a pandas DataFrame."""
    if isinstance(split, (tuple, list)) and len(split) >= 2:
        columns = getattr(split[0], "columns", None)
        if columns is not None and getattr(split[0], "ndim", 0) == 2:
            return list(columns)
    return None


def _group_column(split, column: str, call: str, name: str):
    """``(X without the column, y[, ...])`` and the column, for ``groups={name: "column"}``."""
    columns = _frame_columns(split)
    if columns is None or column not in columns:
        raise ConfigError.bad_value(call, f"groups[{name!r}]", "group labels, or the name of a "
                                    "column of a pandas DataFrame input " + (
                                        f"(columns: {[str(c) for c in columns]})" if columns
                                        else f"(the {name} inputs are not a DataFrame)"), column)
    frame = split[0]
    return (frame.drop(columns=[column]), *split[1:]), frame[column].to_numpy()


def _yields_groups(stream: StreamSplit) -> bool:
    """Whether a map-style source yields ``(x, y, g)`` items. The item looked at is the first
    of the seeded sample order, which the sample reads anyway; a one-pass iterable is never
    peeked at (that would consume it): its third entries are not read as groups."""
    try:
        first = stream.first_item()
    except Exception:  # noqa: BLE001 - a source that cannot be peeked at is streamed as given
        return False
    return isinstance(first, (tuple, list)) and len(first) >= 3


def _split(value, name: str, *, limit, seed: int, call: str):
    """(split, group labels or None): tensors stay tensors (cut to ``limit`` rows for
    val/test when asked), a user's loader / dataset / iterable is kept as given behind a
    bounded sample, except one yielding ``(x, y, g)``: per-group figures need the group of
    every example measured, so it is read once into tensors."""
    if isinstance(value, StreamSplit):
        value = value.source
    if is_stream(value):
        stream = StreamSplit(value, limit=limit, seed=seed, name=name, call=call)
        if not _yields_groups(stream):
            return stream, None
    split, raw = split_with_groups(value, call=call, name=name)
    if name != "train" and isinstance(limit, int) and limit < len(split):
        idx = stratified_indices(split.y, limit, seed=seed, call=call, param="eval_samples")
        split = Split(take(split.X, idx), split.y[idx],
                      split.index[idx] if split.index is not None else None)
        if raw is not None:
            raw = (raw[idx] if isinstance(raw, torch.Tensor)
                   else np.asarray(raw, dtype=object)[idx.numpy()])
    return split, raw


def _example(split):
    """The inputs of one example of a split (with its batch dimension)."""
    return split.sample(1)[0] if isinstance(split, StreamSplit) else take(split.X, slice(0, 1))


def _shape(x) -> tuple:
    if is_mapping(x):   # token inputs: the shape of the first named tensor (input_ids)
        x = next(v for v in x.values() if isinstance(v, torch.Tensor))
    return tuple(x.shape[1:])


def _num_classes(splits: dict) -> int:
    """Classes seen: every label of tensor splits, the labels a streamed dataset exposes, or
    else the labels of its bounded sample (never every label of a user's data)."""
    found = []
    for split in splits.values():
        if isinstance(split, StreamSplit):
            labels = known_labels(split.dataset) if split.map_style else None
            found.append(int(labels.max()) if labels is not None else
                         int(split.y.max()) if split is splits["train"] else -1)
        else:
            found.append(int(split.y.max()))
    return max(found) + 1


def resolve_data(data=None, *, train=None, val=None, test=None, call: str = "Study",
                 seed: int = 0, eval_samples="auto", score_samples=DEFAULT_SCORE_SAMPLES,
                 feature_names=None, class_names=None, groups=None,
                 group_names=None) -> StudyData:
    """Build :class:`StudyData` from a bundle or from separate splits.

    A missing validation split falls back to the test split and vice versa; with neither,
    evaluation uses the training split (``split_names`` records which split stands in).
    ``eval_samples`` bounds the validation and test examples measured (``"auto"``: all of
    tensors, :data:`DEFAULT_EVAL_SAMPLES` of a loader or dataset; ``"all"``: every example);
    ``score_samples`` is the default number of reference examples of a score (and the bounded
    sample of a streamed training split). Both are drawn under ``seed``. ``feature_names`` and
    ``class_names`` name your own data's features and classes (checked against it).
    Sensitive groups come inside the splits (``(X, y, groups)``, loaders yielding
    ``(x, y, g)``) or as ``groups={"train": ..., ...}`` (see :mod:`xprune_nb.data.groups`).
    """
    renames = {"feature_names": feature_names, "class_names": class_names}
    evals = check_samples(call, "eval_samples", eval_samples, auto=True)
    scores = check_samples(call, "score_samples", score_samples)
    source = None
    class_names = feature_names = None
    kind = "custom"
    if data is not None:
        if any(v is not None for v in (train, val, test)):
            raise ConfigError(
                f"{call}: give either data=... (a bundle) or train=/val=/test=..., not both."
            )
        if all(hasattr(data, a) for a in ("train", "val", "test")):
            train, val, test = data.train, data.val, data.test
            class_names = list(getattr(data, "class_names", None) or []) or None
            feature_names = getattr(data, "feature_names", None)
            kind = getattr(data, "kind", "custom")
            source = dict(getattr(data, "source", None) or {}) or None
        else:
            train = data
    if train is None:
        raise ConfigError.bad_value(call, "train", "training data (or data=a bundle)", None)
    if isinstance(groups, dict) and any(isinstance(v, str) for v in groups.values()):
        # a column of a DataFrame input: taken out of the inputs, so the model never sees it
        given = {"train": train, "val": val, "test": test}
        groups = dict(groups)
        for name, column in list(groups.items()):
            if isinstance(column, str) and given.get(name) is not None:
                given[name], groups[name] = _group_column(given[name], column, call, name)
        train, val, test = given["train"], given["val"], given["test"]
    if feature_names is None:   # a pandas DataFrame's columns name the features
        columns = _frame_columns(train)
        feature_names = [str(c) for c in columns] if columns is not None else None
    if group_names is None and data is not None:   # a bundle that already has groups
        group_names = getattr(data, "group_names", None)
    eval_limit = DEFAULT_EVAL_SAMPLES if evals == "auto" else evals
    splits, raws = {}, {}
    splits["train"], raws["train"] = _split(train, "train", limit=scores, seed=seed, call=call)
    for name, value in (("val", val), ("test", test)):
        if value is not None:
            # "auto" keeps tensors whole (bundled data: the same figures as ever)
            limit = eval_limit if evals != "auto" or is_stream(value) or isinstance(
                value, StreamSplit) else None
            splits[name], raws[name] = _split(value, name, limit=limit, seed=seed, call=call)
    stand_in = {}
    if "val" not in splits:
        stand_in["val"] = "test" if "test" in splits else "train"
    if "test" not in splits:
        stand_in["test"] = "val" if "val" in splits else "train"
    for name, other in stand_in.items():
        splits[name] = splits[other]
    shape = _shape(_example(splits["train"]))
    for name in ("val", "test"):
        # named token inputs are padded per batch: their lengths may differ between splits
        if isinstance(splits[name], Split) and isinstance(splits["train"], Split) and not (
                is_mapping(splits[name].X)) and _shape(splits[name].X) != shape:
            raise DataError(
                f"{call}({name}=...): inputs of shape {_shape(splits[name].X)} do not "
                f"match the training inputs' shape {shape}."
            )
    num_classes = _num_classes(splits)
    if class_names is not None and len(class_names) >= num_classes:
        num_classes = len(class_names)
    else:
        class_names = [str(i) for i in range(num_classes)]
    extra = {k: getattr(data, k) for k in ("mean", "std", "description")
             if data is not None and getattr(data, k, None) is not None}
    bundle_ = DataBundle(
        name=(source or {}).get("name", getattr(data, "name", "custom")) if data is not None
        else "custom",
        train=splits["train"], val=splits["val"], test=splits["test"], input_shape=shape,
        num_classes=num_classes, class_names=list(class_names),
        feature_names=list(feature_names) if feature_names is not None else None,
        kind=kind, source=source or {}, split_names=stand_in,
        sampling={"seed": int(seed), "eval_samples": "all" if evals is None else evals,
                  "score_samples": "all" if scores is None else scores}, **extra,
    )
    from .groups import attach_groups

    return attach_groups(bundle_, groups, group_names, raw_groups=raws,
                         call=call).renamed(**renames, call=call)

