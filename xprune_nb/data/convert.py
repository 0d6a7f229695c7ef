"""Turn what a user passes as data into the one :class:`DataBundle` a study works on.

Users bring a bundled :class:`~xprune_nb.data.public.DataBundle`, their own ``DataLoader``,
``Dataset`` or iterable, or ``(X, y)`` pairs of tensors or arrays. Tensors and arrays become
:class:`Split` tensors (small data: sampling, evaluation and saving stay exact and
deterministic). Loaders, datasets and iterables are kept as given
(:class:`~xprune_nb.data.stream.StreamSplit`): never copied whole, read through seeded,
bounded samples (``eval_samples``, ``score_samples``), and iterated as they are for retraining.
"""

from __future__ import annotations

import numpy as np
import torch

from ..core.errors import ConfigError, DataError
from .batch import is_mapping, take
from .sampling import stratified_indices
from .split import DataBundle, Split  # the one Split and the one data bundle
from .stream import StreamSplit, is_stream, known_labels
from .tensors import as_split, split_with_groups

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
    xprune_nb.core.errors.ConfigError: Study(eval_samples=...): expected a positive integer, ...
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


#: The one data bundle: every source (a bundled dataset, your tensors, loaders, a recipe's data
#: file or factory) becomes a :class:`~xprune_nb.data.public.DataBundle`; ``StudyData`` is its name
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


def _stream_groups(stream: StreamSplit):
    """The group labels of a stream's bounded sample when its items are ``(x, y, g)``, else
    None. A map-style source's first sampled item (read by the sample anyway) says whether
    there are groups; only then are the sample's items read for them (only the drawn ones).
    An iterable's sample is read once and kept, so its groups come with it."""
    if stream.map_style:
        try:
            first = stream.first_item()
        except Exception:  # noqa: BLE001 - a source that cannot be peeked at: no groups
            return None
        if not (isinstance(first, (tuple, list)) and len(first) >= 3):
            return None
    return stream.raw_groups()


def _split(value, name: str, *, limit, seed: int, call: str):
    """(split, group labels or None): tensors stay tensors (cut to ``limit`` rows for
    val/test when asked); a user's loader / dataset / iterable is kept as given behind a
    bounded sample, with the groups of the sample's items when they are ``(x, y, g)``."""
    if isinstance(value, StreamSplit):
        value = value.source
    if is_stream(value):
        stream = StreamSplit(value, limit=limit, seed=seed, name=name, call=call)
        return stream, _stream_groups(stream)
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

