"""The report's "Relevance pathways" section: where the evidence of the classes that lost most
flowed before and after pruning (``Study.pathways_compare``), as a figure, one sentence per
class and a table. Registered in the report's section registry on import."""

from __future__ import annotations

import html

from .report_context import ReportContext, figure_html
from .report_sections import register_section, table_html

__all__ = ["pathways_section", "CLASSES"]

#: classes shown: those whose accuracy dropped most
CLASSES = 3


def _classes(ctx: ReportContext) -> list[str]:
    rows = sorted(ctx.per_class(), key=lambda r: r[2] - r[1])
    return [name for name, _b, _a in rows[:CLASSES]]


def pathways_section(ctx: ReportContext) -> str | None:
    """Figure, sentences and table of ``pathways_compare(before, after)``; None when the two
    steps are the same (nothing was pruned)."""
    if ctx.before == ctx.after:
        return None
    classes = _classes(ctx) or None
    try:
        comp = ctx.study.pathways_compare(ctx.before, ctx.after, classes=classes)
    except Exception as exc:  # noqa: BLE001 - e.g. a recurrent model: say why, keep the report
        return f"<p>n/a: {html.escape(' '.join(str(exc).split()))}</p>"
    ctx.terms.use("relevance_flow", "cut_share", "recovered")
    frame = comp.to_frame()
    items = "".join(f"<li>{html.escape(s)}</li>" for s in frame["sentence"])
    first = comp.before.classes[0]
    name = comp.before.class_name(first)
    fig = comp.plot(cls=first, top=8, edges=40)
    caption = (f"Relevance flow for class {name}: step {ctx.before} (left) and step "
               f"{ctx.after} (right); circles are units sized by relevance, hollow ones were "
               "removed, lines carry relevance from layer to layer (width ∝ flow).")
    table = frame[["class", "cut_share", "moved_share", "recovered", "retrained", "rerouted",
                   "taken_up_by"]]
    return (f"<p>Which units carried the evidence of the classes that lost most accuracy, "
            f"which of them pruning removed, and where that evidence went.</p><ul>{items}</ul>"
            + figure_html(fig, caption, "relevance pathways before and after")
            + table_html(table, ctx))


register_section("pathways", "Relevance pathways", pathways_section, after="why")
