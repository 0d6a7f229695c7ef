"""Small offline datasets with deterministic, stratified train/val/test splits.

Every dataset is either bundled with scikit-learn (``digits``, ``breast_cancer``, ``wine``) or
generated on the spot (``moons``, ``circles``, ``spiral``), so nothing is ever downloaded and a
notebook runs the same on a laptop, in CI and on an air-gapped machine.

:func:`load` returns a :class:`DataBundle`: three :class:`Split` objects holding plain tensors
plus the metadata that the explainers and widgets need (input shape, class and feature names,
normalisation statistics). ``bundle.source`` holds the exact arguments of the call, so a recipe or
an exported script can rebuild the same data with ``load(**bundle.source)``.

Examples
--------
>>> import xprune_nb.datasets as ds
>>> data = ds.load("digits")
>>> data.input_shape, data.num_classes, len(data.train), len(data.val), len(data.test)
((1, 8, 8), 10, 1079, 359, 359)
>>> ds.load(**data.source).test.y.equal(data.test.y)
True
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from xprune_nb._dataset_builders import REGISTRY as _REGISTRY
from xprune_nb._dataset_builders import Spec as _Spec
from xprune_nb._dataset_builders import _is_int
from xprune_nb.errors import ConfigError

__all__ = ["Split", "DataBundle", "load", "available"]

_SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True, eq=False)
class Split:
    """One split of a dataset, as plain tensors.

    ``eq=False`` keeps identity comparison: element-wise tensor equality has no single truth
    value, so a generated ``__eq__`` would raise instead of answering.

    Parameters
    ----------
    X : torch.Tensor
        float32 inputs, shape ``(N, *input_shape)``.
    y : torch.Tensor
        int64 class labels, shape ``(N,)``.
    index : torch.Tensor or None
        int64 positions of these rows in the full, unsplit dataset (``None`` when the split was
        built by hand). Lets you trace an example back to its source and check splits are disjoint.

    Examples
    --------
    >>> import torch
    >>> s = Split(torch.zeros(4, 2), torch.tensor([0, 1, 0, 1]))
    >>> len(s), s.X.shape
    (4, torch.Size([4, 2]))
    """

    X: torch.Tensor
    y: torch.Tensor
    index: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def class_counts(self, num_classes: int | None = None) -> list[int]:
        """Number of examples of each class, in class order.

        Examples
        --------
        >>> import torch
        >>> Split(torch.zeros(3, 2), torch.tensor([0, 1, 1])).class_counts()
        [1, 2]
        """
        return torch.bincount(self.y, minlength=num_classes or 0).tolist()

    def loader(
        self, batch_size: int = 64, shuffle: bool = False, seed: int = 0
    ) -> torch.utils.data.DataLoader:
        """A DataLoader over this split; shuffling is seeded so epochs repeat bit for bit.

        Examples
        --------
        >>> import torch
        >>> s = Split(torch.zeros(10, 2), torch.zeros(10, dtype=torch.int64))
        >>> [len(xb) for xb, yb in s.loader(batch_size=4)]
        [4, 4, 2]
        """
        generator = torch.Generator().manual_seed(seed)
        dataset = torch.utils.data.TensorDataset(self.X, self.y)
        return torch.utils.data.DataLoader(
            dataset, batch_size=batch_size, shuffle=shuffle, generator=generator
        )


@dataclass(frozen=True, eq=False)
class DataBundle:
    """A dataset split into train, validation and test parts, with its metadata.

    Attributes
    ----------
    name : str
        Dataset name as given to :func:`load`.
    train, val, test : Split
        The three disjoint, class-stratified splits.
    input_shape : tuple of int
        Shape of one example (``(1, 8, 8)`` for digits, ``(30,)`` for breast_cancer...).
    num_classes : int
        Number of classes; labels are ``0 .. num_classes - 1``.
    class_names : list of str
        Human-readable name of each class, indexed by label.
    feature_names : list of str or None
        Name of each input feature for tabular and toy data; ``None`` for images.
    kind : str
        ``"image"``, ``"tabular"`` or ``"toy"``.
    source : dict
        ``{"name": ..., "seed": ..., **options}`` with every option resolved, so that
        ``load(**source)`` rebuilds exactly this bundle.
    mean, std : torch.Tensor or None
        Per-feature statistics of the train split used to standardise the inputs, or ``None`` when
        the inputs were not standardised. :meth:`denormalize` maps inputs back to raw units.
    description : str
        One line about where the data comes from.

    Examples
    --------
    >>> data = load("wine")
    >>> data.kind, data.input_shape, data.class_names
    ('tabular', (13,), ['class_0', 'class_1', 'class_2'])
    >>> sorted(data.splits())
    ['test', 'train', 'val']
    """

    name: str
    train: Split
    val: Split
    test: Split
    input_shape: tuple[int, ...]
    num_classes: int
    class_names: list[str]
    feature_names: list[str] | None
    kind: str
    source: dict[str, Any]
    mean: torch.Tensor | None = None
    std: torch.Tensor | None = None
    description: str = ""
    #: for a study's data: which split stands in for a missing one (e.g. ``{"val": "test"}``)
    split_names: dict[str, str] = field(default_factory=dict)

    def splits(self) -> dict[str, Split]:
        """The three splits by name: ``{"train": ..., "val": ..., "test": ...}``."""
        return {"train": self.train, "val": self.val, "test": self.test}

    def renamed(self, *, feature_names=None, class_names=None, call: str = "Study"
                ) -> DataBundle:
        """A copy with the given feature and class names (checked against the data)."""
        import dataclasses

        from ._data import _names

        changes = {}
        if class_names is not None:
            changes["class_names"] = _names(class_names, self.num_classes, call, "class_names",
                                            "classes")
        if feature_names is not None:
            width = int(self.train.X[0].numel())
            changes["feature_names"] = _names(feature_names, width, call, "feature_names",
                                              "features per example")
        return dataclasses.replace(self, **changes) if changes else self

    def split(self, name: str) -> Split:
        """One split by name (``"train"``, ``"val"`` or ``"test"``).

        Examples
        --------
        >>> len(load("moons", n_samples=100).split("val"))
        20
        """
        if name not in _SPLIT_NAMES:
            raise ConfigError.unknown_name("DataBundle.split", "name", _SPLIT_NAMES, name)
        return self.splits()[name]

    def denormalize(self, X: torch.Tensor) -> torch.Tensor:
        """Undo the standardisation, giving inputs in their original units.

        Returns ``X`` unchanged when the bundle was not standardised.

        Examples
        --------
        >>> data = load("breast_cancer")
        >>> raw = data.denormalize(data.train.X)
        >>> bool(raw.mean(0).allclose(data.mean, rtol=1e-4))
        True
        """
        if self.mean is None or self.std is None:
            return X
        return X * self.std + self.mean

    def summary(self) -> Any:
        """Examples per class and split, as a pandas DataFrame (classes as rows).

        Examples
        --------
        >>> load("moons", n_samples=100).summary().loc["total"].tolist()
        [60, 20, 20]
        """
        import pandas as pd  # lazy: pandas costs import time that most calls never need

        counts = {
            name: split.class_counts(self.num_classes) for name, split in self.splits().items()
        }
        frame = pd.DataFrame(counts, index=list(self.class_names))
        frame.loc["total"] = frame.sum()
        return frame

    def _header(self) -> str:
        sizes = ", ".join(f"{name}={len(split)}" for name, split in self.splits().items())
        return (
            f"DataBundle({self.name!r}, kind={self.kind!r}, input_shape={self.input_shape}, "
            f"num_classes={self.num_classes}, {sizes})"
        )

    def __repr__(self) -> str:
        return self._header()

    def _repr_html_(self) -> str:
        options = {k: v for k, v in self.source.items() if k != "name"}
        options_text = ", ".join(f"{k}={v!r}" for k, v in options.items())
        return (
            f"<div><b>{html.escape(self.name)}</b> ({html.escape(self.kind)}): "
            f"{html.escape(self.description)}<br>"
            f"input shape {self.input_shape}, {self.num_classes} classes; "
            f"options: {html.escape(options_text)}</div>" + self.summary().to_html()
        )


# --------------------------------------------------------------------------------------------
# Splitting


def _stratified_split(
    y: np.ndarray, val_size: float, test_size: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of train/val/test with each class split in the same proportions.

    Each class gets at least one example in every split, so per-class metrics and stratified
    reference samples never meet an empty class.
    """
    rng = np.random.RandomState(seed)  # frozen stream: same split on every NumPy version
    parts: dict[str, list[np.ndarray]] = {name: [] for name in _SPLIT_NAMES}
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        n = len(members)
        n_test = max(1, round(test_size * n))
        n_val = max(1, round(val_size * n))
        parts["test"].append(members[:n_test])
        parts["val"].append(members[n_test : n_test + n_val])
        parts["train"].append(members[n_test + n_val :])
    # shuffle across classes so batches taken in order are not single-class
    return tuple(rng.permutation(np.concatenate(parts[name])) for name in _SPLIT_NAMES)


