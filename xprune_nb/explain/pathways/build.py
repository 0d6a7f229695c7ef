"""Turn the flow of one model (current unit indices) into a :class:`Pathways` (original
unit indices, removed units, conservation shares)."""

from __future__ import annotations

import numpy as np

from .flow import FlowTotals, NodeSpec
from .result import TOLERANCE, Pathways

__all__ = ["assemble", "balance_rows"]


def _expand(values: np.ndarray, ids: list[int], size: int, fill: float) -> np.ndarray:
    out = np.full(size, fill, dtype=float)
    out[np.asarray(ids, dtype=int)] = values[: len(ids)]
    return out


def balance_rows(c_name: str, totals: FlowTotals, specs: list[NodeSpec]) -> list[dict]:
    """Conservation shares of every layer for one class (see ``Pathways.conservation``)."""
    rows = []
    order = totals.order or [s.name for s in specs]
    position = {name: i for i, name in enumerate(order)}
    leaving: dict[str, float] = {}
    for (a, _b), m in totals.edges.items():
        leaving[a] = leaving.get(a, 0.0) + float(m.sum())
    for name in order:
        r = float(totals.relevance[name].sum())
        r_in = totals.to_inputs.get(name, 0.0)
        preds = totals.from_inputs.get(name, {})
        drawn = {p: float(totals.edges[(p, name)].sum()) for p in preds
                 if (p, name) in totals.edges}
        nearest = max(preds, key=lambda p: position.get(p, -1)) if preds else None
        to_x = totals.to_model_input.get(name, 0.0)
        between = r_in - sum(preds.values()) - to_x
        unmapped = sum(v for p, v in preds.items() if p not in drawn)
        error = max([totals.edge_error.get((p, name), 0.0) for p in drawn] + [0.0])

        def share(v: float, r=r) -> float:
            return v / r if r else (0.0 if abs(v) < 1e-12 else np.nan)

        row = {"class": c_name, "layer": name, "relevance": r,
               "flow_share": share(sum(drawn.values())),
               "skip_share": share(sum(v for p, v in drawn.items() if p != nearest)),
               "input_share": share(to_x), "bias_share": share(r - r_in),
               "between_share": share(between), "unmapped_share": share(unmapped),
               "out_share": share(leaving[name]) if name in leaving else np.nan,
               "edge_error": error}
        total = (row["flow_share"] + row["input_share"] + row["bias_share"]
                 + row["between_share"] + row["unmapped_share"])
        row["conserved"] = bool(np.isfinite(total) and abs(total - 1.0) < TOLERANCE
                                and error < TOLERANCE) or (r == 0 and not drawn)
        rows.append(row)
    return rows


def assemble(*, step: int, granularity: str, specs: list[NodeSpec], flows: dict[int, FlowTotals],
             ids: dict[str, list[int] | None], sizes: dict[str, int],
             removed_at: dict[str, dict[int, int]], class_names: list, inputs: int,
             rule: str, why: dict, top: int | None,
             module_order: list[str] | None = None) -> Pathways:
    import pandas as pd

    classes = list(flows)
    first = flows[classes[0]]
    present = first.order or [s.name for s in specs]
    layers = _with_gone(present, [n for n in sizes if n not in present], module_order or [])
    relevance, edges, rows, logits, unmapped = {}, {}, [], {}, {}
    for c in classes:
        t = flows[c]
        logits[c] = t.logit
        relevance[c] = {}
        for name in layers:
            got = t.relevance.get(name)
            layer_ids = ids.get(name)
            if got is None or layer_ids is None:
                relevance[c][name] = np.full(sizes[name], np.nan)
            else:
                relevance[c][name] = _expand(got, layer_ids, sizes[name], np.nan)
        edges[c] = {}
        for (a, b), m in t.edges.items():
            full = np.zeros((sizes[a], sizes[b]))
            ia, ib = np.asarray(ids[a], dtype=int), np.asarray(ids[b], dtype=int)
            full[np.ix_(ia, ib)] = m[: len(ia), : len(ib)]
            edges[c][(a, b)] = full
        name = str(class_names[c]) if c < len(class_names) else str(c)
        rows += balance_rows(name, t, specs)
        unmapped.update(t.unmapped)
    pathways = Pathways(step=step, granularity=granularity, classes=classes,
                        class_names=list(class_names), layers=layers, sizes=dict(sizes),
                        removed_at=removed_at, relevance=relevance, edges=edges,
                        balance=pd.DataFrame(rows), logits=logits, inputs=inputs, rule=rule,
                        why=why, unmapped={f"{a} -> {b}": v for (a, b), v in unmapped.items()})
    if top is not None:
        _keep_top(pathways, top)
    return pathways


def _with_gone(present: list[str], gone: list[str], module_order: list[str]) -> list[str]:
    """The columns in execution order, with layers the step no longer has (a removed block)
    put back where the original defines them (before the first later present layer)."""
    rank = {name: i for i, name in enumerate(module_order)}
    layers = list(present)
    for name in gone:
        later = [k for k, p in enumerate(layers[:-1]) if rank.get(p, -1) > rank.get(name, -1)]
        layers.insert(later[0] if later else max(len(layers) - 1, 0), name)
    return layers


def _keep_top(p: Pathways, k: int) -> None:
    """Only the ``k`` most relevant units per layer (over the classes) keep their edges and
    relevance; the others become NaN with the reason in ``to_frame``."""
    keep = p.top_units(None, k)
    for c in p.classes:
        for layer in p.layers:
            mask = np.ones(p.sizes[layer], dtype=bool)
            mask[keep[layer]] = False
            p.relevance[c][layer][mask] = np.nan
        for (a, b), m in p.edges[c].items():
            ka = np.zeros(p.sizes[a], dtype=bool)
            ka[keep[a]] = True
            kb = np.zeros(p.sizes[b], dtype=bool)
            kb[keep[b]] = True
            m[~ka, :] = 0.0
            m[:, ~kb] = 0.0
    p.top = k
