"""Seeded reference samples of any split: the one call a study makes for the examples it
scores, probes or explains (tensors or a user's own loader alike).

Examples
--------
>>> import torch
>>> from xprune_nb.data import Split
>>> split = Split(torch.randn(9, 2), torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2]))
>>> x, y = draw(split, 6, seed=0)
>>> sorted(torch.bincount(y).tolist())
[2, 2, 2]
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .batch import take
from .convert import check_samples
from .sampling import stratified_indices
from .split import Split

__all__ = ["draw"]


def draw(split, samples: int | str | None, *, seed: int, classes: Sequence[int] | None = None,
         clip: bool = False, call: str = "Study.score", param: str = "samples",
         with_groups: bool = False):
    """``(inputs, labels)`` of ``samples`` examples of ``split`` in total (``"all"`` / ``None``:
    every example), deterministic under ``seed``, only from ``classes`` when given.
    ``with_groups`` adds a third entry: the sensitive-group codes of the same examples
    (``None`` for a split without groups; a split that streams has none).

    Tensors: stratified by class over the whole split (:func:`stratified_indices`). A user's
    loader or dataset (:class:`~xprune_nb.data.stream.StreamSplit`): seeded indices, only those
    items read, stratified when the dataset exposes its labels. ``clip`` lowers ``samples`` to
    what the split holds instead of refusing more.
    """
    n = check_samples(call, param, samples)
    if not isinstance(split, Split):
        if n is not None and clip and split.size is not None:
            n = min(n, split.size)
        drawn = split.sample(n, classes, seed=seed)
        return (*drawn, None) if with_groups else drawn
    pool = split.y if classes is None else split.y[torch.isin(split.y, torch.tensor(
        list(classes)))]
    if n is None or (clip and n > len(pool)):
        n = max(len(pool), 1)
    idx = stratified_indices(split.y, n, seed=seed, classes=classes, call=call, param=param)
    if with_groups:
        groups = getattr(split, "groups", None)
        return take(split.X, idx), split.y[idx], None if groups is None else groups[idx]
    return take(split.X, idx), split.y[idx]
