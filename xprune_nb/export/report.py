"""A stakeholder report of a study: one self-contained HTML file that opens with a
plain-language summary, then the detail (per-class table, forgotten examples, explanation
figures, why each unit was removed, history, your own notes and comparisons) and a glossary of
only the terms it shows.

Figures are embedded as base64 PNGs (matplotlib's Agg backend: no display needed); every number
goes through one format (:mod:`.report_format`). Sections come from a registry
(:data:`~xprune_nb.export.report_sections.SECTIONS`; add one with
:func:`~xprune_nb.export.report_sections.register_section`).
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..core.atomic import write_text
from ..core.errors import ConfigError
from . import report_pathways  # noqa: F401 - registers the "pathways" section
from .report_context import ReportContext, figure_html
from .report_format import fmt
from .report_sections import SECTIONS, register_section, table_html
from .report_summary import summary_html

__all__ = ["study_report", "write_report", "fmt", "register_section", "SECTIONS"]

_CSS = ("body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;"
        "line-height:1.45;color:#222}table{border-collapse:collapse;margin:.5em 0}"
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
        "th{background:#f4f4f4}img{max-width:100%}.xprune-summary{background:#f7f9fc;"
        "border:1px solid #d6e0ef;padding:.5em 1.2em;border-radius:6px}"
        ".xprune-scroll{max-height:28em;overflow:auto}figcaption{font-size:90%;color:#555}")


def _comparison_html(obj, ctx: ReportContext) -> str:
    """A comparison or table of the user's: tables through the report's number format,
    figures embedded, text escaped."""
    import pandas as pd

    if isinstance(obj, str):
        return "".join(f"<p>{html.escape(p.strip())}</p>" for p in obj.split("\n\n")
                       if p.strip())
    if isinstance(obj, pd.DataFrame):
        return "<div class='xprune-scroll'>" + table_html(obj, ctx, index=True) + "</div>"
    if hasattr(obj, "savefig"):
        return figure_html(obj, "", "figure")
    if hasattr(obj, "to_frame") and callable(obj.to_frame):
        out = "<div class='xprune-scroll'>" + table_html(obj.to_frame(), ctx) + "</div>"
        if hasattr(obj, "plot"):
            plotted = obj.plot()
            fig = plotted if hasattr(plotted, "savefig") else getattr(plotted, "figure", None)
            if fig is None:
                import numpy as np

                fig = np.asarray(plotted).flat[0].figure
            out += figure_html(fig, "", type(obj).__name__)
        return out
    if hasattr(obj, "_repr_html_"):
        return obj._repr_html_()
    raise ConfigError.bad_value("Study.report", "comparisons", "text, a DataFrame, a figure "
                                "or a result with to_frame() or _repr_html_", obj)


def _comparisons(comparisons, ctx: ReportContext) -> list[tuple[str, str]]:
    if comparisons is None:
        return []
    if isinstance(comparisons, Mapping):
        items = list(comparisons.items())
    elif isinstance(comparisons, Sequence) and not isinstance(comparisons, str):
        items = [c if isinstance(c, tuple) and len(c) == 2 and isinstance(c[0], str)
                 else (type(c).__name__, c) for c in comparisons]
    else:
        raise ConfigError.bad_value("Study.report", "comparisons", "a dict title -> object or "
                                    "a list of objects or (title, object) pairs", comparisons)
    return [(str(title), _comparison_html(obj, ctx)) for title, obj in items]


def study_report(study, path: str | Path, title: str | None = None, notes: str | None = None,
                 *, include: Sequence[str] | None = None, comparisons=None, before: int = 0,
                 after: int | None = None, latency: bool = True) -> Path:
    """Write a self-contained HTML report a stakeholder can read; returns its path.

    It opens with a plain-language summary generated from the study (what was pruned and by
    how much; size, MACs and measured speed before and after; accuracy overall and per class,
    naming the classes that lost most; what pruning forgot; how the explanations changed; what
    to watch), then the detail, then a glossary of only the terms it shows.

    Parameters
    ----------
    path : str or Path
        The ``.html`` file to write (a folder: ``report.html`` in it).
    title : str, optional
        The report's heading (default: "Pruning report: <model class>").
    notes : str, optional
        Your own text, shown right after the summary (paragraphs split on blank lines).
    include : list of str, optional
        The detail sections to show, from ``"notes"``, ``"metrics"``, ``"per_class"``,
        ``"forgotten"``, ``"explanations"``, ``"why"``, ``"comparisons"``, ``"history"``,
        ``"glossary"`` (and any added with ``register_section``); default: all. The summary
        always comes first.
    comparisons : dict or list, optional
        Your own comparisons: title -> a result with ``to_frame()`` (e.g.
        ``study.saliency(1, 3)``), a DataFrame, a matplotlib figure or text.
    before, after : int
        The steps compared (default: the original and the current step).
    latency : bool
        Measure each model's speed now (a few seconds); False leaves speed out.

    Examples
    --------
    >>> import xprune_nb as xp, tempfile, pathlib
    >>> study = xp.Study(xp.zoo.load("toy_mlp"), xp.datasets.load("moons"))
    >>> _ = study.score("taylor", samples=64); _ = study.prune(0.3)
    >>> out = study.report(pathlib.Path(tempfile.mkdtemp()) / "r.html", latency=False)
    >>> "Summary" in out.read_text()
    True
    """
    call = "Study.report"
    for name, value in (("title", title), ("notes", notes)):
        if value is not None and not isinstance(value, str):
            raise ConfigError.bad_value(call, name, "a string or None", value)
    if not isinstance(path, (str, Path)) or not str(path):
        raise ConfigError.bad_value(call, "path", "a file or folder path", path)
    if not isinstance(latency, bool):
        raise ConfigError.bad_value(call, "latency", "True or False", latency)
    choices = [*SECTIONS, "glossary", "summary"]
    if include is None:
        wanted = choices
    else:
        if isinstance(include, str) or not isinstance(include, Sequence):
            raise ConfigError.bad_value(call, "include", f"a list of names from {choices}",
                                        include)
        for name in include:
            if name not in choices:
                raise ConfigError.unknown_name(call, "include", choices, name)
        wanted = list(include)
    ctx = ReportContext(study, before=study.timeline.index(before, call),
                        after=study.timeline.index(study.current if after is None else after,
                                                   call), latency=latency,
                        explain="explanations" in wanted)
    ctx._cache["notes"] = notes
    ctx._cache["comparisons"] = _comparisons(comparisons, ctx)

    import matplotlib

    matplotlib.use("Agg", force=False)
    heading = title or f"Pruning report: {type(study.original).__name__}"
    parts = [f"<h1>{html.escape(heading)}</h1>", summary_html(ctx)]
    for name, (section_title, builder) in SECTIONS.items():
        if name not in wanted:
            continue
        try:
            body = builder(ctx)
        except Exception as exc:  # noqa: BLE001 - one section must not sink the whole report
            reason = " ".join(str(exc).split()) or type(exc).__name__
            body = f"<p>n/a: {html.escape(reason)}</p>"
        if body:
            parts.append(f"<section id='{html.escape(name)}'><h2>{html.escape(section_title)}"
                         f"</h2>{body}</section>")
    if "glossary" in wanted and ctx.terms.names:
        from ..explain.glossary import glossary_html

        parts.append("<section id='glossary'><h2>Glossary</h2>"
                     f"{glossary_html(ctx.terms.names)}</section>")
    page = ("<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{html.escape(heading)}</title><style>{_CSS}</style></head><body>"
            + "\n".join(parts) + "</body></html>")
    out = Path(path)
    if out.suffix.lower() not in (".html", ".htm"):
        out.mkdir(parents=True, exist_ok=True)
        out = out / "report.html"
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
    return write_text(out, page, call=call)


def write_report(study, out: str | Path, *, title: str = "xprune_nb study report") -> Path:
    """``study.report(out)``: writes ``out/report.html`` (``out`` a folder) or the ``.html``
    file ``out``; kept for scripts that call it directly."""
    return study_report(study, out, title=title)
