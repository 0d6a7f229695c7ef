"""Builders of the bundled datasets: raw arrays and metadata per dataset, and their options.

Each builder returns ``{"X", "y", "class_names", "feature_names"}`` with X shaped per example;
:mod:`xprune_nb.data.bundled` splits, standardises and wraps them. Adding a dataset is one builder
and one :data:`REGISTRY` entry.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import raw

__all__ = ["REGISTRY", "Spec", "Option", "is_int"]


# --------------------------------------------------------------------------------------------
# Option validation


@dataclass(frozen=True)
class _Option:
    default: Any
    allowed: str
    check: Callable[[Any], bool]


def _is_int(value: Any) -> bool:
    # bool is an int subclass; True as a sample count is always a mistake
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_real(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, (float, np.floating))) and math.isfinite(value)


def _fraction(value: Any) -> bool:
    return _is_real(value) and 0.0 < value < 1.0


_SPLIT_OPTIONS = {
    "val_size": _Option(0.2, "a fraction in (0, 1)", _fraction),
    "test_size": _Option(0.2, "a fraction in (0, 1)", _fraction),
}
_N_SAMPLES = _Option(1000, "an integer in [30, 1000000]", lambda v: _is_int(v) and 30 <= v <= 10**6)
_STANDARDIZE = _Option(True, "True or False", lambda v: isinstance(v, (bool, np.bool_)))


def _noise(default: float) -> _Option:
    return _Option(default, "a number in [0, 10]", lambda v: _is_real(v) and 0 <= v <= 10)


# --------------------------------------------------------------------------------------------
# Builders: each returns {X, y, class_names, feature_names} with X shaped per example.


@dataclass(frozen=True)
class _Spec:
    kind: str
    description: str
    options: Mapping[str, _Option]
    build: Callable[..., dict[str, Any]]


def _build_digits(seed: int) -> dict[str, Any]:
    X, y, _, _ = raw.sklearn_raw("digits")
    # pixel intensities are integers 0..16; scale to [0, 1] so saliency maps share one range
    images = (X / 16.0).reshape(-1, 1, 8, 8)
    return {
        "X": images,
        "y": y,
        "class_names": [str(i) for i in range(10)],
        "feature_names": None,
    }


def _build_sklearn_tabular(name: str) -> Callable[..., dict[str, Any]]:
    def build(seed: int) -> dict[str, Any]:
        X, y, features, classes = raw.sklearn_raw(name)
        return {"X": X, "y": y, "class_names": list(classes), "feature_names": list(features)}

    return build


def _build_moons(seed: int, n_samples: int, noise: float) -> dict[str, Any]:
    from sklearn.datasets import make_moons

    X, y = make_moons(n_samples=n_samples, noise=noise, random_state=seed)
    return {
        "X": X,
        "y": y,
        "class_names": ["upper moon", "lower moon"],
        "feature_names": ["x1", "x2"],
    }


def _build_circles(seed: int, n_samples: int, noise: float, factor: float) -> dict[str, Any]:
    from sklearn.datasets import make_circles

    X, y = make_circles(n_samples=n_samples, noise=noise, factor=factor, random_state=seed)
    return {"X": X, "y": y, "class_names": ["outer", "inner"], "feature_names": ["x1", "x2"]}


def _build_spiral(seed: int, n_samples: int, noise: float, n_classes: int) -> dict[str, Any]:
    X, y = raw.spiral(n_samples, noise, n_classes, seed)
    return {
        "X": X,
        "y": y,
        "class_names": [f"arm {k}" for k in range(n_classes)],
        "feature_names": ["x1", "x2"],
    }


REGISTRY: dict[str, _Spec] = {
    "digits": _Spec(
        "image",
        "8x8 handwritten digits from scikit-learn (1797 images), pixels scaled to [0, 1]",
        dict(_SPLIT_OPTIONS),
        _build_digits,
    ),
    "breast_cancer": _Spec(
        "tabular",
        "Wisconsin breast cancer diagnosis from scikit-learn (569 patients, 30 features)",
        {**_SPLIT_OPTIONS, "standardize": _STANDARDIZE},
        _build_sklearn_tabular("breast_cancer"),
    ),
    "wine": _Spec(
        "tabular",
        "Wine cultivar recognition from scikit-learn (178 wines, 13 chemical features)",
        {**_SPLIT_OPTIONS, "standardize": _STANDARDIZE},
        _build_sklearn_tabular("wine"),
    ),
    "moons": _Spec(
        "toy",
        "two interleaving half circles in 2-D (sklearn.datasets.make_moons)",
        {**_SPLIT_OPTIONS, "n_samples": _N_SAMPLES, "noise": _noise(0.2)},
        _build_moons,
    ),
    "circles": _Spec(
        "toy",
        "a small circle inside a large one in 2-D (sklearn.datasets.make_circles)",
        {
            **_SPLIT_OPTIONS,
            "n_samples": _N_SAMPLES,
            "noise": _noise(0.1),
            "factor": _Option(0.5, "a fraction in (0, 1)", _fraction),
        },
        _build_circles,
    ),
    "digits_boxes": _Spec(
        "image",
        raw.DIGITS_BOXES_DESCRIPTION,
        {**_SPLIT_OPTIONS, **{k: _Option(*v) for k, v in raw.DIGITS_BOXES_OPTIONS.items()}},
        raw.build_digits_boxes,
    ),
    "spiral": _Spec(
        "toy",
        "interleaved 2-D spiral arms, one per class",
        {
            **_SPLIT_OPTIONS,
            "n_samples": _N_SAMPLES,
            "noise": _noise(0.2),
            "n_classes": _Option(3, "an integer in [2, 10]", lambda v: _is_int(v) and 2 <= v <= 10),
        },
        _build_spiral,
    ),
}


Spec, Option, is_int = _Spec, _Option, _is_int
