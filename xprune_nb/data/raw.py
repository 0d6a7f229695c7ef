"""Raw arrays of the bundled datasets: plain NumPy, seeded, offline.

``sklearn_raw`` reads scikit-learn's own bundled CSV files; ``spiral`` and ``digits_boxes``
are generated from a seed with NumPy's frozen ``RandomState`` stream (same seed, same arrays on
every machine). :mod:`xprune_nb.data.sources` turns them into registered datasets.

``digits_boxes``: each image is a ``canvas`` x ``canvas`` grey canvas with one 8x8 scikit-learn
digit pasted at a random position (its corner on a multiple of ``grid`` pixels: with the default
4, on the patch grid of a ViT with 4x4 patches, which then learns the task in a few epochs;
``grid=1`` places it anywhere, which a small ViT learns far more slowly), and ``distractors``
4x4 patches cut from *other* digits with their pixels shuffled (same ink statistics, no shape,
no class) pasted where they don't touch the digit, on faint uniform noise. The label is the
digit's class; the box ``(row0, col0, row1, col1)`` (end-exclusive) is where the digit was
pasted: the only place that holds evidence of the class. So whether a model "still looks at
what matters" after pruning becomes a number: the share of its relevance inside the box
(:func:`xprune_nb.explain.grounding.relevance_mass_in_box`).

Examples
--------
>>> raw = build_digits_boxes(seed=0, n_samples=40, canvas=16, distractors=2, grid=1)
>>> raw["X"].shape, raw["boxes"].shape, raw["boxes"][0].tolist()
((40, 1, 16, 16), (40, 4), [5, 3, 13, 11])
"""

from __future__ import annotations

from functools import cache, lru_cache
from typing import Any

import numpy as np

__all__ = ["sklearn_raw", "spiral", "build_digits_boxes", "generate_digits_boxes",
           "DIGITS_BOXES_DESCRIPTION", "DIGITS_BOXES_OPTIONS"]


@cache
def sklearn_raw(name: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], tuple[str, ...]]:
    # sklearn reads these from CSV files inside its own package; caching avoids re-parsing,
    # and callers copy before mutating (the arrays are marked read-only to make that certain).
    from sklearn import datasets as skd

    loader = {
        "digits": skd.load_digits,
        "breast_cancer": skd.load_breast_cancer,
        "wine": skd.load_wine,
    }[name]
    bunch = loader()
    X = np.asarray(bunch.data, dtype=np.float64)
    y = np.asarray(bunch.target, dtype=np.int64)
    X.setflags(write=False)
    y.setflags(write=False)
    features = tuple(str(f) for f in bunch.feature_names)
    classes = tuple(str(c) for c in bunch.target_names)
    return X, y, features, classes


def spiral(n_samples: int, noise: float, n_classes: int, seed: int) -> tuple[np.ndarray, ...]:
    """Interleaved spiral arms, one per class (the classic CS231n toy problem).

    Each arm starts at the origin and makes three quarters of a turn; ``noise`` is the standard
    deviation of the angular jitter in radians, so larger values blur the arms into each other.
    """
    # RandomState, not default_rng: its stream is frozen by NumPy's compatibility policy, so
    # the same seed gives the same points on every NumPy version.
    rng = np.random.RandomState(seed)
    sizes = [n_samples // n_classes + (k < n_samples % n_classes) for k in range(n_classes)]
    xs, ys = [], []
    for k, size in enumerate(sizes):
        radius = np.linspace(0.05, 1.0, size)
        angle = (
            2 * np.pi * k / n_classes + 1.5 * np.pi * radius + rng.normal(scale=noise, size=size)
        )
        xs.append(np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1))
        ys.append(np.full(size, k, dtype=np.int64))
    return np.concatenate(xs), np.concatenate(ys)


DIGITS_BOXES_DESCRIPTION = (
    "an 8x8 scikit-learn digit at a random place on a larger canvas among shuffled "
    "distractor patches, with the digit's box (xprune_nb.data.ground_truth.boxes)")
