"""Sensitivity section: each layer pruned alone at several amounts, as a clickable heat map.

*Run* calls :meth:`Study.sensitivity` (on copies: the study never changes). The heat map is a
grid of buttons, one per (layer, amount), coloured by the damage; clicking a cell (or choosing
the layer and amount in the dropdowns and pressing *Preview cell*) previews pruning that layer
alone at that amount with :meth:`Study.preview`.
"""

from __future__ import annotations

import html
import math
from typing import Any

import ipywidgets as W

from ... import criteria
from ._common import defaults_of, note_html, parse_number, parse_numbers
from ._plots import plot_to_png

__all__ = ["SensitivityView"]

_CALL = "Panel.sensitivity"
_METRICS = ("accuracy", "loss", "drift")
_GROUP_METRICS = ("worst_group_accuracy", "group_accuracy_gap")
#: the largest heat map drawn as buttons (rows); a bigger one is shown as the image only
MAX_GRID_ROWS = 60


def _damage_color(value: float, worst: float) -> str:
    """White (no damage) to red (the worst cell); grey for a cell that could not be measured."""
    if not math.isfinite(value):
        return "#dddddd"
    share = 0.0 if worst <= 0 else min(max(value / worst, 0.0), 1.0)
    green = int(round(255 - 175 * share))
    return f"#ff{green:02x}{green:02x}"


