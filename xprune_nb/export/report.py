"""A self-contained HTML report of a study: metrics tables and before/after figures.

Figures are PNG files written next to the report (and embedded as base64 too, so the HTML file
alone shows them). Every figure is made with matplotlib's Agg backend: no display needed.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

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
    import matplotlib.pyplot as plt

    frame = study.history.to_frame()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for step in study.history:  # parent -> child segments: a branching history stays a tree
        if step.parent is not None:
            a, b = frame.loc[step.parent], frame.loc[step.index]
            ax.plot([a["params"], b["params"]], [a["accuracy"], b["accuracy"]], "o-",
                    color="0.6", zorder=1)
    for step, row in frame.iterrows():
        ax.annotate(str(step), (row["params"], row["accuracy"]), textcoords="offset points",
                    xytext=(4, 4), fontsize=8)
    first, last = frame.iloc[0], frame.loc[study.current]
    ax.scatter([first["params"]], [first["accuracy"]], s=60, label="before (original)",
               zorder=2)
    ax.scatter([last["params"]], [last["accuracy"]], s=60, label=f"after (step {study.current})",
               zorder=2)
    ax.set_xlabel("parameters")
    ax.set_ylabel("test accuracy")
    ax.set_title("accuracy vs size along the history")
    ax.legend(fontsize=8)
    return fig


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
    if hasattr(study, "saliency") and study.current != 0:
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
    return figs


def write_report(study, out: str | Path, *, title: str = "xprune_nb study report") -> Path:
    """Write ``out/report.html`` (plus ``out/report_*.png``); returns the report's path."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    compare = study.compare(0, study.current)
    parts = [f"<h1>{html.escape(title)}</h1>",
             f"<p>{html.escape(repr(study))}</p>",
             "<h2>Before and after</h2>",
             compare.to_html(float_format=lambda x: f"{x:.4g}"),
             "<h2>History</h2>",
             study.history.to_frame().to_html(float_format=lambda x: f"{x:.4g}"),
             "<h2>Figures</h2>"]
    for stem, fig, caption in _figures(study):
        if fig is None:
            parts.append(f"<p><i>{html.escape(caption)}</i></p>")
            continue
        png = out / f"report_{stem}.png"
        data = _save(fig, png)
        parts.append(f'<figure><img alt="{stem}" src="data:image/png;base64,{data}">'
                     f"<figcaption>{html.escape(caption)} ({png.name})</figcaption></figure>")
    page = ("<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title><style>body{{font-family:sans-serif;"
            "max-width:980px;margin:2em auto}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
            "img{max-width:100%}</style></head><body>" + "\n".join(parts) + "</body></html>")
    return write_text(out / "report.html", page, call="write_report")
