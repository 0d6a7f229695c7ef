"""Plots and HTML views of explanation results. Every plot takes ``ax=`` and returns what it drew
on (the axes, or the figure for multi-panel plots); matplotlib is imported only when plotting."""

from __future__ import annotations

import html

import numpy as np

__all__ = ["html_report", "plot_saliency", "plot_shapley", "plot_why", "plot_drift"]


def html_report(title: str, summary: dict, frame=None, max_rows: int = 1000,
                notes: dict | None = None) -> str:
    """A title, a one-line table of summary numbers and a frame, as HTML: every row (up to
    ``max_rows``, with a note when more exist) in a scrolling box, so none is silently left out.

    A missing summary number shows as ``n/a: reason`` (its note from ``notes``); a number that
    some rows lack is followed by the note saying how many and why.
    """
    from .numbers import is_missing

    notes = notes or {}

    def cell(k, v) -> str:
        name = f"<b>{html.escape(str(k))}</b>"
        if isinstance(v, (float, int, np.floating)) and not isinstance(v, bool):
            if is_missing(v):
                text = f"n/a: {notes[k]}" if k in notes else "n/a"
            else:
                text = f"{v:.4g}" + (f" ({notes[k]})" if k in notes else "")
            return f"<td>{name}: {html.escape(text)}</td>"
        return f"<td>{name}: {html.escape(str(v))}</td>"

    cells = "".join(cell(k, v) for k, v in summary.items())
    out = f"<div><b>{html.escape(title)}</b><table><tr>{cells}</tr></table>"
    if frame is not None:
        more = len(frame) - max_rows
        out += (f"<p>{len(frame)} rows</p><div style='max-height:24em;overflow:auto'>"
                + frame.head(max_rows).to_html(float_format=lambda x: f"{x:.4g}", na_rep="n/a")
                + "</div>")
        if more > 0:
            out += f"<p>... {more} more rows (use .to_frame())</p>"
    return out + "</div>"


def _image(a: np.ndarray) -> tuple[np.ndarray, str | None]:
    """An input (C, H, W) as something imshow can draw."""
    if a.shape[0] == 3:
        rgb = np.transpose(a, (1, 2, 0))
        span = rgb.max() - rgb.min()
        return (rgb - rgb.min()) / (span if span > 0 else 1), None
    return a.mean(axis=0), "gray"


def _grid(ax, rows: int, cols: int, size: float = 2.0):
    import matplotlib.pyplot as plt

    if ax is None:
        fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows), squeeze=False)
        return fig, axes
    axes = np.asarray(ax, dtype=object).reshape(rows, cols)
    return axes[0, 0].figure, axes


def plot_saliency(comp, ax=None, max_inputs: int = 8):
    """Images: rows of input / before / after / difference (after - before). Tabular: mean
    absolute attribution per feature, before vs after, as horizontal bars."""
    if comp.inputs.ndim == 4:
        n = min(len(comp.inputs), max_inputs)
        fig, axes = _grid(ax, n, 4)
        for i in range(n):
            b, a = comp.before[i].sum(axis=0), comp.after[i].sum(axis=0)
            vmax = float(max(np.abs(b).max(), np.abs(a).max())) or 1.0
            diff = a - b
            dmax = float(np.abs(diff).max()) or 1.0
            img, cmap = _image(comp.inputs[i])
            panels = [
                (img, cmap, None, f"target {comp.label(comp.targets[i])}"),
                (b, "RdBu_r", vmax, f"before: pred {comp.label(comp.pred_before[i])}"),
                (a, "RdBu_r", vmax, f"after: pred {comp.label(comp.pred_after[i])}"),
                (diff, "PuOr", dmax, f"after - before, rank corr. {comp.spearman[i]:.2f}"),
            ]
            for j, (axis, (data, cm, lim, title)) in enumerate(zip(axes[i], panels)):
                kw = {} if lim is None else {"vmin": -lim, "vmax": lim}
                image = axis.imshow(data, cmap=cm, **kw)
                axis.set_title(title, fontsize=8)
                axis.set_xticks([])
                axis.set_yticks([])
                if j == 2 or j == 3:   # one colour bar for the shared before/after scale,
                    bar = fig.colorbar(image, ax=axis, fraction=0.046, pad=0.04)   # one for
                    bar.ax.tick_params(labelsize=6)                                # the diff
                    if i == 0:
                        bar.set_label("attribution" if j == 2 else
                                      "after − before (orange: more, purple: less)", fontsize=6)
        fig.suptitle(f"{comp.method} saliency: step {comp.steps[0]} (before) vs "
                     f"{comp.steps[1]} (after); red = supports the target class, "
                     "blue = against", fontsize=9)
        fig.tight_layout(rect=(0, 0, 1, 0.97))
        return fig
    import matplotlib.pyplot as plt

    b = np.abs(comp.before.reshape(len(comp.before), -1)).mean(axis=0)
    a = np.abs(comp.after.reshape(len(comp.after), -1)).mean(axis=0)
    names = comp.feature_names or [f"x{i}" for i in range(len(b))]
    top = np.argsort(-np.maximum(a, b), kind="stable")[:20][::-1]
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 0.3 * len(top) + 1.2))
    pos = np.arange(len(top))
    ax.barh(pos + 0.2, b[top], height=0.4, label=f"before (step {comp.steps[0]})")
    ax.barh(pos - 0.2, a[top], height=0.4, label=f"after (step {comp.steps[1]})")
    ax.set_yticks(pos, [names[i] for i in top])
    ax.set_xlabel(f"mean |{comp.method}| over {len(comp.inputs)} inputs")
    ax.legend(loc="lower right")
    return ax


