"""Choose which units to remove from their scores: global or per-layer, with overrides."""

from __future__ import annotations

import math

import torch

from ..core.errors import ConfigError, PruneError
from ..core.scores import normalize_scores

__all__ = ["select_units", "SCOPES"]

SCOPES = ("global", "layer")


def _count(amount: float, n: int) -> int:
    # round half up, so 0.5 of 3 units removes 2 like torch.nn.utils.prune does
    return int(math.floor(amount * n + 0.5))


def select_units(
    values: dict[str, torch.Tensor],
    amount: float,
    *,
    scope: str = "global",
    normalize: str | None = "mean",
    layer_amounts: dict[str, float] | None = None,
    alive: dict[str, torch.Tensor] | None = None,
    keep_sets: dict[str, list[list[int]]] | None = None,
    call: str = "Study.prune",
) -> dict[str, torch.Tensor]:
    """Indices (flat) of the least important units to remove, per group.

    Parameters
    ----------
    values : dict[str, Tensor]
        Scores per group (1-D for channels, weight-shaped for weights; flattened here).
    amount : float
        Fraction of the currently alive units to remove, in [0, 1).
    scope : {"global", "layer"}
        ``global`` ranks all units together after per-group normalisation; ``layer`` removes the
        same fraction from every group.
    layer_amounts : dict[str, float]
        Per-group fractions that override ``amount``; those groups leave the global pool.
    alive : dict[str, Tensor of bool]
        Units still present (e.g. weights not masked yet); dead ones are never chosen again and
        do not count in the fraction.
    keep_sets : dict[str, list[list[int]]]
        Extra index sets per group of which a global ranking must leave at least one unit
        (e.g. the part of a group that belongs to one branch of a concatenation).

    A global ranking never empties a group: the most important unit of a group that would be
    emptied is kept and the next least important unit elsewhere is taken instead. Explicit
    per-layer requests (``scope="layer"``, ``layer_amounts``) that empty a layer are errors.

    Ties are broken by position, so the selection is deterministic.

    Examples
    --------
    >>> import torch
    >>> sel = select_units({"a": torch.tensor([3.0, 1.0, 2.0, 4.0])}, 0.5)
    >>> sorted(sel["a"].tolist())
    [1, 2]
    """
    if scope not in SCOPES:
        raise ConfigError.unknown_name(call, "scope", SCOPES, scope)
    layer_amounts = dict(layer_amounts or {})
    flat = {k: v.detach().flatten().double() for k, v in values.items()}
    bad = [k for k, v in flat.items() if not torch.isfinite(v).all()]
    if bad:
        raise PruneError(
            f"{call}: the scores of {bad[0]!r} contain NaN or infinite values; the model or the "
            "reference data produced them. Check the model's weights and re-score."
        )
    live = {k: (alive[k].flatten().bool() if alive and k in alive
                else torch.ones(v.numel(), dtype=torch.bool)) for k, v in flat.items()}
    norm = normalize_scores(flat, normalize if scope == "global" else None, call=call)
    chosen: dict[str, torch.Tensor] = {}

    def lowest(key: str, k: int) -> torch.Tensor:
        idx = torch.nonzero(live[key]).flatten()
        order = torch.sort(norm[key][idx], stable=True).indices
        return idx[order[:k]]

    pool = [k for k in flat if k not in layer_amounts]
    for key, frac in layer_amounts.items():
        chosen[key] = lowest(key, _count(frac, int(live[key].sum())))
    if scope == "layer":
        for key in pool:
            chosen[key] = lowest(key, _count(amount, int(live[key].sum())))
    elif pool:
        chosen.update(_global_lowest(pool, norm, live, amount, keep_sets or {}))
    for key, idx in chosen.items():
        remaining = int(live[key].sum()) - len(idx)
        if remaining <= 0 and len(idx) > 0:
            raise PruneError(
                f"{call}: this request would remove every unit of {key!r} "
                f"({int(live[key].sum())} of {int(live[key].sum())}), which breaks the model. "
                "Use a smaller amount, scope='layer', a per-layer override for it "
                f"(layer_amounts={{{key!r}: 0.5}}) or ignore it (ignore=[{key!r}])."
            )
    return {k: torch.sort(v).values for k, v in chosen.items() if len(v)}


def _global_lowest(pool, norm, live, amount, keep_sets) -> dict[str, torch.Tensor]:
    keys, idxs, scores = [], [], []
    offsets = {}
    start = 0
    for gi, key in enumerate(pool):
        idx = torch.nonzero(live[key]).flatten()
        keys.append(torch.full((len(idx),), gi, dtype=torch.long))
        idxs.append(idx)
        scores.append(norm[key][idx])
        offsets[key] = (start, idx)
        start += len(idx)
    all_keys, all_idx, all_scores = torch.cat(keys), torch.cat(idxs), torch.cat(scores)
    k = _count(amount, len(all_scores))
    # stable sort: deterministic ties (by group order, then position)
    order = torch.sort(all_scores, stable=True).indices
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order))
    # sets (as positions in the flat candidate list) that must keep at least one unit
    sets = []
    for key in pool:
        first, idx = offsets[key]
        sets.append(torch.arange(first, first + len(idx)))
        position = {int(i): first + j for j, i in enumerate(idx.tolist())}
        for members in keep_sets.get(key, []):
            pos = [position[i] for i in members if i in position]
            if pos:
                sets.append(torch.tensor(pos))
    selected = torch.zeros(len(all_scores), dtype=torch.bool)
    selected[order[:k]] = True
    protected = torch.zeros_like(selected)
    for _ in range(len(sets) + 1):
        violated = [s for s in sets if len(s) and bool(selected[s].all())]
        if not violated:
            break
        for s in violated:
            keep = s[torch.argmax(rank[s])]        # the set's most important unit stays
            selected[keep] = False
            protected[keep] = True
        missing = k - int(selected.sum())
        free = order[~selected[order] & ~protected[order]]
        selected[free[:missing]] = True
    out = {}
    for gi, key in enumerate(pool):
        out[key] = all_idx[selected & (all_keys == gi)]
    return out
