"""Score section: which criterion, on which units, from which reference examples."""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as W

from ... import criteria
from ...core.errors import ConfigError
from ._common import defaults_of, frame_html, note_html, parse_classes
from ._plots import figure, to_png

__all__ = ["ScoreView"]

_NOTHING = object()  # "no scores shown yet", distinct from "the step has no scores" (None)


class ScoreView:
    """Controls mapped to the arguments of :meth:`Study.score`, and the scores' plots.

    Every registered criterion is offered (explainability-aware ones included); the options of
    the chosen criterion appear as their own controls, read from the criterion's ``options``
    and ``choices``.
    """

    def __init__(self, study) -> None:
        self._class_names = list(study.data.class_names)
        defaults = defaults_of(type(study).score)
        names = criteria.available()
        self.criterion = W.Dropdown(options=names, value=defaults.get("criterion", names[0]),
                                    description="criterion")
        from ...pruning import units

        # only the unit kinds this model has (heads for transformers, blocks for residual nets)
        self._kinds = units.present(study.model, study.env) or ["weight"]
        self.granularity = W.Dropdown(options=self._kinds,
                                      value=defaults.get("granularity", "channel")
                                      if defaults.get("granularity") in self._kinds
                                      else self._kinds[0],
                                      description="granularity")
        samples = defaults.get("samples")
        self.samples = W.Text(value="" if samples is None else str(samples),
                              description="samples", placeholder="default (up to 256)")
        self.classes = W.Text(value="", description="classes",
                              placeholder="all (or e.g. 3, 8)")
        self.about = W.HTML()
        self.options_box = W.HBox()
        self._option_widgets: dict[str, W.Widget] = {}
        self.plot = W.Image(format="png", layout=W.Layout(max_width="760px"))
        self.table = W.HTML()
        self._shown: Any = _NOTHING
        self.criterion.observe(self._on_criterion, names="value")
        self._on_criterion()
        help_text = note_html(
            "Scores rank every prunable unit (conv channel / neuron, weight, attention head or "
            "whole block; the choices are what this model has). "
            "<i>samples</i> reference examples are drawn stratified by class; with "
            "<i>classes</i> only those classes count. Press <b>Score</b> above.")
        self.widget = W.VBox([
            W.HTML(help_text),
            W.HBox([self.criterion, self.granularity]),
            W.HBox([self.samples, self.classes]),
            self.about, self.options_box, self.plot, self.table,
        ])

    @property
    def kinds(self) -> list[str]:
        """The unit kinds this model has (what the granularity dropdowns offer)."""
        return list(self._kinds)

    def _on_criterion(self, change: Any = None) -> None:
        """Show the chosen criterion's description and one control per option."""
        name = self.criterion.value
        try:
            cls = criteria.get(name)
        except Exception as exc:  # noqa: BLE001 - e.g. its optional dependency is missing
            self.about.value = note_html(
                f"{html.escape(name)} cannot be used here: {html.escape(str(exc))}", "#b00020")
            self.options_box.children = ()
            self._option_widgets = {}
            return
        doc = (cls.__doc__ or "").strip().splitlines()
        # first docstring line, without reStructuredText's double backquotes
        about = html.escape(doc[0].replace("``", "")) if doc else ""
        if cls.reference:
            about += f" <i>{html.escape(cls.reference)}</i>"
        self.about.value = note_html(about)
        from ...pruning import units

        allowed = units.scorable_by(cls, self._kinds)
        if allowed:
            keep = self.granularity.value if self.granularity.value in allowed else allowed[0]
            self.granularity.options = allowed
            self.granularity.value = keep
        self._option_widgets = {key: _option_control(key, default, cls.choices.get(key))
                                for key, default in cls.options.items()}
        self.options_box.children = tuple(self._option_widgets.values())

    def config(self) -> dict[str, Any]:
        """Keyword arguments of :meth:`Study.score`."""
        options = {}
        for key, w in self._option_widgets.items():
            value = w.value
            if isinstance(w, W.Text):
                value = value.strip() or None
            options[key] = value
        return {"criterion": self.criterion.value, "granularity": self.granularity.value,
                "samples": _parse_samples(self.samples.value),
                "classes": parse_classes(self.classes.value, self._class_names), **options}

    def show(self, scores) -> None:
        """Per-layer importance (box plot) and the distribution of all normalised scores."""
        self.table.value = frame_html(scores.summary(), index=False)
        fig, (ax1, ax2) = figure(8.5, 2.8, ncols=2)
        scores.plot(ax=ax1)
        values = [v.flatten().float() for v in scores.normalized("mean").values()]
        import torch

        ax2.hist(torch.cat(values).numpy(), bins=40, color="#4c72b0")
        ax2.set_xlabel("normalised score")
        ax2.set_ylabel("units")
        ax2.set_title(f"distribution ({scores.num_units} units)")
        self.plot.value = to_png(fig)
        self.plot.layout.display = None
        self._shown = (scores.step, id(scores))

    def sync(self, study) -> None:
        """Show the scores of the current step, or say that it has none yet."""
        scores = study.scores_at(study.current)
        if self._shown is not _NOTHING and self._shown == (study.current, id(scores)):
            return
        self._shown = (study.current, id(scores))
        if scores is None:
            self.plot.layout.display = "none"
            self.table.value = note_html(f"No scores for the current model (step "
                                         f"{study.current}) yet: press Score.")
        else:
            self.show(scores)


def _option_control(key: str, default: Any, choices: tuple | None) -> W.Widget:
    if choices:
        return W.Dropdown(options=list(choices), value=default, description=key)
    if isinstance(default, bool):
        return W.Checkbox(value=default, description=key)
    if isinstance(default, int):
        return W.IntText(value=default, description=key)
    if isinstance(default, float):
        return W.FloatText(value=default, description=key)
    return W.Text(value="" if default is None else str(default), description=key)


def _parse_samples(text: str) -> int | None:
    text = text.strip()
    if not text:
        return None
    if not text.isdigit() or int(text) < 1:
        raise ConfigError.bad_value("Panel.score", "samples",
                                    "a positive integer, or empty for the default", text)
    return int(text)
