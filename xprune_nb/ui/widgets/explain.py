"""Explain section: saliency and Shapley comparisons between two steps, and why units went."""

from __future__ import annotations

import html
import inspect
import re
from collections.abc import Callable
from typing import Any

import ipywidgets as W

from ...core.errors import ConfigError
from ...explain.compare import PerInputDrift
from ...explain.glossary import label, meaning
from ...explain.lookup import latest_prune
from ...explain.rows import misclassified_rows
from ._common import frame_html, note_html
from ._plots import plot_to_png

__all__ = ["ExplainView", "call_supported"]

_KINDS = ("saliency", "shapley", "why", "drift", "attention", "forgotten")
_INPUT_MODES = [("first n test examples", "first"),
                ("misclassified after pruning", "misclassified"),
                ("these test indices", "indices")]


def _names(module: str, attr: str, fallback: tuple[str, ...]) -> list[str]:
    import importlib

    try:
        return list(getattr(importlib.import_module(module), attr))
    except Exception:  # noqa: BLE001 - the explain extra may be missing; fall back to defaults
        return list(fallback)


def call_supported(func: Callable, **kwargs: Any) -> Any:
    """Call ``func`` with the keyword arguments its signature names (``None`` ones dropped).

    Catch-all ``**options`` of a study method are for the method's own options, so only named
    parameters are passed.

    Examples
    --------
    >>> call_supported(lambda a=1: a, a=2, b=3)
    2
    """
    params = inspect.signature(func).parameters
    return func(**{k: v for k, v in kwargs.items() if v is not None and k in params
                   and params[k].kind is not inspect.Parameter.VAR_KEYWORD})


class ExplainView:
    """Controls mapped to ``Study.saliency``, ``Study.shapley`` and ``Study.why``; their plots
    and drift numbers."""

    def __init__(self) -> None:
        self.before = W.Dropdown(options=[], description="before")
        self.after = W.Dropdown(options=[], description="after")
        self.inputs = W.Dropdown(options=_INPUT_MODES, value="first", description="inputs")
        self.n = W.BoundedIntText(value=4, min=1, max=256, description="n")
        self.indices = W.Text(value="", description="indices", placeholder="e.g. 0, 5, 17")
        self.method = W.Dropdown(
            options=_names("xprune_nb.explain.saliency", "METHODS",
                           ("saliency", "integrated_gradients", "gradcam", "occlusion")),
            value="saliency", description="saliency")
        self.explainer = W.Dropdown(
            options=_names("xprune_nb.explain.shapley", "EXPLAINERS", ("auto",)),
            value="auto", description="shapley")
        self.saliency_button = W.Button(description="Saliency", icon="eye")
        self.saliency_button.add_class("xprune-saliency")
        self.shapley_button = W.Button(description="Shapley", icon="balance-scale")
        self.shapley_button.add_class("xprune-shapley")
        self.why_button = W.Button(description="Why removed", icon="question")
        self.why_button.add_class("xprune-why")
        self.drift_button = W.Button(description="Drift", icon="line-chart",
                                     tooltip="Accuracy and saliency similarity along the history")
        self.drift_button.add_class("xprune-drift")
        self.attention_button = W.Button(description="Attention maps", icon="th",
                                         tooltip="Attention per head and layer, and rollout, "
                                                 "before vs after")
        self.attention_button.add_class("xprune-attention")
        self.forgotten_button = W.Button(description="What was forgotten", icon="user-times",
                                         tooltip="Test examples whose prediction changed, per-"
                                                 "class accuracy change, their saliency")
        self.forgotten_button.add_class("xprune-forgotten")
        # attention only for a model whose attention probabilities can be read
        self.attention_row = W.HBox([self.attention_button,
                                     W.HTML(note_html("attention maps and rollout of both "
                                                      "steps on the probe inputs"))],
                                    layout=W.Layout(display="none"))
        self.html = {k: W.HTML() for k in _KINDS}
        # one row per probe input can make tall figures: keep them within a screen
        self.plots = {k: W.Image(format="png", layout=W.Layout(
            max_width="760px", max_height="640px", object_fit="contain", display="none"))
            for k in _KINDS}
        help_text = note_html(
            "How did pruning change what the model looks at? Compare two steps on probe inputs "
            "from the test split: saliency maps and Shapley values, with drift numbers "
            "(rank correlation, top-k overlap, prediction agreement); token models show "
            "highlighted text. <i>Why removed</i> explains the last prune or dynamic step; "
            "<i>What was forgotten</i> lists the test examples whose prediction changed.")
        self.widget = W.VBox([
            W.HTML(help_text),
            W.HBox([self.before, self.after]),
            W.HBox([self.inputs, self.n, self.indices]),
            W.HBox([self.method, self.saliency_button]),
            W.HBox([self.explainer, self.shapley_button, self.why_button, self.drift_button]),
            self.attention_row,
            W.HBox([self.forgotten_button]),
            *[w for k in _KINDS for w in (self.html[k], self.plots[k])],
        ])

    def set_model(self, study) -> None:
        """Offer what the model supports: attention maps only when it has readable attention."""
        self.has_attention = _has_attention(study.original)
        self.attention_row.layout.display = None if self.has_attention else "none"

    def refresh(self, study) -> None:
        options = [(f"{s.index}: {s.label}", s.index) for s in study.history]
        for dd, value in ((self.before, 0), (self.after, study.current)):
            dd.options = options
            dd.value = value

    def _inputs(self, study) -> list[int] | None:
        mode = self.inputs.value
        if mode == "indices":
            tokens = [t for t in re.split(r"[,\s]+", self.indices.value.strip()) if t]
            if not tokens or not all(t.isdigit() for t in tokens):
                raise ConfigError.bad_value("Panel.explain", "indices",
                                            "test-split indices separated by commas, e.g. "
                                            "'0, 5, 17'", self.indices.value)
            return [int(t) for t in tokens]
        if mode == "misclassified":
            return misclassified_rows(study, self.after.value, int(self.n.value))
        return None

    def saliency_config(self, study) -> dict[str, Any]:
        """Keyword arguments of ``Study.saliency``."""
        return {"before": self.before.value, "after": self.after.value,
                "method": self.method.value, "inputs": self._inputs(study),
                "n": int(self.n.value)}

    def shapley_config(self, study) -> dict[str, Any]:
        """Keyword arguments of ``Study.shapley``."""
        return {"before": self.before.value, "after": self.after.value,
                "explainer": self.explainer.value, "inputs": self._inputs(study),
                "n": int(self.n.value)}

    def attention_config(self, study) -> dict[str, Any]:
        """Keyword arguments of ``Study.attention_maps``."""
        return {"before": self.before.value, "after": self.after.value,
                "inputs": self._inputs(study), "n": int(self.n.value)}

    def forgotten_config(self, study) -> dict[str, Any]:
        """Keyword arguments of ``Study.forgotten`` (saliency of up to *n* changed examples)."""
        return {"before": self.before.value, "after": self.after.value,
                "n_examples": int(self.n.value), "method": self.method.value}

    def why_config(self, study) -> dict[str, Any]:
        """Keyword arguments of ``Study.why``: the prune step behind *after*."""
        return {"step": latest_prune(study, self.after.value, "Panel.why")}

    def show(self, kind: str, result) -> None:
        """Show a comparison (``saliency``/``shapley``), a why-report or the drift table."""
        text, plot = self.html[kind], self.plots[kind]
        head = f"<b>{html.escape(kind.capitalize())}</b>"
        summary = getattr(result, "summary", None)
        if callable(summary):
            # a display computes nothing: deferred curves show "not measured yet"
            lazy = {"measure": False} if isinstance(result, PerInputDrift) else {}
            numbers = summary(**lazy)
            if isinstance(numbers, dict):
                gone = result.not_available(**lazy) if callable(
                    getattr(result, "not_available", None)) else {}
                targets = getattr(result, "targets", None)
                if targets is not None:
                    # a comparison's numbers are of these rows, not the history's probe
                    head += f" (these {len(targets)} rows)"
                # each number under its glossary name, its plain meaning as a tooltip
                head += ": " + ", ".join(_number_html(k, v, gone.get(k))
                                         for k, v in numbers.items())
        if kind in ("why", "drift") and hasattr(result, "to_frame"):
            head += frame_html(result.to_frame().head(20), index=kind == "drift")
        if kind == "attention":
            head += frame_html(result.layer_frame(), index=False)
        if kind == "forgotten":
            head += _forgotten_html(result)
        if _is_tokens(result):
            # token models: highlighted text, not heat maps
            text.value = head + result._repr_html_()
            plot.layout.display = "none"
            return
        text.value = head
        if hasattr(result, "plot"):
            plot.value = plot_to_png(result.plot)
            plot.layout.display = None


