"""Auto section: prune to a budget in rounds, under accuracy, per-class and drift constraints.

*Run* calls :meth:`Study.auto_prune` with the controls; every kept round is an ordinary step,
and the panel redraws the History tab after each round, so the rounds appear while it runs.
"""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as W

from ... import criteria
from ...explain.saliency import METHODS as SALIENCY_METHODS
from ._common import defaults_of, frame_html, note_html, parse_number

__all__ = ["AutoView"]

_CALL = "Panel.auto_prune"
_BUDGETS = (("MACs", "macs"), ("params", "params"), ("latency", "latency"))
#: the columns of the rounds table (``AutoOutcome.history``), with their labels
_ROUND_COLUMNS = {"round": "round", "try": "try", "step": "step", "budget": "of start",
                  "accuracy": "val accuracy", "accuracy_drop": "accuracy drop",
                  "class_drop": "worst class drop", "drift": "drift",
                  "grounding_drop": "grounding drop", "group_drop": "worst group drop",
                  "kept": "kept"}


class AutoView:
    """Controls mapped to :meth:`Study.auto_prune`, its outcome and its rounds."""

    def __init__(self, study, kinds: list[str] | None = None) -> None:
        from ...pruning import units

        d = defaults_of(type(study).auto_prune)
        names = criteria.available()
        # the unit kinds this model has (the panel passes the Score tab's, found once)
        self._kinds = kinds or units.present(study.model, study.env) or ["weight"]
        self.budget = W.ToggleButtons(options=_BUDGETS, value="macs", description="budget",
                                      style={"button_width": "80px"})
        self.value = W.FloatSlider(value=0.5, min=0.05, max=0.95, step=0.05,
                                   readout_format=".0%", description="of current",
                                   continuous_update=False)
        self.max_accuracy_drop = W.Text(value="0.02", description="max acc. drop",
                                        placeholder="none",
                                        style={"description_width": "initial"})
        self.max_class_drop = W.Text(value="", description="max class drop",
                                     placeholder="none", style={"description_width": "initial"})
        self.max_drift = W.Text(value="", description="max drift", placeholder="none",
                                style={"description_width": "initial"})
        # sensitive groups (Study(groups=...)): auto_prune refuses it for a study without
        self.max_group_drop = W.Text(value="", description="max group drop", placeholder="none",
                                     style={"description_width": "initial"})
        # grounding on the evidence (boxes of digits_boxes); masks are a code-only option
        self.max_grounding_drop = W.Text(value="", description="max grounding drop",
                                         placeholder="none",
                                         style={"description_width": "initial"})
        self.grounding_method = W.Dropdown(options=list(SALIENCY_METHODS),
                                           value=d.get("grounding_method", "saliency"),
                                           description="grounding by",
                                           style={"description_width": "initial"})
        self.criterion = W.Dropdown(options=names, description="criterion",
                                    value=d.get("criterion") if d.get("criterion") in names
                                    else names[0])
        self.granularity = W.Dropdown(options=self._kinds, description="granularity",
                                      value="channel" if "channel" in self._kinds
                                      else self._kinds[0])
        self.retrain_epochs = W.BoundedIntText(value=0, min=0, max=10_000,
                                               description="retrain epochs",
                                               style={"description_width": "initial"})
        self.steps = W.BoundedIntText(value=d.get("steps", 10), min=1, max=1000,
                                      description="rounds")
        self.samples = W.Text(value="", description="samples", placeholder="default")
        self.run_button = W.Button(description="Run auto-prune", icon="magic",
                                   button_style="warning",
                                   tooltip="Prune to the budget in rounds; a round that breaks "
                                           "a constraint is not kept")
        self.run_button.add_class("xprune-auto")
        self.outcome = W.HTML()
        self.rounds = W.HTML()
        help_text = note_html(
            "Reach a budget (a fraction of the <i>current</i> model's MACs, parameters or "
            "measured batch-1 latency) in rounds: each round measures every layer's "
            "sensitivity, allocates per-layer amounts greedily by damage per cost saved, "
            "prunes (and retrains, if asked). A round that breaks a constraint (validation "
            "accuracy drop, worst class drop, worst sensitive-group drop, explanation drift, "
            "drop of the relevance mass in the evidence boxes; empty = no limit) is undone "
            "and tried smaller. Kept rounds appear in the History tab as they finish; "
            "<b>Stop</b> ends after the round in progress.")
        self.widget = W.VBox([
            W.HTML(help_text),
            W.HBox([self.budget, self.value]),
            W.HBox([self.max_accuracy_drop, self.max_class_drop, self.max_group_drop,
                    self.max_drift]),
            W.HBox([self.max_grounding_drop, self.grounding_method]),
            W.HBox([self.criterion, self.granularity]),
            W.HBox([self.retrain_epochs, self.steps, self.samples]),
            self.run_button, self.outcome, self.rounds,
        ])

    def config(self) -> dict[str, Any]:
        """Keyword arguments of :meth:`Study.auto_prune`."""
        epochs = int(self.retrain_epochs.value)
        return {self.budget.value: round(float(self.value.value), 6),
                "max_accuracy_drop": parse_number(self.max_accuracy_drop.value, _CALL,
                                                  "max_accuracy_drop"),
                "max_class_drop": parse_number(self.max_class_drop.value, _CALL,
                                               "max_class_drop"),
                "max_group_drop": parse_number(self.max_group_drop.value, _CALL,
                                               "max_group_drop"),
                "max_drift": parse_number(self.max_drift.value, _CALL, "max_drift"),
                "max_grounding_drop": parse_number(self.max_grounding_drop.value, _CALL,
                                                   "max_grounding_drop"),
                "grounding_method": self.grounding_method.value,
                "criterion": self.criterion.value, "granularity": self.granularity.value,
                "retrain": {"epochs": epochs} if epochs else None,
                "steps": int(self.steps.value),
                "samples": parse_number(self.samples.value, _CALL, "samples", integer=True)}

    def show(self, step, outcome) -> None:
        """The outcome sentence and one row per round tried (kept or rejected)."""
        if outcome is None:
            self.outcome.value = note_html(f"Ended at step {step.index}.")
            self.rounds.value = ""
            return
        color = "#1b7f3b" if outcome.met else "#a15c00"
        self.outcome.value = (f'<span style="color:{color}"><b>{html.escape(outcome.message)}'
                              "</b></span>")
        if not outcome.history:
            self.rounds.value = note_html("No round was tried.")
            return
        import pandas as pd

        rows = [{**r, "budget": r.get(outcome.budget)} for r in outcome.history]
        frame = pd.DataFrame(rows)
        frame["kept"] = frame["kept"].map({True: "yes", False: "rejected"})
        cols = [c for c in _ROUND_COLUMNS if c in frame.columns]
        shown = frame[cols].rename(columns={**_ROUND_COLUMNS,
                                            "budget": f"{outcome.budget} of start"})
        self.rounds.value = (note_html("Every round tried; rejected ones stay in the history "
                                       "as a side branch, with the reason in their note.")
                             + frame_html(shown, index=False))
