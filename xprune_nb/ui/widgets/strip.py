"""The top of the panel: the metrics strip and the status line with its progress bar."""

from __future__ import annotations

import html
import re

import ipywidgets as W

from ...explain.glossary import label, meaning
from ...explain.numbers import is_missing, shown
from ...measure.step import NOT_MEASURED
from ._common import TABLE_CSS

__all__ = ["MetricsStrip", "StatusLine", "accuracy_text"]

_COLORS = {"ok": "#1b7f3b", "busy": "#1f5fbf", "warn": "#a15c00", "error": "#b00020",
           "info": "#444"}
_ICONS = {"ok": "✔", "busy": "⏳", "warn": "⚠", "error": "✖", "info": "ℹ"}


def _pct(a: float, b: float) -> str:
    return f"{100 * a / b:.1f}%" if b else "n/a"


#: the drift numbers every step records (``Step.drift``) -> their glossary names
_DRIFT = {"saliency_spearman": "saliency_rank_correlation",
          "saliency_topk_iou": "saliency_topk_iou", "agreement": "agreement"}
#: numbers of a dynamic step, with a plain meaning (used where the glossary has none)
_DYNAMIC = {
    "macs_mean": ("mean MACs", "Multiply-accumulates per example, averaged over the test "
                               "split: early exits and sliced paths make it input-dependent."),
    "macs_longest": ("longest-path MACs", "Multiply-accumulates of the most expensive path an "
                                          "input can take (no early exit, the largest sliced "
                                          "path): the worst case."),
    "exit_share": ("early exits", "Share of test examples that left at the branch because its "
                                  "top-1 probability reached the confidence threshold."),
    "paths": ("paths", "Distinct sliced paths after the branch (one per cluster of class "
                       "subsets)."),
    "latency_b1_mean_ms": ("mean latency", "Batch-1 latency averaged over test examples (each "
                                           "takes its own path)."),
    "latency_b1_p95_ms": ("p95 latency", "95th percentile of the batch-1 latency over test "
                                         "examples: close to the longest path."),
}


def _named(name: str, text: str) -> str:
    """``text`` under the glossary's label for ``name``, its plain meaning as a tooltip."""
    tip = meaning(name) or _DYNAMIC.get(name, ("", ""))[1]
    shown = label(name) if meaning(name) else _DYNAMIC.get(name, (label(name),))[0]
    return (f"<span class='xprune-metric' title='{html.escape(tip, quote=True)}'>"
            f"{html.escape(shown)} {text}</span>")


def _groups(now: dict[str, float], before: dict[str, float]) -> str:
    """Worst group, the gap, and each group's accuracy with its change since the original."""
    worst = min(now, key=lambda g: now[g] if now[g] == now[g] else float("inf"))
    items = []
    for g, a in now.items():
        b = before.get(g)
        change = f" {100 * (a - b):+.1f} pt" if b is not None and a == a and b == b else ""
        items.append(f"{html.escape(g)} {shown(a)}{change}")
    gap = max(now.values()) - min(now.values())
    tip = ("Accuracy of each sensitive group on the test split (change since the original); "
           "the gap is the best group's accuracy minus the worst's.")
    return (f"<span class='xprune-groups' title='{html.escape(tip, quote=True)}'>worst group "
            f"<b>{html.escape(worst)} {shown(now[worst])}</b>, gap {shown(gap)} "
            f"({'; '.join(items)})</span>")


def accuracy_text(step) -> str:
    """A step's test accuracy for a status message; a big model's step that has not measured it
    yet says so (the panel never measures to talk: *Measure* does)."""
    if "accuracy" in step.pending:
        return f"{NOT_MEASURED} (Measure)"
    acc = step.known().get("accuracy")
    return f"{acc:.4f}" if isinstance(acc, (int, float)) and acc == acc else "n/a"


