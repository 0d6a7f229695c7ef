"""Small offline datasets with deterministic, stratified train/val/test splits.

Every dataset is either bundled with scikit-learn (``digits``, ``breast_cancer``, ``wine``) or
generated on the spot (``moons``, ``circles``, ``spiral``, ``digits_boxes``), so nothing is ever
downloaded and a notebook runs the same on a laptop, in CI and on an air-gapped machine.

:func:`load` returns a :class:`~xprune_nb.data.split.DataBundle`: three
:class:`~xprune_nb.data.split.Split` objects holding plain tensors plus the metadata that the
explainers and widgets need (input shape, class and feature names, normalisation statistics).
``bundle.source`` holds the exact arguments of the call, so a recipe, a saved study or an
exported script rebuilds the same data with ``load(**bundle.source)``.

Examples
--------
>>> import xprune_nb.data.public as ds
>>> data = ds.load("digits")
>>> data.input_shape, data.num_classes, len(data.train), len(data.val), len(data.test)
((1, 8, 8), 10, 1079, 359, 359)
>>> ds.load(**data.source).test.y.equal(data.test.y)
True
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..core.errors import ConfigError
from .sources import REGISTRY as _REGISTRY
from .sources import Spec as _Spec
from .sources import is_int as _is_int
from .split import SPLIT_NAMES as _SPLIT_NAMES
from .split import DataBundle, Split

__all__ = ["load", "available", "stratified_split"]


# --------------------------------------------------------------------------------------------
# Splitting


def stratified_split(
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
        zip(_SPLIT_NAMES, stratified_split(y, resolved["val_size"], resolved["test_size"], seed))
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
