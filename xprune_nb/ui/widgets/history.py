"""History section: every step, restoring one, comparing two, and accuracy against size."""

from __future__ import annotations

import ipywidgets as W

from ...explain.numbers import is_missing, shown
from ...measure.step import NOT_MEASURED
from ._common import frame_html, note_html
from ._plots import figure, to_png

__all__ = ["HistoryView"]

_COLUMNS = {"parent": "parent", "action": "action", "accuracy": "accuracy",
            "params": "params", "nonzero_params": "nonzero", "macs": "MACs",
            "macs_longest": "longest-path MACs", "exit_share": "early exits",
            "sparsity": "sparsity",
            "saliency_rank_correlation": "saliency rank correlation (probe)",
            "note": "note"}
#: the longest note shown in the table (the whole note is in ``study.history[i].note``)
NOTE_CHARS = 90


def _short(note: str | None) -> str:
    note = note or ""
    return note if len(note) <= NOTE_CHARS else note[:NOTE_CHARS - 1] + "…"


def _probe_number(step):
    """The step's probe rank correlation, or ``n/a: reason`` (never a bare NaN)."""
    drift = step.drift or {}
    value = drift.get("saliency_spearman", drift.get("spearman"))
    if value is None or not is_missing(value):
        return value
    return shown(value, drift.get("saliency_reason") or "not measurable on the probe")


class HistoryView:
    """The study's history as a table (class ``xprune-history``) with *Go to* and *Compare*.

    *Undo* is in the panel's top bar; *Go to* restores any step, and a new action from there
    starts a branch (nothing is lost).
    """

    def __init__(self) -> None:
        self.table = W.HTML()
        self.table.add_class("xprune-history")
        self.step = W.Dropdown(options=[], description="step")
        self.goto_button = W.Button(description="Go to", icon="history",
                                    tooltip="Restore the exact model of this step")
        self.goto_button.add_class("xprune-goto")
        self.a = W.Dropdown(options=[], description="compare",
                            layout=W.Layout(width="230px"))
        self.b = W.Dropdown(options=[], description="with",
                            layout=W.Layout(width="230px"))
        self.compare_button = W.Button(description="Compare", icon="columns")
        self.compare_button.add_class("xprune-compare")
        self.compare_html = W.HTML()
        self.plot = W.Image(format="png", layout=W.Layout(max_width="520px", display="none"))
        self._drawn: tuple | None = None
        self._stale = False   # the table waits for the tab's first show
        self.visible = False
        self.widget = W.VBox([
            self.table,
            W.HBox([self.step, self.goto_button]),
            W.HBox([self.a, self.b, self.compare_button]),
            self.compare_html, self.plot,
        ])

    def refresh(self, study, table: bool = True) -> None:
        """Redraw the table and the step pickers; the plot only when the history changed.

        ``table=False`` updates the pickers only and leaves the table for :meth:`show` (the
        panel opens without building it: the first table imports pandas, ~0.8 s).
        """
        self._stale = not table
        if table:
            self._table(study)
        options = [(f"{s.index}: {s.label}", s.index) for s in study.history]
        keep_a = self.a.value if self.a.value is not None and self.a.value < len(options) else 0
        for dd, value in ((self.step, study.current), (self.a, keep_a),
                          (self.b, study.current)):
            dd.options = options
            dd.value = value
        if self.visible:
            self.draw(study)

    def show(self, study) -> None:
        """The tab is shown: build the table if it was left for now, and draw the plot."""
        if self._stale:
            self._stale = False
            self._table(study)
        self.draw(study)

    def _table(self, study) -> None:
        frame = study.history.to_frame(measure=False)   # a view: it never measures
        frame["accuracy"] = [NOT_MEASURED if "accuracy" in s.pending else a
                             for s, a in zip(study.history, frame["accuracy"], strict=True)]
        # the drift each step recorded on the study's probe set (rank correlation of its
        # saliency maps with the original's); read from the steps, whatever the key's version
        # ("not measured yet" on a big model until the drift is asked for: DESIGN.md)
        frame["saliency_rank_correlation"] = [
            NOT_MEASURED if "drift" in s.pending else _probe_number(s) for s in study.history]
        # what a step says about itself (e.g. an auto-prune round, kept or rejected and why)
        frame["note"] = [_short(s.note) for s in study.history]
        cols = [c for c in _COLUMNS if c in frame.columns]
        shown = frame[cols].rename(columns=_COLUMNS)
        self.table.value = (note_html(f"{len(frame)} steps; the current one (step "
                                      f"{study.current}) is highlighted.")
                            + frame_html(shown, highlight_row=study.current))

    def draw(self, study) -> None:
        """Draw the accuracy-vs-size plot if the history changed since the last drawing.

        The panel calls it only while the History tab is shown: drawing costs ~0.1 s, which
        would otherwise be added to every click.
        """
        key = (len(study.history), study.current)
        if key != self._drawn:
            self._drawn = key
            self._draw(study)

    def show_compare(self, frame, a: int, b: int) -> None:
        self.compare_html.value = (f"<b>Step {a} vs step {b}</b>"
                                   + frame_html(frame, float_format="{:.4g}"))

    def _draw(self, study) -> None:
        if len(study.history) < 2:
            self.plot.layout.display = "none"
            return
        fig, ax = figure(5.0, 3.0)
        study.history.plot(ax=ax, measure=False)   # a view: it never measures
        self.plot.value = to_png(fig)
        self.plot.layout.display = None
