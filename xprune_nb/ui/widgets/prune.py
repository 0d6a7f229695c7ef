"""Prune section: how much, where, and a preview before anything changes."""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as W

from ...core.scores import NORMALIZATIONS
from ...pruning.selection import SCOPES
from ._common import defaults_of, frame_html, note_html, parse_layer_amounts

__all__ = ["PruneView"]


class PruneView:
    """Controls mapped to the arguments of :meth:`Study.prune`, the preview and the last step."""

    def __init__(self, study) -> None:
        defaults = defaults_of(type(study).prune)
        self.amount = W.FloatSlider(value=0.3, min=0.0, max=0.95, step=0.05,
                                    description="amount", readout_format=".0%",
                                    continuous_update=False)
        self.scope = W.Dropdown(options=SCOPES, value=defaults.get("scope", "global"),
                                description="scope")
        self.normalize = W.Dropdown(options=[(str(n) if n else "none", n) for n in NORMALIZATIONS],
                                    value=defaults.get("normalize", "mean"),
                                    description="normalise")
        self.ignore = W.SelectMultiple(options=[], rows=4, description="ignore")
        self.layer_amounts = W.Text(value="", description="overrides",
                                    placeholder="e.g. conv1=0.5, fc1=0.2")
        self.preview_html = W.HTML()
        self.result_html = W.HTML()
        help_text = note_html(
            "<i>amount</i> is the fraction of the units alive now to remove; <i>global</i> ranks "
            "all layers together (scores normalised per layer), <i>layer</i> removes the same "
            "fraction everywhere. <i>ignore</i> protects layers; <i>overrides</i> set a "
            "fraction per layer. <b>Preview</b> shows what would go, without changing anything; "
            "<b>Prune</b> commits.")
        self.widget = W.VBox([
            W.HTML(help_text),
            W.HBox([self.amount, self.scope, self.normalize]),
            W.HBox([self.ignore, self.layer_amounts]),
            self.preview_html, self.result_html,
        ])

    def set_groups(self, keys: list[str]) -> None:
        """Offer the groups of the current scores in *ignore*, keeping what is still valid."""
        keep = tuple(k for k in self.ignore.value if k in keys)
        self.ignore.options = list(keys)
        self.ignore.value = keep

    def config(self) -> dict[str, Any]:
        """Keyword arguments of :meth:`Study.prune`."""
        return {"amount": round(float(self.amount.value), 6), "scope": self.scope.value,
                "normalize": self.normalize.value, "ignore": list(self.ignore.value),
                "layer_amounts": parse_layer_amounts(self.layer_amounts.value)}

    def show_preview(self, preview) -> None:
        self.preview_html.value = (f"<b>Preview</b> (nothing changed yet): "
                                   f"{html.escape(preview.summary())}"
                                   + frame_html(preview.to_frame(), index=False))
        self.result_html.value = ""

    def show_step(self, step) -> None:
        removed = {k: len(v) for k, v in step.removed.items()}
        self.preview_html.value = ""
        self.result_html.value = (
            f"<b>Step {step.index}</b>: {html.escape(step.label)} removed "
            f"{sum(removed.values())} units ("
            + html.escape(", ".join(f"{k}: {n}" for k, n in removed.items()) or "none") + ").")
