"""The relevance-flow map of one step: nodes, edges, conservation, and how to show them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["Pathways"]

#: drawing bounds: units per column and edges, whatever the model's size
DRAW_UNITS = 12
DRAW_EDGES = 60
#: a share of relevance below this counts as zero in the conservation check
TOLERANCE = 1e-4


@dataclass
class Pathways:
    """Which units carry each class's relevance, layer to layer, at one step of a study.

    Attributes
    ----------
    step : int
        The history step whose model was explained.
    granularity : str
        ``"channel"`` (conv channels and neurons) or ``"head"`` (attention heads).
    classes : list of int
        The classes explained (relevance starts at each class's logit).
    class_names : list of str
    layers : list of str
        The columns, in execution order (the output layer last; its units are the classes).
    sizes : dict of str -> int
        Units of each layer in the original model (units are named by their original index).
    removed_at : dict of str -> dict of int -> int
        Step that removed each unit gone at ``step`` (absent: alive).
    relevance : dict of int -> dict of str -> ndarray
        Per class, per layer: relevance of each original unit (NaN for a removed unit).
    edges : dict of int -> dict of (str, str) -> ndarray
        Per class, per (from layer, to layer): (from units, to units) flow, original indices.
    balance : DataFrame
        One row per class and layer: the conservation shares (see :meth:`conservation`).
    logits : dict of int -> float
        Sum over the inputs of each class's logit (the relevance that starts the pass).
    inputs : int
        Inputs per class.
    why : dict of (str, int) -> dict
        For hover text: a unit's score, rank and percentile under the step's scores, if any.
    """

    step: int
    granularity: str
    classes: list
    class_names: list
    layers: list
    sizes: dict
    removed_at: dict
    relevance: dict
    edges: dict
    balance: object
    logits: dict
    inputs: int
    rule: str = "epsilon"
    why: dict = field(default_factory=dict)
    unmapped: dict = field(default_factory=dict)
    top: int | None = None
    #: True when the last column is the output layer (its units are the classes)
    output: bool = True

    # ------------------------------------------------------------------ tables
    def class_name(self, c: int) -> str:
        return str(self.class_names[c]) if c < len(self.class_names) else str(c)

    def to_frame(self):
        """``(nodes, edges)`` DataFrames.

        nodes: ``class``, ``layer``, ``unit`` (original index), ``relevance`` (summed over the
        inputs), ``share`` (of the class's logit), ``kept``, ``removed_at`` (the step that
        removed it; NaN when kept), ``reason`` (why ``relevance`` is NaN).
        edges: ``class``, ``from_layer``, ``from_unit``, ``to_layer``, ``to_unit``, ``flow``,
        ``share`` (of the class's logit). Only edges with a non-zero flow are listed.
        """
        import pandas as pd

        rows = []
        for c in self.classes:
            logit = self.logits[c]
            for layer in self.layers:
                gone = self.removed_at.get(layer, {})
                for u, r in enumerate(self.relevance[c][layer]):
                    removed = gone.get(u)
                    rows.append({"class": self.class_name(c), "layer": layer, "unit": u,
                                 "relevance": float(r),
                                 "share": float(r / logit) if logit else np.nan,
                                 "kept": removed is None,
                                 "removed_at": np.nan if removed is None else removed,
                                 "reason": self._reason(removed, r)})
        nodes = pd.DataFrame(rows, columns=["class", "layer", "unit", "relevance", "share",
                                            "kept", "removed_at", "reason"])
        parts = []   # vectorised: a large model has millions of connections
        for c in self.classes:
            logit = self.logits[c]
            for (a, b), m in self.edges[c].items():
                ii, jj = np.nonzero(m)
                flow = m[ii, jj].astype(float)
                parts.append(pd.DataFrame({
                    "class": self.class_name(c), "from_layer": a, "from_unit": ii,
                    "to_layer": b, "to_unit": jj, "flow": flow,
                    "share": flow / logit if logit else np.nan}))
        columns = ["class", "from_layer", "from_unit", "to_layer", "to_unit", "flow", "share"]
        edges = (pd.concat(parts, ignore_index=True)[columns] if parts
                 else pd.DataFrame(columns=columns))
        return nodes, edges

    def _reason(self, removed, r) -> str:
        if removed is not None:
            return f"removed at step {removed}: carries no relevance"
        if np.isnan(r):
            return (f"not among the top {self.top} units of the layer" if self.top
                    else "the layer does not run at this step")
        return ""

    def conservation(self):
        """Per class and layer, where the relevance arriving at the layer goes, as shares of it:

        ``flow_share`` (drawn edges to earlier columns), ``skip_share`` (the part of it that
        skips the nearest earlier column through a residual connection), ``input_share`` (to
        the model's input), ``bias_share`` (absorbed by the layer's bias and the rule's
        stabiliser), ``between_share`` (absorbed by biases of layers between the columns, e.g.
        an MLP inside a transformer block), ``unmapped_share`` (reaches an earlier column but
        not drawn as edges), ``out_share`` (edges leaving the layer over its relevance: 1
        when everything it received went on to later columns), ``edge_error`` and
        ``conserved`` (the shares add up to 1 and the edges add up to the layer-wise totals).
        """
        return self.balance.copy()

    @property
    def conserved(self) -> bool:
        """True when every layer's shares add up (see :meth:`conservation`)."""
        return bool(self.balance["conserved"].all())

    def summary(self) -> dict:
        """Headline numbers: layers, units, edges, the largest bias share, and conservation."""
        b = self.balance
        finite = b["bias_share"].replace([np.inf, -np.inf], np.nan).dropna()
        return {"step": self.step, "granularity": self.granularity,
                "classes": [self.class_name(c) for c in self.classes], "inputs": self.inputs,
                "layers": len(self.layers), "units": int(sum(self.sizes.values())),
                "removed_units": int(sum(len(v) for v in self.removed_at.values())),
                "max_bias_share": float(finite.abs().max()) if len(finite) else np.nan,
                "max_edge_error": float(b["edge_error"].max()) if len(b) else np.nan,
                "conserved": self.conserved}

    def top_units(self, c: int | None = None, k: int = DRAW_UNITS, *,
                  removed: int = 0) -> dict[str, list[int]]:
        """The ``k`` units of each layer with the largest |relevance| (for class ``c``, or
        summed over the classes), plus up to ``removed`` removed units (most recently
        removed first) so a drawing shows what pruning took."""
        out = {}
        for layer in self.layers:
            r = self._layer_relevance(layer, c)
            order = np.argsort(-np.nan_to_num(np.abs(r), nan=-1.0), kind="stable")
            out[layer] = [int(u) for u in order if np.isfinite(r[u])][:k]
            gone = self.removed_at.get(layer, {})
            out[layer] += sorted(gone, key=lambda u: (-gone[u], u))[:removed]
        return out

    def _layer_relevance(self, layer: str, c: int | None) -> np.ndarray:
        if c is not None:
            return self.relevance[c][layer]
        return np.sum([np.nan_to_num(self.relevance[k][layer]) for k in self.classes], axis=0) \
            + np.where(np.isnan(self.relevance[self.classes[0]][layer]), np.nan, 0.0)

    def layer_edges(self, c: int | None = None) -> dict[tuple[str, str], np.ndarray]:
        """Edges for class ``c`` (or summed over the classes)."""
        if c is not None:
            return self.edges[c]
        out: dict = {}
        for k in self.classes:
            for key, m in self.edges[k].items():
                out[key] = out.get(key, 0) + m
        return out

    def why_row(self, layer: str, unit: int) -> dict:
        """What the map knows about one unit: relevance per class, kept or removed (and when),
        and its score, rank and percentile under the step's scores when there are any."""
        removed = self.removed_at.get(layer, {}).get(int(unit))
        row = {"layer": layer, "unit": int(unit), "kept": removed is None,
               "removed_at": removed}
        for c in self.classes:
            row[f"relevance[{self.class_name(c)}]"] = float(self.relevance[c][layer][unit])
        row.update(self.why.get((layer, int(unit)), {}))
        return row

    # ------------------------------------------------------------------ views
    def plot(self, ax=None, *, cls: int | str | None = None, top: int = DRAW_UNITS,
             edges: int = DRAW_EDGES, units: dict[str, list[int]] | None = None,
             mark: set | None = None):
        """Layers as columns, units as circles sized by |relevance| (red: positive evidence,
        blue: negative; hollow: removed), the ``edges`` largest flows as lines with width
        proportional to the flow. ``cls`` picks one class (default: the sum over the classes);
        ``units`` (layer -> original unit indices) fixes which units are drawn; units in
        ``mark`` ((layer, unit) pairs, e.g. removed later) get an orange ring.
        Returns the figure; save it as SVG or PNG with ``fig.savefig("map.svg")``."""
        from .draw import plot_pathways

        return plot_pathways(self, ax=ax, cls=self._class_index(cls), top=top, edges=edges,
                             units=units, mark=mark)

    def _class_index(self, cls) -> int | None:
        from ...core.errors import ConfigError

        if cls is None:
            return None
        names = [self.class_name(c) for c in self.classes]
        if isinstance(cls, str) and cls in names:
            return self.classes[names.index(cls)]
        if isinstance(cls, (int, np.integer)) and not isinstance(cls, bool) and \
                int(cls) in self.classes:
            return int(cls)
        raise ConfigError.bad_value("Pathways.plot", "cls", f"one of {self.classes} or "
                                    f"{names}", cls)

    def to_html(self, *, top: int = DRAW_UNITS, edges: int = DRAW_EDGES,
                cls: int | str | None = None, units: dict | None = None) -> str:
        """A self-contained interactive SVG view (no network): hover a unit to see its
        why-row, click a class to re-colour the map by that class's relevance (painted for
        ``cls`` to begin with; the view needs no script to show that)."""
        from .html import pathways_html

        return pathways_html(self, top=top, edges=edges, cls=self._class_index(cls),
                             units=units)

    def _repr_html_(self) -> str:
        return self.to_html()

    def save_html(self, path: str | Path, *, top: int = DRAW_UNITS,
                  edges: int = DRAW_EDGES) -> Path:
        """Write :meth:`to_html` as a standalone page, atomically (the old file survives any
        failure); returns the path."""
        from ...core.atomic import check_target, write_text
        from .html import standalone_page

        call = "Pathways.save_html"
        path = check_target(path, call=call)
        return write_text(path, standalone_page(self, self.to_html(top=top, edges=edges)),
                          call=call)

    def __repr__(self) -> str:
        s = self.summary()
        return (f"Pathways(step={self.step}, granularity={self.granularity!r}, "
                f"classes={s['classes']}, layers={s['layers']}, units={s['units']}, "
                f"removed={s['removed_units']}, conserved={s['conserved']})")
