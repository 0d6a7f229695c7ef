"""Ground truth of ``digits_boxes``: where each image's evidence lies (see :mod:`.raw`).

Each image holds one 8x8 digit on a larger canvas among shuffled distractor patches; the box
``(row0, col0, row1, col1)`` (end-exclusive) where the digit was pasted is the only place that
holds evidence of the class. :func:`boxes` gives a split's boxes, rebuilt from the bundle's
``source``, so grounding (the share of relevance inside the box) becomes a number.

Examples
--------
>>> data = load(n_samples=60, canvas=16)
>>> data.input_shape, data.source["name"], boxes(data, "test").shape
((1, 16, 16), 'digits_boxes', (12, 4))
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..core.errors import ConfigError
from . import bundled
from .raw import DIGITS_BOXES_DESCRIPTION as DESCRIPTION
from .raw import DIGITS_BOXES_OPTIONS, build_digits_boxes, generate_digits_boxes
from .split import DataBundle

__all__ = ["load", "boxes", "build_digits_boxes", "DESCRIPTION"]


def load(seed: int = 0, **options: Any) -> DataBundle:
    """The ``digits_boxes`` :class:`~xprune_nb.data.public.DataBundle` (60/20/20 stratified splits,
    pixels in [0, 1]): the same as ``xprune_nb.data.public.load("digits_boxes", ...)``.

    Options: ``n_samples`` (2000), ``canvas`` (24: 16, 24 or 32 pixels), ``distractors`` (3
    patches), ``grid`` (4: the digit's corner on multiples of it), ``noise`` (0.05, background
    level), ``val_size``/``test_size`` (0.2).

    Examples
    --------
    >>> load(n_samples=60).input_shape
    (1, 24, 24)
    """
    return bundled.load("digits_boxes", seed=seed, **options)


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
    options = {k: source.get(k, v[0]) for k, v in DIGITS_BOXES_OPTIONS.items()}
    _, _, box = generate_digits_boxes(int(source["seed"]), **options)
    out = box[index.numpy()]
    if rows is not None:
        idx = np.asarray(rows, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(out)):
            raise ConfigError.bad_value(call, "rows", f"indices in [0, {len(out)})", rows)
        out = out[idx]
    return out.copy()
