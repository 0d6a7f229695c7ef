"""Which channels each sliced path keeps: class-wise relevance, subsets and their clustering.

Per channel group after the branch point, every class has a relevance vector (one number per
channel, from a class-aware criterion such as ``lrp``), normalised so that each class's
relevance sums to one in absolute value within the group. A class subset keeps, in each group,
the ``keep`` fraction of channels with the largest summed relevance over its classes.

There are ``C(classes, k)`` possible top-``k`` subsets; a path per subset would split a mixed
batch into many tiny groups and cache many copies of the tail. Subsets are therefore clustered
into at most ``max_paths`` paths, k-means style: a path keeps the channels with the largest
relevance summed over its member subsets' classes (weighted by how often the branch predicts
each subset on the training data), and a subset joins the path that retains most of its
relevance. That retained share is linear in the classes, so one matrix ``affinity`` (paths x
classes) routes *any* subset, seen in training or not: ``argmax_p sum_{c in S} affinity[p, c]``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import torch

__all__ = ["normalise_relevance", "keep_count", "kept_channels", "affinity_of",
           "cluster_subsets"]


def normalise_relevance(per_group: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each class's relevance divided by its absolute sum within the group (float64), so
    groups and classes weigh alike when relevance is summed across them.

    Examples
    --------
    >>> import torch
    >>> normalise_relevance({"g": torch.tensor([[1.0, 3.0]])})["g"].tolist()
    [[0.25, 0.75]]
    """
    out = {}
    for key, t in per_group.items():
        t = t.double()
        scale = t.abs().sum(1, keepdim=True)
        out[key] = torch.where(scale > 0, t / scale.clamp(min=1e-300), torch.zeros_like(t))
    return out


def keep_count(size: int, keep: float) -> int:
    """Channels kept of ``size`` at fraction ``keep``: rounded up, at least one.

    Examples
    --------
    >>> keep_count(64, 0.5), keep_count(3, 0.1)
    (32, 1)
    """
    return max(1, min(size, math.ceil(keep * size - 1e-9)))


def kept_channels(relevance: dict[str, torch.Tensor], weights: torch.Tensor,
                  keep: float) -> dict[str, list[int]]:
    """Per group, the sorted indices of the ``keep`` fraction of channels with the largest
    relevance weighted by ``weights`` (one weight per class). Ties go to the lower index, so
    the choice is deterministic."""
    w = weights.double()
    kept = {}
    for key, r in relevance.items():
        score = w @ r
        order = torch.sort(score, descending=True, stable=True).indices
        kept[key] = sorted(order[: keep_count(r.shape[1], keep)].tolist())
    return kept


def affinity_of(relevance: dict[str, torch.Tensor],
                paths: Sequence[dict[str, list[int]]]) -> torch.Tensor:
    """(paths, classes): the share of each class's relevance that each path keeps, averaged
    over groups."""
    rows = []
    for kept in paths:
        parts = [r[:, kept[key]].sum(1) for key, r in relevance.items()]
        rows.append(torch.stack(parts).mean(0))
    return torch.stack(rows).float()


def _indicator(subset: tuple[int, ...], num_classes: int) -> torch.Tensor:
    v = torch.zeros(num_classes, dtype=torch.float64)
    v[list(subset)] = 1.0
    return v


def cluster_subsets(relevance: dict[str, torch.Tensor], subsets: Counter, num_classes: int,
                    keep: float, max_paths: int, iterations: int = 20) -> dict:
    """Cluster the observed top-k ``subsets`` (subset -> count) into at most ``max_paths``
    paths. Deterministic: subsets are visited in (descending count, subset) order.

    Returns ``{"paths": [{"kept": {group: [...]}, "classes": [...], "weights": [...]}],
    "affinity": (P, C)
    tensor, "subsets": [{"classes": [...], "path": p, "count": n}]}``; paths with identical
    kept channels are merged (with ``keep=1.0`` there is a single path).
    """
    order = sorted(subsets, key=lambda s: (-subsets[s], s))
    ind = torch.stack([_indicator(s, num_classes) for s in order])  # (S, C)
    counts = torch.tensor([float(subsets[s]) for s in order], dtype=torch.float64)

    def build(weights: list[torch.Tensor]) -> tuple[list[dict], torch.Tensor]:
        kept = [kept_channels(relevance, w, keep) for w in weights]
        return kept, affinity_of(relevance, kept).double()

    if len(order) <= max_paths:
        weights = list(ind)
        kept, aff = build(weights)
    else:
        # weighted farthest-point start: the most frequent subset, then the subset that the
        # paths so far serve worst, weighted by how often it occurs
        weights = [ind[0]]
        kept, aff = build(weights)
        while len(weights) < max_paths:
            retained = (ind @ aff.T).amax(1) / ind.sum(1)
            loss = counts * (1 - retained)
            if float(loss.max()) <= 0:
                break
            weights.append(ind[int(loss.argmax())])
            kept, aff = build(weights)
        assign = None
        for _ in range(iterations):
            new = (ind @ aff.T).argmax(1)
            if assign is not None and torch.equal(new, assign):
                break
            assign = new
            for p in range(len(weights)):
                members = assign == p
                if members.any():  # an empty cluster keeps its previous channels
                    weights[p] = (counts[members, None] * ind[members]).sum(0)
            kept, aff = build(weights)
    # merge paths that ended up keeping the same channels
    unique: list[int] = []
    for p, k in enumerate(kept):
        if all(k != kept[q] for q in unique):
            unique.append(p)
    weights = [weights[p] for p in unique]
    kept, aff = build(weights)
    assign = (ind @ aff.T).argmax(1)
    paths = []
    for w, k in zip(weights, kept, strict=True):
        classes = [int(c) for c in torch.sort(w, descending=True, stable=True).indices
                   if w[c] > 0]
        paths.append({"kept": k, "classes": classes,
                      "weights": [float(v) for v in (w / w.sum()).tolist()]})
    table = [{"classes": list(s), "path": int(assign[i]), "count": int(subsets[s])}
             for i, s in enumerate(order)]
    return {"paths": paths, "affinity": aff.float(), "subsets": table}
