"""Per-layer amounts from a sensitivity table: greedy by damage per unit of cost saved.

Each group's sensitivity rows give, at a few amounts, what pruning that group alone saves (MACs
or parameters) and what it costs (damage: accuracy lost, plus drift gained when drift is
constrained). Between the measured amounts both are interpolated linearly. The allocation then
repeatedly takes the move (one group to a larger amount) with the least damage per unit saved
until the savings add up to what the round needs, stopping at the smallest amount of the last
group that gets there (AMC and NetAdapt allocate per-layer ratios in the same spirit, with a
learned agent and with short-term fine-tuning instead of this table).

Examples
--------
>>> rows = [{"layer": "a", "amount": 0.5, "saved": 50.0, "damage": 0.10},
...         {"layer": "b", "amount": 0.5, "saved": 50.0, "damage": 0.01}]
>>> allocate(rows, need=25.0)
{'b': 0.25}
"""

from __future__ import annotations

import math
from collections.abc import Iterable

__all__ = ["allocate", "RESOLUTION", "damage_of"]

#: Amounts are allocated in steps of this fraction of a group's alive units.
RESOLUTION = 0.025


def damage_of(row: dict, baseline: dict, *, drift_weight: float = 0.0,
              loss_weight: float = 0.05) -> float:
    """Damage of one sensitivity row against the unpruned baseline: accuracy lost, plus a
    little loss gained (it separates candidates of equal accuracy), plus ``drift_weight``
    times the drift gained; NaN rows (e.g. a selection that would empty a layer) are
    infinitely damaging."""
    acc, loss, drift = row.get("accuracy"), row.get("loss"), row.get("drift")
    if acc is None or not math.isfinite(acc):
        return math.inf
    out = max(0.0, baseline["accuracy"] - acc)
    if loss is not None and math.isfinite(loss):
        out += loss_weight * max(0.0, loss - baseline["loss"])
    if drift_weight and drift is not None and math.isfinite(drift):
        out += drift_weight * max(0.0, drift - baseline.get("drift", 0.0))
    return out


def _curves(rows: Iterable[dict], max_amount: float) -> dict[str, list[tuple[float, float, float]]]:
    """Per group: (amount, saved, damage) at the grid of RESOLUTION, monotone in the amount."""
    points: dict[str, list[tuple[float, float, float]]] = {}
    for r in rows:
        points.setdefault(r["layer"], []).append((float(r["amount"]), float(r["saved"]),
                                                  float(r["damage"])))
    curves = {}
    for layer, pts in points.items():
        pts = sorted(p for p in pts if p[0] <= max_amount + 1e-12)
        known = [(0.0, 0.0, 0.0)]
        for a, s, d in pts:
            if not math.isfinite(d) or not math.isfinite(s):
                break                  # nothing beyond an amount that can't be evaluated
            # more removed never saves less nor harms less (sampling noise aside)
            known.append((a, max(s, known[-1][1]), max(d, known[-1][2])))
        grid = []
        steps = int(round(known[-1][0] / RESOLUTION))
        for i in range(1, steps + 1):
            a = min(i * RESOLUTION, known[-1][0])
            for (a0, s0, d0), (a1, s1, d1) in zip(known, known[1:]):
                if a0 <= a <= a1 + 1e-12:
                    t = (a - a0) / (a1 - a0) if a1 > a0 else 1.0
                    grid.append((a, s0 + t * (s1 - s0), d0 + t * (d1 - d0)))
                    break
        curves[layer] = grid
    return curves


def allocate(rows: Iterable[dict], need: float, *, max_amount: float = 0.9) -> dict[str, float]:
    """Per-group amounts whose predicted savings add up to ``need``, least damage first.

    Parameters
    ----------
    rows : iterable of dict
        ``layer``, ``amount``, ``saved`` (cost saved when that group alone is pruned by that
        amount) and ``damage`` (see :func:`damage_of`).
    need : float
        Cost to save this round (same unit as ``saved``).
    max_amount : float
        No group loses more than this fraction of its alive units in one round.

    Returns
    -------
    dict[str, float]
        Group -> amount (groups left alone are absent). Saves less than ``need`` when every
        group is at its largest amount.
    """
    curves = _curves(rows, max_amount)
    level = {layer: -1 for layer in curves}      # index into the grid; -1: untouched
    saved = 0.0
    while saved < need:
        best = None
        for layer, grid in curves.items():
            s_now = grid[level[layer]][1] if level[layer] >= 0 else 0.0
            d_now = grid[level[layer]][2] if level[layer] >= 0 else 0.0
            for j in range(level[layer] + 1, len(grid)):
                gain = grid[j][1] - s_now
                if gain <= 0:
                    continue
                ratio = (grid[j][2] - d_now) / gain
                if best is None or ratio < best[0] - 1e-15:
                    best = (ratio, layer, j, gain)
        if best is None:
            break
        _, layer, j, gain = best
        s_now = grid_s = curves[layer][level[layer]][1] if level[layer] >= 0 else 0.0
        # the smallest step of this group that covers what is still needed
        for k in range(level[layer] + 1, j + 1):
            if saved + curves[layer][k][1] - grid_s >= need:
                j, gain = k, curves[layer][k][1] - s_now
                break
        level[layer] = j
        saved += gain
    return {layer: round(curves[layer][lv][0], 6) for layer, lv in level.items() if lv >= 0}
