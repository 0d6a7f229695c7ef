"""The relevance-flow map with matplotlib (SVG or PNG through ``fig.savefig``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .layout import layout

if TYPE_CHECKING:   # the result imports this module to draw itself
    from .result import Pathways

__all__ = ["plot_pathways", "POSITIVE", "NEGATIVE"]

POSITIVE = "#c0392b"   # evidence for the class
NEGATIVE = "#2e6db4"   # evidence against it
REMOVED_LATER = "#e67e22"   # ring: a unit the later step removes


def plot_pathways(p: Pathways, *, ax=None, cls: int | None = None, top: int = 12,
                  edges: int = 60, units: dict | None = None, mark: set | None = None):
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch

    lay = layout(p, cls, top, edges, units)
    if ax is None:
        fig, ax = plt.subplots(figsize=(max(6.0, 1.8 * len(lay.columns)), 5.5))
    else:
        fig = ax.figure
    for e in lay.edges:
        a, b = lay.nodes[e["a"]], lay.nodes[e["b"]]
        width = 0.3 + 4.0 * abs(e["flow"]) / lay.flow_scale
        colour = POSITIVE if e["flow"] > 0 else NEGATIVE
        bend = 0.0 if b["x"] - a["x"] == 1 else -0.25   # skip connections arc
        ax.add_patch(FancyArrowPatch((a["x"], a["y"]), (b["x"], b["y"]),
                                     connectionstyle=f"arc3,rad={bend}", arrowstyle="-",
                                     lw=width, color=colour, alpha=0.35, zorder=1))
    for n in lay.nodes:
        size = 30 + 400 * n["size"]
        colour = POSITIVE if n["value"] >= 0 else NEGATIVE
        if n["removed_at"] is not None:
            ax.scatter(n["x"], n["y"], s=120, facecolors="white", edgecolors="#555555",
                       linewidths=1.2, linestyle="--", zorder=3)
        else:
            ax.scatter(n["x"], n["y"], s=size, color=colour, edgecolors="black",
                       linewidths=0.4, zorder=3)
        if mark and (n["layer"], n["unit"]) in mark:
            ax.scatter(n["x"], n["y"], s=size + 160, facecolors="none", edgecolors=REMOVED_LATER,
                       linewidths=1.6, zorder=2)
        ax.annotate(n["label"], (n["x"], n["y"]), xytext=(13, -3),
                    textcoords="offset points", fontsize=7, color="#333333")
    ax.set_xticks(range(len(lay.columns)))
    ax.set_xticklabels([f"{c}\n(+{lay.hidden[c]} more)" if lay.hidden[c] else c
                        for c in lay.columns], fontsize=8, rotation=20)
    ax.set_yticks([])
    ax.set_xlim(-0.5, len(lay.columns) - 0.5)
    ax.set_ylim(-0.05, 1.05)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    which = "all classes" if cls is None else f"class {p.class_name(cls)}"
    ringed = "; orange ring: removed later" if mark else ""
    ax.set_title(f"Relevance flow, step {p.step} ({which}); hollow: removed{ringed}",
                 fontsize=10)
    return fig