_DIGIT, _PATCH = 8, 4

#: option -> (default, allowed text, check); datasets registers them with its own Option type
DIGITS_BOXES_OPTIONS: dict[str, tuple[Any, str, Any]] = {
    "n_samples": (2000, "an integer in [30, 100000]",
                  lambda v: isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                  and 30 <= v <= 100_000),
    "canvas": (24, "one of 16, 24, 32", lambda v: v in (16, 24, 32) and not isinstance(v, bool)),
    "distractors": (3, "an integer in [0, 8]",
                    lambda v: isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                    and 0 <= v <= 8),
    "grid": (4, "one of 1, 2, 4, 8",
             lambda v: v in (1, 2, 4, 8) and not isinstance(v, bool)),
    "noise": (0.05, "a number in [0, 0.5]",
              lambda v: isinstance(v, (int, float, np.floating)) and not isinstance(v, bool)
              and 0 <= v <= 0.5),
}


def _free(rng: np.random.RandomState, canvas: int, box: tuple[int, int, int, int]
          ) -> tuple[int, int]:
    """A top-left corner for a distractor patch that doesn't touch the digit's box."""
    r0, c0, r1, c1 = box
    for _ in range(200):
        r, c = rng.randint(0, canvas - _PATCH + 1, size=2)
        if r + _PATCH <= r0 or r >= r1 or c + _PATCH <= c0 or c >= c1:
            return int(r), int(c)
    raise AssertionError("no free place for a distractor")   # canvas >= 16 always has one


@lru_cache(maxsize=4)
def generate_digits_boxes(seed: int, n_samples: int, canvas: int, distractors: int, noise: float,
              grid: int):
    digits, labels, _, _ = sklearn_raw("digits")
    digits = (digits / 16.0).reshape(-1, _DIGIT, _DIGIT)
    rng = np.random.RandomState(seed)
    pick = rng.randint(0, len(digits), size=n_samples)
    X = rng.uniform(0.0, noise, size=(n_samples, 1, canvas, canvas)) if noise else \
        np.zeros((n_samples, 1, canvas, canvas))
    box = np.zeros((n_samples, 4), dtype=np.int64)
    for i, k in enumerate(pick):
        # grid > 1 puts the digit's corner on a multiple of grid (patch-aligned for a ViT)
        r, c = rng.randint(0, (canvas - _DIGIT) // grid + 1, size=2) * grid
        box[i] = (r, c, r + _DIGIT, c + _DIGIT)
        X[i, 0, r:r + _DIGIT, c:c + _DIGIT] = np.maximum(X[i, 0, r:r + _DIGIT, c:c + _DIGIT],
                                                         digits[k])
        for _ in range(distractors):
            other = digits[rng.randint(len(digits))]
            cr, cc = rng.randint(0, _DIGIT - _PATCH + 1, size=2)
            patch = rng.permutation(other[cr:cr + _PATCH, cc:cc + _PATCH].ravel())
            pr, pc = _free(rng, canvas, tuple(box[i]))
            X[i, 0, pr:pr + _PATCH, pc:pc + _PATCH] = np.maximum(
                X[i, 0, pr:pr + _PATCH, pc:pc + _PATCH], patch.reshape(_PATCH, _PATCH))
    X.setflags(write=False)
    box.setflags(write=False)
    return X, labels[pick].astype(np.int64), box


def build_digits_boxes(seed: int, n_samples: int = 2000, canvas: int = 24,
                       distractors: int = 3, grid: int = 4, noise: float = 0.05
                       ) -> dict[str, Any]:
    """Raw arrays of ``digits_boxes`` (the dataset builder protocol, plus ``boxes``)."""
    X, y, box = generate_digits_boxes(int(seed), int(n_samples), int(canvas), int(distractors),
                          float(noise), int(grid))
    return {"X": X, "y": y, "boxes": box, "class_names": [str(i) for i in range(10)],
            "feature_names": None}
