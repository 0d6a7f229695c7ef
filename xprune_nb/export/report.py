"""A self-contained HTML report of a study: metrics tables and before/after figures.

Figures are PNG files written next to the report (and embedded as base64 too, so the HTML file
alone shows them). Every figure is made with matplotlib's Agg backend: no display needed.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import numpy as np

from ..io.atomic import write_bytes, write_text

__all__ = ["write_report"]


def _save(fig, path: Path) -> str:
    import io

    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    write_bytes(path, buffer.getvalue(), call="write_report")  # atomic: never half a file
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _history_figure(study):
    ax = study.history.plot()
    return ax.figure


def fmt(value) -> str:
    """One number format for the whole report: integers with thousands separators, other
    numbers with 4 significant digits, and a dash (not NaN) where there is no value.

    Examples
    --------
    >>> fmt(13802), fmt(0.98329), fmt(float("nan")), fmt(None)
    ('13,802', '0.9833', '–', '–')
    """
    import math

    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()   # numpy / torch scalars format like Python numbers
    if value is None or isinstance(value, bool):
        return "–" if value is None else str(value)
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()
                                  and abs(value) >= 1000):
        return f"{int(value):,}"
    if isinstance(value, float):
        return "–" if not math.isfinite(value) else f"{value:.4g}"
    return html.escape(str(value))


def _table(frame) -> str:
    return frame.to_html(formatters={c: fmt for c in frame.columns}, escape=True, na_rep="–")


def _widths_figure(study):
    """Output units of every Conv/Linear layer before and after pruning."""
    import matplotlib.pyplot as plt
    import numpy as np

    from .._model import prunable_layers

    def widths(model):
        return {name: (m.out_channels if hasattr(m, "out_channels") else m.out_features)
                for name, m in prunable_layers(model).items()}

    before, after = widths(study.original), widths(study.model)
    names = list(before)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(5.0, 0.7 * len(names) + 2), 3.6))
    ax.bar(x - 0.2, [before[n] for n in names], 0.4, label="before")
    ax.bar(x + 0.2, [after.get(n, 0) for n in names], 0.4, label="after")
    ax.set_xticks(x, [n if len(n) < 24 else n[:21] + "..." for n in names], rotation=45,
                  ha="right")
    ax.set_ylabel("output units")
    ax.set_title("layer widths before and after pruning")
    ax.legend(fontsize=8)
    return fig


def _last_scores(study):
    index = study.current
    while index is not None:
        step = study.history[index]
        if step.kind == "prune" and step.parent is not None:
            return study.scores_at(step.parent)
        index = step.parent
    return study.scores_at(study.current)


def _figures(study) -> list[tuple[str, object, str]]:
    """(file stem, figure, caption) for each figure we can make."""
    figs = [("history", _history_figure(study),
             "Test accuracy against parameter count for every step (numbers are steps)."),
            ("widths", _widths_figure(study),
             "Output units (channels / neurons) per layer, original vs current model.")]
    scores = _last_scores(study)
    if scores is not None:
        ax = scores.plot()
        figs.append(("scores", ax.figure,
                     f"{scores.criterion} scores per group (before the last pruning)."))
    if study.current != 0:
        try:
            comparison = study.saliency(0, study.current)
            out = comparison.plot()
            fig = out if hasattr(out, "savefig") else out.figure
            figs.append(("saliency", fig,
                         f"Saliency maps before (step 0) and after (step {study.current}); "
                         "saliency rank correlation "
                         f"{comparison.summary()['saliency_rank_correlation']:.3f}."))
        except Exception as exc:  # noqa: BLE001 - an optional figure must not sink the report
            figs.append(("saliency", None, f"(saliency comparison unavailable: "
                                           f"{type(exc).__name__}: {exc})"))
        figs.append(_shapley_figure(study))
    return figs


def _shapley_figure(study):
    """Shapley values before vs after (tabular data, where shap is cheap enough)."""
    try:
        if study.data.train.X[0].numel() > 64:
            return ("shapley", None, "(Shapley values: skipped for inputs with more than 64 "
                                     "features; run study.shapley() for them.)")
        comparison = study.shapley(0, study.current, n=10, background_size=20)
        out = comparison.plot()
        fig = out if hasattr(out, "savefig") else np.asarray(out).flat[0].figure
        moved = getattr(comparison, "rank_correlation", float("nan"))
        return ("shapley", fig, "Shapley values before (step 0) and after (step "
                f"{study.current}): global feature importance; Shapley rank correlation "
                f"{fmt(moved)}.")
    except Exception as exc:  # noqa: BLE001 - an optional figure must not sink the report
        return ("shapley", None, f"(Shapley comparison unavailable: {type(exc).__name__}: "
                                 f"{exc})")


def _why_section(study) -> str:
    """The latest prune step on the path to the current model: what went and why."""
    try:
        report = study.why()
    except Exception as exc:  # noqa: BLE001 - no prune step yet, or no scores kept
        return f"<p><i>{html.escape(str(exc))}</i></p>"
    frame = report.to_frame()
    summary = report.summary()
    head = "<p>" + html.escape("; ".join(f"{k.replace('_', ' ')}: {fmt(v)}"
                                         for k, v in summary.items())) + "</p>"
    return head + (_table(frame.head(20)) if frame is not None else "")


def write_report(study, out: str | Path, *, title: str = "xprune_nb study report") -> Path:
    """Write ``out/report.html`` (plus ``out/report_*.png``); returns the report's path."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    from ..explain.glossary import glossary_html

    compare = study.compare(0, study.current)
    parts = [f"<h1>{html.escape(title)}</h1>",
             f"<p>{html.escape(repr(study))}</p>",
             "<h2>Before and after</h2>",
             _table(compare),
             "<h2>History</h2>",
             _table(study.history.to_frame()),
             "<h2>Why units were removed</h2>",
             _why_section(study),
             "<h2>Figures</h2>"]
    for stem, fig, caption in _figures(study):
        if fig is None:
            parts.append(f"<p><i>{html.escape(caption)}</i></p>")
            continue
        png = out / f"report_{stem}.png"
        data = _save(fig, png)
        parts.append(f'<figure><img alt="{stem}" src="data:image/png;base64,{data}">'
                     f"<figcaption>{html.escape(caption)} ({png.name})</figcaption></figure>")
    parts += ["<h2>Glossary</h2>", glossary_html()]
    page = ("<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title><style>body{{font-family:sans-serif;"
            "max-width:980px;margin:2em auto}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
            "img{max-width:100%}</style></head><body>" + "\n".join(parts) + "</body></html>")
    return write_text(out / "report.html", page, call="write_report")
