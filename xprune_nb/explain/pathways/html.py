"""The map as self-contained SVG + HTML (no network, no external script).

Hovering a unit shows its why-row (an SVG ``<title>``, so it works even where scripts do not
run, e.g. an untrusted notebook) and fills the side panel; the class buttons re-colour nodes
and edges by that class's relevance (a few lines of inline script with the numbers embedded
as JSON). Every string from the model or the data is escaped.
"""

from __future__ import annotations

import html
import json
import uuid
from typing import TYPE_CHECKING

import numpy as np

from .draw import NEGATIVE, POSITIVE
from .layout import layout

if TYPE_CHECKING:   # the result imports this module to draw itself
    from .result import Pathways

__all__ = ["pathways_html", "standalone_page"]

_W, _H, _PAD = 170, 420, 40


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "n/a"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _why_text(p: Pathways, layer: str, unit: int) -> str:
    row = p.why_row(layer, unit)
    lines = [f"{layer} unit {unit}"]
    if row["removed_at"] is not None:
        lines.append(f"removed at step {row['removed_at']}")
    for k, v in row.items():
        if k not in ("layer", "unit", "kept", "removed_at"):
            lines.append(f"{k}: {_fmt(v)}")
    return "\n".join(lines)


def _radius(v: float, scale: float) -> float:
    return 3 + 12 * (abs(v) / scale) ** 0.5


def pathways_html(p: Pathways, *, top: int = 12, edges: int = 60, cls: int | None = None,
                  units: dict | None = None) -> str:
    """The map as an SVG in a ``div``; painted for class ``cls`` (default: all classes)
    without any script, re-painted by the class buttons where scripts run."""
    uid = "xpw" + uuid.uuid4().hex[:10]
    lay = layout(p, None, top, edges, units)
    width = _PAD * 2 + _W * max(len(lay.columns) - 1, 1)
    # per class: node radii/colours and edge widths for the same drawn units and edges
    per_class = {}
    for c in p.classes:
        vals = [float(np.nan_to_num(p.relevance[c][n["layer"]][n["unit"]])) for n in lay.nodes]
        m = p.layer_edges(c)
        flows = [float(m[(lay.nodes[e["a"]]["layer"], lay.nodes[e["b"]]["layer"])][
            lay.nodes[e["a"]]["unit"], lay.nodes[e["b"]]["unit"]]) for e in lay.edges]
        per_class[p.class_name(c)] = {"v": vals, "f": flows}
    per_class["all"] = {"v": [n["value"] for n in lay.nodes], "f": [e["flow"] for e in lay.edges]}
    first = "all" if cls is None else p.class_name(cls)
    shown = per_class[first]
    peak: dict[str, float] = {}   # sizes relative to each layer, as in the plot
    for n, v in zip(lay.nodes, shown["v"]):
        peak[n["layer"]] = max(peak.get(n["layer"], 1e-12), abs(v))
    flow_scale = max([abs(f) for f in shown["f"]] + [1e-12])

    def xy(n):
        return _PAD + _W * n["x"], _PAD + (_H - 2 * _PAD) * n["y"]

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{_H + 30}" '
             f'font-family="sans-serif" font-size="10">']
    for k, e in enumerate(lay.edges):
        (x1, y1), (x2, y2) = xy(lay.nodes[e["a"]]), xy(lay.nodes[e["b"]])
        bend = "" if lay.nodes[e["b"]]["x"] - lay.nodes[e["a"]]["x"] == 1 else "arc"
        mid = f"{(x1 + x2) / 2:.1f},{min(y1, y2) - 40:.1f}" if bend else \
            f"{(x1 + x2) / 2:.1f},{(y1 + y2) / 2:.1f}"
        f = shown["f"][k]
        parts.append(f'<path class="e" data-k="{k}" d="M{x1:.1f},{y1:.1f} Q{mid} '
                     f'{x2:.1f},{y2:.1f}" fill="none" stroke-opacity="0.35" '
                     f'stroke="{POSITIVE if f >= 0 else NEGATIVE}" '
                     f'stroke-width="{0.3 + 5 * abs(f) / flow_scale:.2f}"/>')
    for k, n in enumerate(lay.nodes):
        x, y = xy(n)
        removed = n["removed_at"] is not None
        tip = html.escape(_why_text(p, n["layer"], n["unit"]))
        v = shown["v"][k]
        colour = POSITIVE if v >= 0 else NEGATIVE
        style = ('r="6" fill="white" stroke="#555" stroke-dasharray="2,2"' if removed
                 else f'r="{_radius(v, peak[n["layer"]]):.1f}" fill="{colour}" '
                 'stroke="black" stroke-width="0.4"')
        parts.append(f'<g class="n" data-k="{k}" data-removed="{int(removed)}" '
                     f'data-layer="{html.escape(n["layer"])}" data-unit="{n["unit"]}">'
                     f'<circle cx="{x:.1f}" cy="{y:.1f}" {style}/>'
                     f'<text x="{x + 9:.1f}" y="{y + 3:.1f}" fill="#333">'
                     f'{html.escape(n["label"])}</text>'
                     f'<title>{tip}</title></g>')
    for i, col in enumerate(lay.columns):
        more = f" (+{lay.hidden[col]})" if lay.hidden[col] else ""
        parts.append(f'<text x="{_PAD + _W * i}" y="{_H + 15}" text-anchor="middle">'
                     f'{html.escape(col + more)}</text>')
    parts.append("</svg>")
    buttons = "".join(
        f'<button type="button" class="xpw-class" data-c="{html.escape(name)}">'
        f'{html.escape(name)}</button>' for name in per_class)
    tips = [_why_text(p, n["layer"], n["unit"]) for n in lay.nodes]
    data = json.dumps({"classes": per_class, "tips": tips, "pos": POSITIVE, "neg": NEGATIVE,
                       "first": first})
    data = data.replace("</", "<\\/")   # never closes the script element early
    summary = p.summary()
    head = (f"<b>Relevance flow, step {p.step}</b> ({html.escape(p.granularity)}s; "
            f"{summary['inputs']} inputs per class; conservation: "
            f"{'holds' if summary['conserved'] else 'see conservation()'}; largest bias "
            f"share {_fmt(summary['max_bias_share'])}). Hover a unit for its why-row; "
            "click a class to re-colour; hollow units were removed.")
    return (f'<div id="{uid}" class="xprune-pathways">{head}<div>{buttons}</div>'
            f'<div style="display:flex;gap:12px"><div>{"".join(parts)}</div>'
            f'<pre class="xpw-why" style="min-width:220px;font-size:11px">'
            f"Hover a unit</pre></div>"
            f'<script type="application/json" class="xpw-data">{data}</script>'
            f"<script>{_SCRIPT.replace('UID', uid)}</script></div>")


