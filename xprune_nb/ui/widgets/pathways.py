"""Pathways section: the relevance-flow map of the current step against a chosen one
(``Study.pathways_compare``), a class picker that re-colours it, and a unit picker that shows
the unit's why-row."""

from __future__ import annotations

import html

import ipywidgets as W

from ._common import frame_html, note_html

__all__ = ["PathwaysView"]

_ALL = "all classes"


class PathwaysView:
    """Controls mapped to ``Study.pathways_compare(before=<chosen step>, after=<current>,
    classes=...)``; the two maps, one sentence per class, and a unit's why-row."""

    def __init__(self) -> None:
        self.against = W.Dropdown(options=[], description="against")
        self.classes = W.SelectMultiple(options=[], description="classes", rows=4)
        self.top = W.BoundedIntText(value=8, min=2, max=64, description="units/layer")
        self.button = W.Button(description="Map pathways", icon="sitemap",
                               tooltip="Relevance flow between units, current step vs chosen")
        self.button.add_class("xprune-pathways")
        self.colour = W.ToggleButtons(options=[_ALL], description="colour by")
        self.colour.add_class("xprune-pathways-class")
        self.unit = W.Select(options=[], description="unit", rows=6)
        self.unit.add_class("xprune-pathways-unit")
        self.why = W.HTML()
        self.why.add_class("xprune-pathways-why")
        self.sentences = W.HTML()
        self.sentences.add_class("xprune-pathways-sentences")
        self.before_map, self.after_map = W.HTML(), W.HTML()
        self.after_map.add_class("xprune-pathways-map")
        self.result = None
        self.colour.observe(lambda _c: self._draw(), names="value")
        self.unit.observe(lambda _c: self._show_unit(), names="value")
        help_text = note_html(
            "Which units carry each class's evidence from layer to layer, which of them pruning "
            "removed (hollow), and where that evidence went: relevance (LRP) flows between "
            "units of consecutive layers, for the current step and the chosen one. Pick a unit "
            "to see its why-row; pick a class to re-colour the maps.")
        self.widget = W.VBox([
            W.HTML(help_text),
            W.HBox([self.against, self.classes, self.top, self.button]),
            self.sentences, self.colour,
            W.HBox([W.VBox([W.HTML("<b>chosen step</b>"), self.before_map]),
                    W.VBox([W.HTML("<b>current step</b>"), self.after_map])]),
            W.HBox([self.unit, self.why]),
        ])

    def refresh(self, study) -> None:
        steps = [(f"{s.index}: {s.label}", s.index) for s in study.history]
        keep = self.against.value
        self.against.options = steps
        self.against.value = keep if keep in dict(steps).values() else 0
        names = [str(n) for n in study.data.class_names]
        if list(self.classes.options) != names:
            self.classes.options = names
            self.classes.value = tuple(names[: min(3, len(names))])

    def config(self, study) -> dict:
        """The arguments of ``Study.pathways_compare`` the controls stand for."""
        return {"before": self.against.value, "after": study.current,
                "classes": list(self.classes.value) or None}

    def show(self, comparison) -> None:
        """Show a :class:`~xprune_nb.explain.pathways.PathwaysComparison`."""
        self.result = comparison
        frame = comparison.to_frame()
        self.sentences.value = "<ul>" + "".join(
            f"<li>{html.escape(s)}</li>" for s in frame["sentence"]) + "</ul>" + frame_html(
            frame.drop(columns=["sentence"]), index=False)
        after = comparison.after
        self.colour.options = [_ALL] + [after.class_name(c) for c in after.classes]
        self.colour.value = _ALL
        self._draw()
        drawn = self._units()
        self.unit.options = [(f"{layer}:{u}", (layer, u)) for layer in after.layers
                             for u in drawn[layer]]

    def _units(self) -> dict:
        comp = self.result
        units = comp.before.top_units(None, self.top.value)
        for layer, gone in comp.removed_between().items():
            units[layer] = sorted(set(units[layer]) | set(sorted(gone)[: self.top.value // 3]))
        return units

    def _draw(self) -> None:
        if self.result is None:
            return
        cls = None if self.colour.value == _ALL else self.colour.value
        units = self._units()
        for view, p in ((self.before_map, self.result.before),
                        (self.after_map, self.result.after)):
            view.value = p.to_html(top=self.top.value, cls=cls, units=units)

    def _show_unit(self) -> None:
        if self.result is None or self.unit.value is None:
            return
        layer, unit = self.unit.value
        rows = [dict(self.result.before.why_row(layer, unit), step=self.result.before.step),
                dict(self.result.after.why_row(layer, unit), step=self.result.after.step)]
        import pandas as pd

        self.why.value = frame_html(pd.DataFrame(rows).set_index("step"), index=True)