def _is_tokens(result) -> bool:
    return hasattr(result, "tokens") and hasattr(result, "_repr_html_")


def _has_attention(model) -> bool:
    try:
        from ...models.mechanisms.attention.maps import attention_modules

        return bool(attention_modules(model)[0])
    except Exception:  # noqa: BLE001 - without the explain extra there are no attention maps
        return False


def _forgotten_html(report) -> str:
    """Per-class accuracy change, the changed examples, and their saliency (as HTML for token
    models; the per-class bars are the plot)."""
    out = frame_html(report.per_class(), index=False)
    frame = report.to_frame()
    if len(frame):
        out += note_html(f"{len(frame)} test examples changed prediction; the first 20, most "
                         "forgotten first:") + frame_html(frame.head(20), index=False)
    saliency = report.saliency
    if saliency is not None:
        if _is_tokens(saliency):
            out += saliency._repr_html_()
        else:
            out += (f'<img style="max-width:760px" src="data:image/png;base64,'
                    f'{_b64(plot_to_png(saliency.plot))}"/>')
    return out


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode("ascii")


def _number_html(name: str, value, reason: str | None = None) -> str:
    from ...explain.numbers import is_missing
    from ...explain.numbers import shown as show

    if isinstance(value, float):
        # a mean that left inputs out says so; a missing one says why
        shown = show(value, reason) + (f" ({reason})" if reason and not is_missing(value)
                                       else "")
    else:
        shown = str(value)
    base = name.removesuffix("_before").removesuffix("_after")
    suffix = name[len(base):].replace("_", " ")
    text = html.escape(f"{label(base)}{suffix} {shown}")
    tip = meaning(base)
    return (f"<span class='xprune-drift-number' title='{html.escape(tip, quote=True)}'>{text}"
            "</span>") if tip else text