def _validate(name: str, spec: _Spec, seed: Any, options: dict[str, Any]) -> dict[str, Any]:
    call = "datasets.load"
    if not _is_int(seed) or not 0 <= seed < 2**32:
        raise ConfigError.bad_value(call, "seed", "an integer in [0, 2**32)", seed)
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        allowed = ", ".join(repr(k) for k in spec.options)
        raise ConfigError(
            f"{call}({unknown[0]}=...): dataset {name!r} has no option {unknown[0]!r}; "
            f"its options are {allowed}."
        )
    resolved = {}
    for key, option in spec.options.items():
        value = options.get(key, option.default)
        if not option.check(value):
            raise ConfigError.bad_value(call, key, option.allowed, value)
        resolved[key] = value
    if resolved["val_size"] + resolved["test_size"] >= 1.0:
        raise ConfigError.bad_value(
            call,
            "val_size",
            f"val_size + test_size < 1 (test_size={resolved['test_size']!r})",
            resolved["val_size"],
        )
    # plain Python numbers keep source JSON/YAML-serialisable even if NumPy scalars came in
    return {k: v.item() if isinstance(v, np.generic) else v for k, v in resolved.items()}


def available() -> list[str]:
    """Names accepted by :func:`load`, sorted.

    Examples
    --------
    >>> available()
    ['breast_cancer', 'circles', 'digits', 'digits_boxes', 'moons', 'spiral', 'wine']
    """
    return sorted(_REGISTRY)


