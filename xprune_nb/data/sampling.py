"""Seeded, deterministic reference samples and mini-batches of a split."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from ..core.errors import ConfigError
from .batch import take
from .split import Split

__all__ = ["stratified_indices", "stratified_order", "batches"]


def stratified_indices(
    y: torch.Tensor, n: int, *, seed: int, classes: Sequence[int] | None = None,
    call: str = "Study.score", param: str = "samples",
) -> torch.Tensor:
    """Pick ``n`` example indices in total, spread over the classes as evenly as possible.

    Deterministic under ``seed``. With ``classes``, only examples of those classes are drawn.

    Examples
    --------
    >>> import torch
    >>> y = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2])
    >>> idx = stratified_indices(y, 6, seed=0)
    >>> sorted(torch.bincount(y[idx]).tolist())
    [2, 2, 2]
    """
    present = sorted(set(y.tolist()))
    wanted = present if classes is None else list(classes)
    missing = [c for c in wanted if c not in present]
    if missing:
        raise ConfigError.bad_value(call, "classes", f"classes present in the data {present}",
                                    list(classes))
    pools = {c: torch.nonzero(y == c).flatten() for c in wanted}
    available = sum(len(p) for p in pools.values())
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise ConfigError.bad_value(call, param, "a positive integer", n)
    if n > available:
        raise ConfigError.bad_value(
            call, param, f"at most {available} (the examples available"
            + (f" in classes {wanted})" if classes is not None else ")"), n
        )
    gen = torch.Generator().manual_seed(int(seed))
    perms = {c: p[torch.randperm(len(p), generator=gen)] for c, p in pools.items()}
    # Round-robin over classes so every class gets its share; small classes run out first.
    taken = {c: 0 for c in wanted}
    picked: list[int] = []
    while len(picked) < n:
        for c in wanted:
            if len(picked) == n:
                break
            if taken[c] < len(perms[c]):
                picked.append(int(perms[c][taken[c]]))
                taken[c] += 1
    return torch.tensor(sorted(picked), dtype=torch.long)


def stratified_order(labels: torch.Tensor, *, generator: torch.Generator) -> torch.Tensor:
    """A seeded order of all positions whose every prefix is spread over the classes as
    evenly as possible (round-robin over per-class permutations; small classes run out first).

    Examples
    --------
    >>> import torch
    >>> y = torch.tensor([0, 0, 0, 0, 1, 1])
    >>> order = stratified_order(y, generator=torch.Generator().manual_seed(0))
    >>> y[order[:4]].tolist()
    [0, 1, 0, 1]
    """
    pools = [torch.nonzero(labels == c).flatten() for c in torch.unique(labels).tolist()]
    perms = [p[torch.randperm(len(p), generator=generator)] for p in pools]
    width = max(len(p) for p in perms)
    # rank of each position within its class, then class: sorting by (rank, class) interleaves
    table = torch.full((width, len(perms)), -1, dtype=torch.long)
    for c, p in enumerate(perms):
        table[:len(p), c] = p
    flat = table.flatten()
    return flat[flat >= 0]


def batches(split: Split, batch_size: int, *, shuffle: bool = False,
            generator: torch.Generator | None = None
            ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(X, y)`` mini-batches of a split (in order, or shuffled with ``generator``).

    A user's loader or dataset (:class:`~xprune_nb.data.stream.StreamSplit`) gives the batches
    of its bounded sample, or with every example asked for, reads them in order without
    holding them all."""
    if hasattr(split, "iter_batches"):
        yield from split.iter_batches(batch_size)
        return
    n = len(split)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        yield take(split.X, idx), split.y[idx]