def _default_output(k: int) -> int:
    return 1 if k == 2 else 0


def plot_shapley(comp, ax=None, output: int | None = None, max_display: int = 12):
    """Tabular: importance bars before/after and a beeswarm per model. Images: for up to four
    rows, the input and both models' maps for the class the first model predicts."""
    import matplotlib.pyplot as plt

    values_b, values_a = np.asarray(comp.before.values), np.asarray(comp.after.values)
    k = values_b.shape[-1]
    if values_b.ndim == 3:
        import shap

        out = _default_output(k) if output is None else output
        if ax is None:
            fig, axes = plt.subplots(1, 3, figsize=(16, 0.35 * max_display + 2))
        else:
            axes = np.asarray(ax, dtype=object).reshape(-1)
            fig = axes[0].figure
        ib, ia = comp.importance_before, comp.importance_after
        top = np.argsort(-np.maximum(ib, ia), kind="stable")[:max_display][::-1]
        pos = np.arange(len(top))
        axes[0].barh(pos + 0.2, ib[top], height=0.4, label=f"step {comp.steps[0]}")
        axes[0].barh(pos - 0.2, ia[top], height=0.4, label=f"step {comp.steps[1]}")
        axes[0].set_yticks(pos, [comp.feature_names[i] for i in top])
        axes[0].set_xlabel("mean |SHAP value| (rows and outputs)")
        axes[0].set_title(f"global importance, rank corr. {comp.rank_correlation:.2f}")
        axes[0].legend(loc="lower right")
        for axis, expl, step in ((axes[1], comp.before, comp.steps[0]),
                                 (axes[2], comp.after, comp.steps[1])):
            shap.plots.beeswarm(expl[..., out], ax=axis, show=False, max_display=max_display,
                                plot_size=None, color_bar=True)
            axis.set_title(f"step {step}: output {comp.class_names[out]}")
        fig.tight_layout()
        return fig
    rows = min(4, values_b.shape[0])
    fig, axes = _grid(ax, rows, 3)
    data = np.asarray(comp.before.data)
    for i in range(rows):
        cls = int(np.argmax(comp.fx_before[i])) if output is None else output
        b = values_b[i, ..., cls].reshape(data.shape[1:]).sum(axis=0)
        a = values_a[i, ..., cls].reshape(data.shape[1:]).sum(axis=0)
        lim = float(max(np.abs(b).max(), np.abs(a).max())) or 1.0
        img, cmap = _image(data[i])
        axes[i, 0].imshow(img, cmap=cmap)
        axes[i, 0].set_title(f"class {comp.class_names[cls]}", fontsize=8)
        for axis, m, step in ((axes[i, 1], b, comp.steps[0]), (axes[i, 2], a, comp.steps[1])):
            axis.imshow(m, cmap="RdBu_r", vmin=-lim, vmax=lim)
            axis.set_title(f"SHAP, step {step}", fontsize=8)
        for axis in axes[i]:
            axis.set_xticks([])
            axis.set_yticks([])
    fig.tight_layout()
    return fig


def plot_why(report, ax=None):
    """Left: where the removed units sat in the distribution of all normalised scores. Right:
    accuracy per class before and after (when known). Returns the figure."""
    import matplotlib.pyplot as plt

    panels = 2 if report.per_class_accuracy is not None else 1
    if ax is None:
        fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 3.2), squeeze=False)
        axes = axes[0]
    else:
        axes = np.asarray(ax, dtype=object).reshape(-1)
        fig = axes[0].figure
    all_scores = report.all_scores["normalized"].to_numpy()
    removed = report.removed["normalized"].to_numpy()
    bins = np.histogram_bin_edges(all_scores, bins=40)
    axes[0].hist(all_scores, bins=bins, color="0.75", label="all units")
    axes[0].hist(removed, bins=bins, color="tab:red", label="removed")
    axes[0].set_xlabel(f"{report.criterion} score (normalised per layer)")
    axes[0].set_ylabel("units")
    axes[0].legend()
    if panels == 2:
        acc = report.per_class_accuracy
        pos = np.arange(len(acc))
        axes[1].bar(pos - 0.2, acc["accuracy_before"], width=0.4, label="before")
        axes[1].bar(pos + 0.2, acc["accuracy_after"], width=0.4, label="after")
        axes[1].set_xticks(pos, acc["class"].astype(str), rotation=45, ha="right")
        axes[1].set_ylabel("accuracy")
        axes[1].set_ylim(0, 1.05)
        axes[1].legend()
    fig.tight_layout()
    return fig


def plot_drift(frame, ax=None, x: str | None = None):
    """Accuracy, prediction agreement and saliency similarity on the probe set along the
    history. Returns the axes."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    if x is None:
        x = next((c for c in ("sparsity", "fraction_pruned", "step") if c in frame), None)
    xs = frame[x] if x is not None else np.arange(len(frame))
    from .glossary import label as glossary_label

    labels = {"accuracy": "accuracy", "agreement": "agreement with original",
              "saliency_rank_correlation": glossary_label("saliency_rank_correlation"),
              "saliency_spearman": glossary_label("saliency_rank_correlation"),
              "saliency_topk_iou": glossary_label("saliency_topk_iou")}
    for col, label in labels.items():
        # a Study may keep the probe's numbers under a "saliency_" prefix next to its own
        # test accuracy; the probe's agreement and similarity are what this plot is about
        name = col if col in frame else f"saliency_{col}"
        if name in frame:
            ax.plot(xs, frame[name], marker="o", label=label)
    ax.set_xlabel(x or "step")
    ax.set_ylim(-0.05, 1.05)
    ax.legend(fontsize=8)
    ax.set_title("drift on the probe set")
    return ax
