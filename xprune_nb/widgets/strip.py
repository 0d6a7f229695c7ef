"""The top of the panel: the metrics strip and the status line with its progress bar."""

from __future__ import annotations

import html
import re

import ipywidgets as W

from ._common import TABLE_CSS

__all__ = ["MetricsStrip", "StatusLine"]

_COLORS = {"ok": "#1b7f3b", "busy": "#1f5fbf", "warn": "#a15c00", "error": "#b00020",
           "info": "#444"}
_ICONS = {"ok": "✔", "busy": "⏳", "warn": "⚠", "error": "✖", "info": "ℹ"}


def _pct(a: float, b: float) -> str:
    return f"{100 * a / b:.1f}%" if b else "n/a"


class MetricsStrip:
    """Accuracy, parameters, MACs and latency of the current model against the original.

    The text always contains ``params N`` and ``accuracy X`` for the current model (outside
    checks read them); ``N`` is written without thousands separators.
    """

    def __init__(self) -> None:
        self.widget = W.HTML()
        self.widget.add_class("xprune-metrics")

    def update(self, study, latency_ms: float | None, original_latency_ms: float | None) -> None:
        step, first = study.step, study.history[0]
        m, o = step.metrics, first.metrics
        parts = [f"<b>step {step.index}</b> {html.escape(step.label)}"]
        acc, oacc = m.get("accuracy"), o.get("accuracy")
        if acc is not None:
            delta = 100 * (acc - oacc) if oacc is not None else 0.0
            parts.append(f"accuracy <b>{acc:.4f}</b> (original {oacc:.4f}, "
                         f"{delta:+.1f} pt)")
        params, oparams = m.get("params"), o.get("params")
        if params is not None:
            text = f"params <b>{params}</b> ({_pct(params, oparams)} of {oparams})"
            nonzero = m.get("nonzero_params")
            if nonzero is not None and nonzero != params:
                text += f", nonzero {nonzero} ({_pct(nonzero, oparams)})"
            parts.append(text)
        macs, omacs = m.get("macs"), o.get("macs")
        if macs is not None:
            parts.append(f"MACs <b>{macs}</b> ({_pct(macs, omacs)})")
        if latency_ms is not None and original_latency_ms:
            parts.append(f"latency <b>{latency_ms:.3f} ms</b> (original "
                         f"{original_latency_ms:.3f} ms, batch 1)")
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