_SCRIPT = """(function(){var root=document.getElementById('UID');if(!root)return;
var d=JSON.parse(root.querySelector('.xpw-data').textContent);
var nodes=root.querySelectorAll('g.n'),edges=root.querySelectorAll('path.e');
function paint(c){var v=d.classes[c].v,f=d.classes[c].f,m={},mf=1e-12;
nodes.forEach(function(g){var l=g.dataset.layer;
m[l]=Math.max(m[l]||1e-12,Math.abs(v[+g.dataset.k]));});
f.forEach(function(x){mf=Math.max(mf,Math.abs(x));});
nodes.forEach(function(g){var k=+g.dataset.k,c=g.querySelector('circle');
if(g.dataset.removed==='1'){c.setAttribute('r',6);return;}
c.setAttribute('r',(3+12*Math.sqrt(Math.abs(v[k])/m[g.dataset.layer])).toFixed(1));
c.setAttribute('fill',v[k]>=0?d.pos:d.neg);});
edges.forEach(function(e){var k=+e.dataset.k;
e.setAttribute('stroke-width',(0.3+5*Math.abs(f[k])/mf).toFixed(2));
e.setAttribute('stroke',f[k]>=0?d.pos:d.neg);});
root.querySelectorAll('.xpw-class').forEach(function(b){
b.style.fontWeight=b.dataset.c===c?'bold':'normal';});}
root.querySelectorAll('.xpw-class').forEach(function(b){b.addEventListener('click',function(){paint(b.dataset.c);});});
nodes.forEach(function(g){g.addEventListener('mouseenter',function(){root.querySelector('.xpw-why').textContent=d.tips[+g.dataset.k];});});
paint(d.first);})();"""


def standalone_page(p: Pathways, body: str) -> str:
    title = html.escape(f"xprune_nb pathways, step {p.step}")
    return (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{title}</title></head>'
            f"<body>{body}</body></html>")
