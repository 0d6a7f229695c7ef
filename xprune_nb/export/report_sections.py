"""The report's detail sections, one builder each, in a registry others can extend.

A builder is ``builder(ctx) -> str | None`` (the section's inner HTML, or None to leave it out);
:data:`SECTIONS` maps its name (what ``study.report(include=...)`` lists) to its title and
builder, in the order the report shows them. :func:`register_section` adds one (e.g. a
pathways figure) before or after a named section.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Callable

import numpy as np
import torch

from .report_context import ReportContext, figure_html
from .report_format import fmt

__all__ = ["SECTIONS", "register_section", "table_html"]

Builder = Callable[[ReportContext], "str | None"]


def table_html(frame, ctx: ReportContext | None = None, *, index: bool = False,
               none: dict[str, str] | None = None, css: str = "", humanize: bool = True) -> str:
    """A DataFrame as an HTML table, every cell through :func:`fmt` (named by its column);
    ``none`` gives a column's text for a missing value instead of "n/a"."""
    from ..explain.glossary import GLOSSARY, TERMS

    none = none or {}
    if ctx is not None:
        ctx.terms.use(*[str(c) for c in frame.columns if str(c).split("[")[0] in TERMS
                        or str(c) in GLOSSARY])

    shown = frame.copy().astype(object)
    for column in shown.columns:
        name = str(column)
        shown[column] = [none[name] if name in none and (v is None or v != v) else fmt(v, name)
                         for v in frame[column]]
    if humanize:   # our column names read as words; the user's own names stay as given
        shown.columns = [str(c).replace("_", " ") for c in shown.columns]
    return shown.to_html(index=index, escape=True, classes=css or None, border=0)


def _notes(ctx: ReportContext) -> str | None:
    notes = ctx._cache.get("notes")
    if not notes:
        return None
    paragraphs = [p.strip() for p in str(notes).split("\n\n") if p.strip()]
    return "".join(f"<p>{html.escape(p)}</p>" for p in paragraphs)


def _metrics(ctx: ReportContext) -> str:
    import pandas as pd

    from ..explain.glossary import label

    keys = ["accuracy", "val_accuracy", "params", "nonzero_params", "macs", "size_bytes",
            "sparsity"]
    b, a = ctx.step_before.metrics, ctx.step_after.metrics
    rows = [{"number": label(k), "before": fmt(b.get(k), k), "after": fmt(a.get(k), k)}
            for k in keys if k in b or k in a]
    ctx.terms.use(*keys)
    for which, metrics in (("before", ctx.metrics("before")), ("after", ctx.metrics("after"))):
        if ctx.latency and metrics is not None:
            for bs, ms in metrics.latency_ms.items():
                key = f"latency_b{bs}_ms"
                ctx.terms.use(key)
                row = next((r for r in rows if r["number"] == label(key)), None)
                if row is None:
                    row = {"number": label(key), "before": "n/a", "after": "n/a"}
                    rows.append(row)
                row[which] = fmt(ms, key)
    return pd.DataFrame(rows).to_html(index=False, escape=True, border=0)


def _per_class(ctx: ReportContext) -> str | None:
    import pandas as pd

    rows = ctx.per_class()
    if not rows:
        return None
    frame = pd.DataFrame([{"class": n, "accuracy_before": b, "accuracy_after": a,
                           "accuracy_change": a - b} for n, b, a in rows])
    ctx.terms.use("per_class_accuracy", "pp")
    return ("<p>Test accuracy of every class, original vs pruned; the classes that lost most "
            "first.</p>" + table_html(frame.sort_values("accuracy_change", kind="stable"), ctx))


def _per_group(ctx: ReportContext) -> str | None:
    """Who paid: test accuracy of every sensitive group, before and after (omitted without
    groups)."""
    if not getattr(ctx.study.data, "group_names", None):
        return None
    report = ctx.forgotten
    if report is None:
        return f"<p>n/a: {html.escape(ctx.missing.get('forgotten', ''))}</p>"
    return (f"<p>{html.escape(report.per_group_words())}</p><p>Test accuracy of every "
            "sensitive group, before and after; the groups that lost most first.</p>"
            + table_html(report.per_group(), ctx))


