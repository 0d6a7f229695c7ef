"""``digits_boxes``: a seeded, offline image set whose evidence has a known place.

Each image is a ``canvas`` x ``canvas`` grey canvas with one 8x8 scikit-learn digit pasted at a
random position (its corner on a multiple of ``grid`` pixels: with the default 4, on the patch
grid of a ViT with 4x4 patches, which then learns the task in a few epochs; ``grid=1`` places it
anywhere, which a small ViT learns far more slowly), and ``distractors`` 4x4 patches cut
from *other* digits with their pixels shuffled (same ink statistics, no shape, no class) pasted
where they don't touch the digit, on faint uniform noise. The label is the digit's class; the
box ``(row0, col0, row1, col1)`` (end-exclusive) is where the digit was pasted: the only place
that holds evidence of the class.
So whether a model "still looks at what matters" after pruning becomes a number: the share of
its relevance inside the box (:func:`xprune_nb.explain.grounding.relevance_mass_in_box`).

Everything is generated from ``seed`` with NumPy's frozen ``RandomState`` stream: same seed and
options, same images and boxes, on any machine, without a download.

Examples
--------
>>> raw = build_digits_boxes(seed=0, n_samples=40, canvas=16, distractors=2, grid=1)
>>> raw["X"].shape, raw["boxes"].shape, raw["boxes"][0].tolist()
((40, 1, 16, 16), (40, 4), [5, 3, 13, 11])
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from .errors import ConfigError

__all__ = ["build_digits_boxes", "load", "boxes", "DESCRIPTION", "OPTIONS"]

DESCRIPTION = ("an 8x8 scikit-learn digit at a random place on a larger canvas among shuffled "
               "distractor patches, with the digit's box (xprune_nb._ground_truth.boxes)")
_DIGIT, _PATCH = 8, 4

#: option -> (default, allowed text, check); datasets registers them with its own Option type
OPTIONS: dict[str, tuple[Any, str, Any]] = {
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
def _generate(seed: int, n_samples: int, canvas: int, distractors: int, noise: float,
              grid: int):
    from ._dataset_builders import _sklearn_raw

    digits, labels, _, _ = _sklearn_raw("digits")
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
    X, y, box = _generate(int(seed), int(n_samples), int(canvas), int(distractors),
                          float(noise), int(grid))
    return {"X": X, "y": y, "boxes": box, "class_names": [str(i) for i in range(10)],
            "feature_names": None}


def load(seed: int = 0, **options: Any):
    """The ``digits_boxes`` :class:`~xprune_nb.datasets.DataBundle` (60/20/20 stratified splits,
    pixels in [0, 1]); the same as ``xprune_nb.datasets.load("digits_boxes", ...)`` once the
    dataset is registered there, which this defers to when it is.

    Options: ``n_samples`` (2000), ``canvas`` (24: 16, 24 or 32 pixels), ``distractors`` (3
    patches), ``grid`` (4: the digit's corner on multiples of it), ``noise`` (0.05, background
    level), ``val_size``/``test_size`` (0.2).

    Examples
    --------
    >>> data = load(n_samples=60, canvas=16)
    >>> data.input_shape, data.source["name"], boxes(data, "test").shape
    ((1, 16, 16), 'digits_boxes', (12, 4))
    """
    import torch

    from . import datasets
    from ._dataset_builders import REGISTRY, Option, Spec

    if "digits_boxes" in REGISTRY:
        return datasets.load("digits_boxes", seed=seed, **options)
    spec = Spec("image", DESCRIPTION, {**{k: REGISTRY["digits"].options[k]
                                          for k in ("val_size", "test_size")},
                                       **{k: Option(*v) for k, v in OPTIONS.items()}},
                build_digits_boxes)
    resolved = datasets._validate("digits_boxes", spec, seed, options)
    raw = build_digits_boxes(seed=int(seed), **{k: resolved[k] for k in OPTIONS})
    index = datasets._stratified_split(raw["y"], resolved["val_size"], resolved["test_size"],
                                       int(seed))
    splits = {part: datasets.Split(torch.tensor(raw["X"][idx], dtype=torch.float32),
                                   torch.tensor(raw["y"][idx]), torch.tensor(idx))
              for part, idx in zip(("train", "val", "test"), index)}
    return datasets.DataBundle(
        name="digits_boxes", **splits, input_shape=tuple(raw["X"].shape[1:]), num_classes=10,
        class_names=raw["class_names"], feature_names=None, kind="image",
        source={"name": "digits_boxes", "seed": int(seed), **resolved},
        description=DESCRIPTION)


def boxes(data, split: str = "test", rows=None) -> np.ndarray:
    """The evidence boxes ``(row0, col0, row1, col1)`` of a ``digits_boxes`` split, one per row
    (optionally only ``rows``, indices into the split), rebuilt from ``data.source``.

    Raises
    ------
    ConfigError
        ``data`` is not a ``digits_boxes`` bundle (or a study's data built from one).

    Examples
    --------
    >>> data = load(n_samples=60)
    >>> boxes(data, "test", rows=[0, 1]).tolist()
    [[16, 16, 24, 24], [0, 4, 8, 12]]
    """
    import torch

    call = "boxes"
    data = getattr(data, "data", data)            # a Study: its data
    source = getattr(data, "source", None) or {}
    if source.get("name") != "digits_boxes":
        raise ConfigError.bad_value(call, "data", "the digits_boxes dataset (only it has "
                                    "ground-truth boxes)", source.get("name", type(data).__name__))
    part = data.split(split)
    index = part.index
    if index is None:
        # a study keeps the rows but not their positions: the split is rebuilt from the source
        rebuilt = load(**{k: v for k, v in source.items() if k != "name"}).split(split)
        if not torch.equal(rebuilt.y, part.y):
            raise ConfigError.bad_value(call, "data", f"the {split} split of the digits_boxes "
                                        "data its source describes", "rows that differ")
        index = rebuilt.index
    options = {k: source.get(k, v[0]) for k, v in OPTIONS.items()}
    _, _, box = _generate(int(source["seed"]), **options)
    out = box[index.numpy()]
    if rows is not None:
        idx = np.asarray(rows, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(out)):
            raise ConfigError.bad_value(call, "rows", f"indices in [0, {len(out)})", rows)
        out = out[idx]
    return out.copy()