class MetricsStrip:
    """Accuracy, parameters, MACs and latency of the current model against the original.

    The text always contains ``params N`` and ``accuracy X`` for the current model (outside
    checks read them); ``N`` is written without thousands separators.
    """

    def __init__(self) -> None:
        self.widget = W.HTML()
        self.widget.add_class("xprune-metrics")

    def update(self, study, latency_ms: float | None, original_latency_ms: float | None,
               worst_latency_ms: float | None = None) -> None:
        """Redraw for the current step; ``latency_ms`` is the batch-1 latency (for a dynamic
        step its mean over test examples, and ``worst_latency_ms`` its 95th percentile)."""
        step, first = study.step, study.history[0]
        # a display: it shows what is measured and never measures (a big model's accuracy is
        # measured on first ask: Measure)
        m, o = step.known(), first.known()
        parts = [f"<b>step {step.index}</b> {html.escape(step.label)}"]
        acc, oacc = m.get("accuracy"), o.get("accuracy")
        if "accuracy" in step.pending:
            original = "" if "accuracy" in first.pending or oacc is None else \
                f" (original {oacc:.4f})"
            parts.append(f"accuracy <i>{NOT_MEASURED}</i>{original} (Measure)")
        elif acc is not None:
            delta = 100 * (acc - oacc) if oacc is not None else 0.0
            original = (f"original {NOT_MEASURED}" if "accuracy" in first.pending
                        else "original n/a" if oacc is None
                        else f"original {oacc:.4f}, {delta:+.1f} pt")
            parts.append(f"accuracy <b>{acc:.4f}</b> ({original})")
        if step.known("per_group_accuracy"):
            parts.append(_groups(step.known("per_group_accuracy"),
                                 first.known("per_group_accuracy")))
        params, oparams = m.get("params"), o.get("params")
        if params is not None:
            text = f"params <b>{params}</b> ({_pct(params, oparams)} of {oparams})"
            nonzero = m.get("nonzero_params")
            if nonzero is not None and nonzero != params:
                text += f", nonzero {nonzero} ({_pct(nonzero, oparams)})"
            parts.append(text)
        macs, omacs = m.get("macs"), o.get("macs")
        dynamic = "exit_share" in m or "macs_longest" in m
        if macs is not None and dynamic:
            # input-adaptive: the MACs depend on the input; mean, worst case and exits
            parts.append(_named("macs_mean", f"<b>{macs}</b> ({_pct(macs, omacs)})"))
            longest = m.get("macs_longest")
            if longest is not None:
                parts.append(_named("macs_longest", f"<b>{longest}</b> "
                                                    f"({_pct(longest, omacs)})"))
            if m.get("exit_share") is not None:
                parts.append(_named("exit_share", f"<b>{100 * m['exit_share']:.1f}%</b>"))
            if m.get("paths") is not None:
                parts.append(_named("paths", f"<b>{m['paths']}</b>"))
        elif macs is not None:
            parts.append(f"MACs <b>{macs}</b> ({_pct(macs, omacs)})")
        if latency_ms is not None and original_latency_ms:
            if dynamic:
                text = (f"<b>{latency_ms:.3f} ms</b> (original {original_latency_ms:.3f} ms, "
                        "batch 1)")
                parts.append(_named("latency_b1_mean_ms", text))
                if worst_latency_ms is not None:
                    parts.append(_named("latency_b1_p95_ms", f"{worst_latency_ms:.3f} ms"))
            else:
                parts.append(f"latency <b>{latency_ms:.3f} ms</b> (original "
                             f"{original_latency_ms:.3f} ms, batch 1)")
        else:   # timed only on the Measure button (seconds on a big model)
            parts.append(f"latency <i>{NOT_MEASURED}</i> (Measure)")
        if step.index != first.index:
            drift = step.drift or {}
            for key, name in _DRIFT.items():
                if "drift" in step.pending:   # a big model: measured on first ask
                    parts.append(_named(name, f"<i>{NOT_MEASURED}</i>"))
                    continue
                if key not in drift:
                    continue
                value = drift[key]
                # the probe's number against the original, as in the history (one value)
                text = (f"<b>{shown(value)}</b>" if not is_missing(value) else
                        html.escape(shown(value, drift.get("saliency_reason")
                                          or "not measurable on the probe")))
                parts.append(_named(name, text + (" (probe)" if key != "agreement" else "")))
        self.widget.value = (TABLE_CSS + '<div class="xprune-strip" style="font-size:13px">'
                             + " · ".join(parts) + "</div>")

    @property
    def text(self) -> str:
        return _plain(self.widget.value)


class StatusLine:
    """What is running, what happened, and every error in plain words; plus a progress bar."""

    def __init__(self) -> None:
        self.widget = W.HTML()
        self.widget.add_class("xprune-status")
        self.bar = W.IntProgress(value=0, min=0, max=1, layout=W.Layout(width="160px",
                                                                        display="none"))
        self.bar.add_class("xprune-progress")
        self.bar_text = W.HTML()
        self.level = "info"
        self.set("info", "Ready. Choose a criterion and press Score.")

    def set(self, level: str, text: str) -> None:
        self.level = level
        color = _COLORS.get(level, "#444")
        self.widget.value = (f'<span style="color:{color}" data-level="{level}">'
                             f"{_ICONS.get(level, '')} {html.escape(text)}</span>")

    def progress(self, done: int, total: int, text: str = "") -> None:
        if total <= 0:
            self.bar.layout.display = "none"
            self.bar_text.value = ""
            return
        with self.bar.hold_sync():
            self.bar.max = total
            self.bar.value = min(done, total)
        self.bar.layout.display = None
        self.bar_text.value = f'<span style="font-size:12px">{html.escape(text)}</span>'

    @property
    def text(self) -> str:
        return _plain(self.widget.value)


def _plain(markup: str) -> str:
    text = re.sub(r"<style>.*?</style>", "", markup, flags=re.S)
    return html.unescape(re.sub(r"<[^>]+>", "", text)).strip()
