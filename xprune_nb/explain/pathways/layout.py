"""Where each drawn unit and edge goes: one layout shared by the matplotlib plot and the SVG.

Columns are layers in execution order; each column shows its ``top`` most relevant units
(removed ones included when they rank), ordered by original index so two maps of the same
model line up; a column with more units says how many are not drawn.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:   # the result imports this module to draw itself
    from .result import Pathways


__all__ = ["Layout", "layout"]


@dataclass
class Layout:
    columns: list[str]
    nodes: list[dict]        # layer, unit, x, y, value, removed_at
    edges: list[dict]        # a, b (node indices), flow
    hidden: dict[str, int]   # units not drawn, per layer
    scale: float             # largest |relevance| drawn
    flow_scale: float


def layout(p: Pathways, cls: int | None, top: int, edges: int,
           units: dict[str, list[int]] | None = None) -> Layout:
    """Positions of the drawn units (``units``, or the ``top`` per layer plus a third as many
    removed ones) and of the ``edges`` largest flows between them."""
    shown = units if units is not None else p.top_units(cls, top, removed=max(1, top // 3))
    nodes, where = [], {}
    for x, layer in enumerate(p.layers):
        units = sorted(shown[layer])
        r = p._layer_relevance(layer, cls)
        for k, u in enumerate(units):
            y = (k + 0.5) / max(len(units), 1)
            where[(layer, u)] = len(nodes)
            label = p.class_name(u) if layer == p.layers[-1] and p.output else str(u)
            nodes.append({"layer": layer, "unit": u, "x": x, "y": y, "label": label,
                          "value": float(np.nan_to_num(r[u])),
                          "removed_at": p.removed_at.get(layer, {}).get(u)})
    # each pair of columns gets its share of the edges drawn, so early layers are not crowded
    # out by the large flows into the output layer
    pairs = p.layer_edges(cls)
    quota = max(3, -(-edges // max(len(pairs), 1)))
    flows = []
    for (a, b), m in pairs.items():
        found = [{"a": where[(a, i)], "b": where[(b, j)], "flow": float(m[i, j])}
                 for i in shown.get(a, []) for j in shown.get(b, []) if m[i, j] != 0]
        flows += sorted(found, key=lambda e: -abs(e["flow"]))[:quota]
    flows = sorted(flows, key=lambda e: -abs(e["flow"]))[:edges]
    # sizes relative to the unit's own layer: relevance is (about) conserved from layer to
    # layer, so each column shows how its share is split
    peak: dict[str, float] = {}
    for n in nodes:
        peak[n["layer"]] = max(peak.get(n["layer"], 1e-12), abs(n["value"]))
    for n in nodes:
        n["size"] = abs(n["value"]) / peak[n["layer"]]
    scale = max([abs(n["value"]) for n in nodes] + [1e-12])
    flow_scale = max([abs(e["flow"]) for e in flows] + [1e-12])
    hidden = {layer: p.sizes[layer] - len(shown[layer]) for layer in p.layers}
    return Layout(list(p.layers), nodes, flows, hidden, scale, flow_scale)