class SensitivityView:
    """Controls mapped to :meth:`Study.sensitivity`, its plots and the clickable heat map."""

    def __init__(self, study, kinds: list[str] | None = None) -> None:
        from ...pruning import units
        from ...pruning.sensitivity import DEFAULT_AMOUNTS

        d = defaults_of(type(study).sensitivity)
        names = criteria.available()
        # the unit kinds this model has (the panel passes the Score tab's, found once)
        self._kinds = kinds or units.present(study.model, study.env) or ["weight"]
        self.criterion = W.Dropdown(options=names, description="criterion",
                                    value=d.get("criterion") if d.get("criterion") in names
                                    else names[0])
        self.granularity = W.Dropdown(options=self._kinds, description="granularity",
                                      value="channel" if "channel" in self._kinds
                                      else self._kinds[0])
        self.amounts = W.Text(value=", ".join(f"{a:g}" for a in d.get("amounts",
                                                                         DEFAULT_AMOUNTS)),
                              description="amounts", layout=W.Layout(width="420px"))
        # a study with sensitive groups can also rank layers by their worst-group cost
        metrics = _METRICS + (_GROUP_METRICS if getattr(study.data, "group_names", None)
                              else ())
        self.metric = W.Dropdown(options=metrics, value=d.get("metric", "accuracy"),
                                 description="metric")
        self.samples = W.Text(value="", description="samples", placeholder="default")
        self.run_button = W.Button(description="Run sensitivity", icon="th",
                                   button_style="primary",
                                   tooltip="Prune each layer alone at each amount, on copies")
        self.run_button.add_class("xprune-sensitivity")
        self.plot = W.Image(format="png", layout=W.Layout(max_width="820px", display="none"))
        self.summary = W.HTML()
        self.grid = W.GridBox()
        self.layer = W.Dropdown(options=[], description="layer")
        self.amount = W.Dropdown(options=[], description="amount")
        self.preview_button = W.Button(description="Preview cell", icon="eye",
                                       tooltip="What pruning this layer alone at this amount "
                                               "removes (nothing changes)")
        self.preview_button.add_class("xprune-sensitivity-preview")
        self.preview_html = W.HTML()
        self.result = None       # the last Sensitivity
        self.used: dict = {}     # the arguments it was run with
        self.on_cell = None      # set by the panel: called after a cell is clicked
        #: where a failure inside a dropdown callback is reported (the panel's status line)
        self.on_error = lambda text: setattr(self.summary, "value", note_html(
            html.escape(text), "#b00020"))
        self.criterion.observe(self._on_criterion, names="value")
        self.metric.observe(self._on_metric, names="value")
        self._on_criterion()
        help_text = note_html(
            "How much can each layer lose? Every layer (group) is pruned <i>alone</i> at each "
            "amount on a copy, BatchNorm recalibrated, and measured on the validation split "
            "(accuracy, loss) and the probe (drift = 1 − saliency rank correlation with the "
            "original). The study does not change. Click a cell of the heat map to preview "
            "that layer's prune.")
        self.widget = W.VBox([
            W.HTML(help_text),
            W.HBox([self.criterion, self.granularity, self.metric]),
            W.HBox([self.amounts, self.samples, self.run_button]),
            self.summary, self.grid,
            W.HBox([self.layer, self.amount, self.preview_button]),
            self.preview_html, self.plot,
        ])

    def _on_criterion(self, change: Any = None) -> None:
        from ...pruning import units

        try:
            cls = criteria.get(self.criterion.value)
        except Exception:  # noqa: BLE001 - the core names the problem when Run is pressed
            return
        allowed = units.scorable_by(cls, self._kinds)
        if allowed:
            keep = self.granularity.value if self.granularity.value in allowed else allowed[0]
            self.granularity.options = allowed
            self.granularity.value = keep

    def config(self) -> dict[str, Any]:
        """Keyword arguments of :meth:`Study.sensitivity`."""
        return {"criterion": self.criterion.value, "granularity": self.granularity.value,
                "amounts": parse_numbers(self.amounts.value, _CALL, "amounts"),
                "metric": self.metric.value,
                "samples": parse_number(self.samples.value, _CALL, "samples", integer=True)}

    def cell(self) -> tuple[str, float]:
        """The (layer, amount) chosen in the dropdowns."""
        from ...core.errors import ConfigError

        if self.result is None:
            raise ConfigError("Panel.sensitivity_preview: run the sensitivity analysis first "
                              "(Run sensitivity), then pick a cell.")
        return self.layer.value, float(self.amount.value)

    def show(self, result, config: dict | None = None) -> None:
        """The summary, the curves and heat map (image) and the clickable grid; ``config`` is
        what the analysis was run with (a cell's preview scores with the same samples)."""
        self.result, self.used = result, dict(config or {})
        self.summary.value = f"<b>{html.escape(result.summary())}</b>"
        layers, amounts = result.layers, list(result.amounts)
        self.layer.options = layers
        self.amount.options = [(f"{a:.0%}", a) for a in amounts]
        if layers:
            worst = result.most_sensitive(metric=self.metric.value)
            self.layer.value = worst.index[0] if len(worst) else layers[0]
            self.amount.value = amounts[len(amounts) // 2]
        self._draw()

    def _on_metric(self, change: Any = None) -> None:
        if self.result is None:
            return
        try:
            self._draw()
        except Exception as exc:  # noqa: BLE001 - a dropdown callback must not fail silently
            self.on_error(f"Drawing the heat map failed: {type(exc).__name__}: {exc}")

    def _draw(self) -> None:
        result, metric = self.result, self.metric.value
        self.plot.value = plot_to_png(lambda: result.plot(metric=metric))
        self.plot.layout.display = None
        self.grid.children = self._cells(result, metric)

    def _cells(self, result, metric: str) -> tuple:
        table = result.table(metric).astype(float)
        if len(table) > MAX_GRID_ROWS:
            return (W.HTML(note_html(f"{len(table)} layers: too many for a clickable grid; "
                                     "pick the cell in the dropdowns below.")),)
        damage = result.damage(metric)
        finite = [v for v in damage.to_numpy().ravel() if math.isfinite(v)]
        worst = max(finite) if finite else 0.0
        notes = {(r["layer"], r["amount"]): r.get("note") or "" for r in result.rows}
        cells = [W.HTML(f"<small>{html.escape(metric)} ↓ layer / amount →</small>")]
        cells += [W.HTML(f"<b>{a:.0%}</b>") for a in table.columns]
        for layer in table.index:
            cells.append(W.HTML(f"<code>{html.escape(str(layer))}</code>"))
            for amount in table.columns:
                value = float(table.loc[layer, amount])
                note = notes.get((layer, amount), "")
                tip = (f"{layer} alone at {amount:.0%}: {metric} {value:.4f}"
                       + (f" ({note})" if note else "") + ". Click to preview.")
                button = W.Button(description="n/a" if not math.isfinite(value)
                                  else f"{value:.3f}", tooltip=tip,
                                  layout=W.Layout(width="auto", height="26px"))
                button.style.button_color = _damage_color(float(damage.loc[layer, amount]),
                                                          worst)
                button.add_class("xprune-sensitivity-cell")
                button.on_click(lambda _b, lay=layer, am=amount: self._click(lay, am))
                cells.append(button)
        self.grid.layout.grid_template_columns = (f"max-content repeat({len(table.columns)}, "
                                                  "minmax(56px, max-content))")
        return tuple(cells)

    def click(self, layer: str, amount: float) -> None:
        """Choose a cell, as a click on the heat map does (then the panel previews it)."""
        self._click(layer, amount)

    def _click(self, layer: str, amount: float) -> None:
        self.layer.value = layer
        self.amount.value = amount
        if self.on_cell is not None:
            self.on_cell()

    def show_preview(self, preview, layer: str, amount: float, scored: str | None) -> str:
        """Show what pruning ``layer`` alone at ``amount`` removes; returns the status text."""
        from ._common import frame_html

        removed = preview.removed
        text = (f"Pruning {layer!r} alone at {amount:.0%} would remove {removed} "
                f"{preview.noun}: params {preview.params[0]} → {preview.params[1]}, MACs "
                f"{preview.macs[0]} → {preview.macs[1]}")
        row = next((r for r in self.result.rows if r["layer"] == layer
                    and r["amount"] == amount), None)
        if row is not None and row.get("accuracy") == row.get("accuracy"):
            text += f"; measured validation accuracy {row['accuracy']:.4f}"
        text += ". Nothing was changed"
        if scored:
            text += f" (the current model was scored with {scored} first, as the analysis was)"
        text += (f"; to commit it, Prune with amount 0% and the override "
                 f"'{layer}={amount:g}' (Prune tab).")
        self.preview_html.value = (f"<b>Preview</b>: {html.escape(text)}"
                                   + frame_html(preview.to_frame(), index=False))
        return text