def load(name: str, seed: int = 0, **options: Any) -> DataBundle:
    """Load a bundled dataset with deterministic, stratified train/val/test splits.

    Parameters
    ----------
    name : str
        One of :func:`available`: ``digits`` (images 1x8x8 in [0, 1], 10 classes),
        ``breast_cancer`` and ``wine`` (tabular, standardised with train statistics),
        ``moons``, ``circles`` and ``spiral`` (2-D toy problems).
    seed : int, default 0
        Drives the split and, for generated data, the points themselves. Same seed and options,
        same tensors, bit for bit.
    **options
        Every dataset takes ``val_size`` and ``test_size`` (fractions, default 0.2 each: a
        60/20/20 split). ``breast_cancer`` and ``wine``: ``standardize`` (default True).
        ``moons``: ``n_samples`` (1000), ``noise`` (0.2). ``circles``: ``n_samples`` (1000),
        ``noise`` (0.1), ``factor`` (0.5, inner radius over outer). ``spiral``: ``n_samples``
        (1000), ``noise`` (0.2, angular jitter in radians), ``n_classes`` (3).

    Returns
    -------
    DataBundle
        Splits as float32/int64 tensors plus metadata; ``bundle.source`` rebuilds it.

    Raises
    ------
    ConfigError
        Unknown dataset name or option, or an option value out of range.

    Examples
    --------
    >>> data = load("spiral", seed=1, n_classes=4, n_samples=400)
    >>> data.num_classes, data.train.X.shape, data.train.X.dtype, data.train.y.dtype
    (4, torch.Size([240, 2]), torch.float32, torch.int64)
    >>> data.source
    {'name': 'spiral', 'seed': 1, 'val_size': 0.2, 'test_size': 0.2, 'n_samples': 400, \
'noise': 0.2, 'n_classes': 4}
    """
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ConfigError.unknown_name("datasets.load", "name", available(), name)
    spec = _REGISTRY[name]
    resolved = _validate(name, spec, seed, options)
    seed = int(seed)

    build_args = {k: v for k, v in resolved.items() if k not in ("val_size", "test_size")}
    standardize = build_args.pop("standardize", False)
    raw = spec.build(seed=seed, **build_args)
    X = np.asarray(raw["X"], dtype=np.float64)
    y = np.asarray(raw["y"], dtype=np.int64)

    index = dict(
        zip(_SPLIT_NAMES, _stratified_split(y, resolved["val_size"], resolved["test_size"], seed))
    )
    mean = std = None
    if standardize:
        # statistics from the train split only: val/test must not leak into preprocessing
        train_X = X[index["train"]]
        mean_np = train_X.mean(axis=0)
        std_np = train_X.std(axis=0)
        std_np[std_np == 0] = 1.0  # a constant feature stays 0 instead of becoming NaN
        X = (X - mean_np) / std_np
        mean = torch.tensor(mean_np, dtype=torch.float32)
        std = torch.tensor(std_np, dtype=torch.float32)

    splits = {
        part: Split(
            X=torch.tensor(X[idx], dtype=torch.float32),
            y=torch.tensor(y[idx], dtype=torch.int64),
            index=torch.tensor(idx, dtype=torch.int64),
        )
        for part, idx in index.items()
    }
    return DataBundle(
        name=name,
        **splits,
        input_shape=tuple(int(d) for d in X.shape[1:]),
        num_classes=len(raw["class_names"]),
        class_names=list(raw["class_names"]),
        feature_names=raw["feature_names"],
        kind=spec.kind,
        source={"name": name, "seed": seed, **resolved},
        mean=mean,
        std=std,
        description=spec.description,
    )