def _example_images(ctx: ReportContext, rows: list[int], report) -> str | None:
    """Forgotten examples drawn as images (image inputs), with label and both predictions."""
    import matplotlib.pyplot as plt

    from ..explain.plots import _image

    x = ctx.study.data.test.X
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or not rows:
        return None
    names = report.class_names
    # one strip of tiles in one axes: a figure per example would cost a second each to lay out
    tiles = [_image(x[r].numpy()) for r in rows]
    gray = all(cmap == "gray" for _, cmap in tiles)
    h, w = tiles[0][0].shape[:2]
    pad = max(1, w // 8)
    strip = np.full((h, len(rows) * (w + pad), *tiles[0][0].shape[2:]), np.nan)
    for i, (img, _) in enumerate(tiles):
        lo, hi = np.nanmin(img), np.nanmax(img)
        strip[:, i * (w + pad): i * (w + pad) + w] = (img - lo) / (hi - lo if hi > lo else 1)
    fig, ax = plt.subplots(figsize=(1.6 * len(rows), 2.3))
    ax.imshow(strip, cmap="gray" if gray else None, interpolation="nearest")
    for i, r in enumerate(rows):
        ax.text(i * (w + pad) + w / 2, h + 0.5, f"#{r} {names[report.labels[r]]}\nwas "
                f"{names[report.pred_before[r]]}\nnow {names[report.pred_after[r]]}",
                ha="center", va="top", fontsize=7)
    ax.set_axis_off()
    return figure_html(fig, "Forgotten examples: test row, true class, prediction before and "
                       "after pruning.", "forgotten examples")


def _example_rows(ctx: ReportContext, rows: list[int], report) -> str | None:
    """Forgotten examples as table rows with the feature names (tabular inputs)."""
    import pandas as pd

    x = ctx.study.data.test.X
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.is_floating_point() is False \
            or not rows:
        return None   # token ids are not features: the per-class table says enough
    names = ctx.study.data.feature_names or [f"feature {i}" for i in range(x.shape[1])]
    frame = pd.DataFrame(x[rows].double().numpy(), columns=[str(n) for n in names])
    cls = report.class_names
    frame.insert(0, "now predicted", [cls[report.pred_after[r]] for r in rows])
    frame.insert(0, "was predicted", [cls[report.pred_before[r]] for r in rows])
    frame.insert(0, "class", [cls[report.labels[r]] for r in rows])
    frame.insert(0, "test row", rows)
    return ("<p>The forgotten examples' inputs, with your feature names:</p>"
            "<div class='xprune-scroll'>" + table_html(frame, ctx, humanize=False) + "</div>")


def _forgotten(ctx: ReportContext) -> str | None:
    report = ctx.forgotten
    if report is None:
        return f"<p>n/a: {html.escape(ctx.missing.get('forgotten', ''))}</p>"
    ctx.terms.use("forgotten", "learned")
    per = report.per_class()
    out = "<p>Per class: test examples, accuracy before and after, forgotten and learned.</p>"
    out += table_html(per, ctx)
    kinds = report.kind()
    rows = [int(r) for r in report.to_frame()["row"] if kinds[int(r)] == "forgotten"][:8]
    out += (_example_images(ctx, rows, report) or _example_rows(ctx, rows, report)
            or ("<p>No test example was forgotten.</p>" if not rows else ""))
    return out


def _explanations(ctx: ReportContext) -> str:
    out = []
    comparison = ctx.saliency
    if comparison is not None:
        plotted = comparison.plot()
        fig = plotted if hasattr(plotted, "savefig") else plotted.figure
        out.append(figure_html(fig, f"Saliency maps of {len(comparison.to_frame())} test inputs "
                               f"before (step {ctx.before}) and after (step {ctx.after}).",
                               "saliency before and after"))
    else:
        out.append(f"<p>Saliency maps: n/a: {html.escape(ctx.missing.get('saliency', ''))}</p>")
    shap = ctx.shapley
    if shap is not None:
        plotted = shap.plot()
        fig = plotted if hasattr(plotted, "savefig") else np.asarray(plotted).flat[0].figure
        out.append(figure_html(fig, f"Shapley values before (step {ctx.before}) and after "
                               f"(step {ctx.after}): global feature importance.", "shapley"))
    elif "shapley" in ctx.missing:
        out.append(f"<p>Shapley values: n/a: {html.escape(ctx.missing['shapley'])}</p>")
    try:
        frame = ctx.study.drift().to_frame().reset_index()
        out.append("<p>Drift along the history, on the probe set (against the original):</p>"
                   "<div class='xprune-scroll'>" + table_html(frame, ctx, none={
                       "parent": "none"}) + "</div>")
        ctx.terms.use("probe")
    except Exception as exc:  # noqa: BLE001 - the drift table is optional detail
        out.append(f"<p>Drift table: n/a: {html.escape(str(exc))}</p>")
    return "".join(out)


def _history(ctx: ReportContext) -> str:
    frame = ctx.study.history.to_frame().reset_index()
    ax = ctx.study.history.plot()
    return (table_html(frame, ctx, none={"parent": "none"})
            + figure_html(ax.figure, "Test accuracy against parameter count for every step "
                          "(numbers are steps).", "history"))


def _why(ctx: ReportContext) -> str | None:
    steps = ctx.prune_steps()
    if not steps:
        return None
    out = []
    for step in steps:
        try:
            report = ctx.study.why(step.index)
        except Exception as exc:  # noqa: BLE001 - e.g. scores of that step not kept
            out.append(f"<h3>Step {step.index}: {html.escape(step.label)}</h3>"
                       f"<p>n/a: {html.escape(' '.join(str(exc).split()))}</p>")
            continue
        frame = report.to_frame()
        ctx.terms.use("score", "normalized", "rank", "percentile")
        if "relied_on_by" in frame:
            ctx.terms.use("relied_on_by")
        csv = base64.b64encode(frame.to_csv(index=False).encode()).decode("ascii")
        name = f"why_step_{step.index}.csv"
        out.append(
            f"<h3>Step {step.index}: {html.escape(step.label)}</h3>"
            f"<p>All {len(frame)} removed units (of {len(report.all_scores)} scored), ranked "
            f"by {html.escape(report.criterion)} scores; rank 0 = least important. "
            f"<a download='{name}' href='data:text/csv;base64,{csv}'>Download as CSV</a>.</p>"
            "<details open><summary>removed units</summary><div class='xprune-scroll'>"
            + table_html(frame, ctx) + "</div></details>")
    return "".join(out)


def _comparisons(ctx: ReportContext) -> str | None:
    items = ctx._cache.get("comparisons") or []
    out = []
    for title, body in items:
        out.append(f"<h3>{html.escape(title)}</h3>{body}")
    return "".join(out) or None


#: name -> (title, builder), in the order the report shows them (the summary comes first)
SECTIONS: dict[str, tuple[str, Builder]] = {
    "notes": ("Notes", _notes),
    "metrics": ("Before and after", _metrics),
    "per_class": ("Accuracy per class", _per_class),
    "per_group": ("Who paid: accuracy per group", _per_group),
    "forgotten": ("What pruning forgot", _forgotten),
    "explanations": ("How the explanations changed", _explanations),
    "why": ("Why units were removed", _why),
    "comparisons": ("Your comparisons", _comparisons),
    "history": ("History", _history),
}


def register_section(name: str, title: str, builder: Builder, *, after: str | None = None,
                     before: str | None = None) -> None:
    """Add a detail section ``name`` (``builder(ctx) -> HTML or None``) after or before a
    named section (default: before the history). ``study.report(include=[..., name])`` then
    picks it; it is in the default report too.

    Examples
    --------
    >>> register_section("hello", "Hello", lambda ctx: "<p>hi</p>", after="why")
    >>> list(SECTIONS).index("hello") == list(SECTIONS).index("why") + 1
    True
    >>> del SECTIONS["hello"]
    """
    anchor = after or before or "history"
    items = [(k, v) for k, v in SECTIONS.items() if k != name]
    keys = [k for k, _ in items]
    at = keys.index(anchor) + (1 if after else 0) if anchor in keys else len(items)
    items.insert(at, (name, (title, builder)))
    SECTIONS.clear()
    SECTIONS.update(items)
