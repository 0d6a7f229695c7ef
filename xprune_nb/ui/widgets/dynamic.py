"""Dynamic section: make the model input-adaptive (DyFiP), and see the trade-off of its settings.

*Build* calls :meth:`Study.dynamic` with the controls. *Sweep* measures accuracy against mean
MACs over a grid of k x kept fraction x confidence (:mod:`xprune_nb.pruning.dynamic.sweep`,
which trains the branch once per sweep and only re-routes for each confidence); afterwards,
moving the k, confidence and kept-fraction sliders marks the matching point of that sweep and
shows its numbers at once, without computing anything again.
"""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as W

from ... import criteria
from ...pruning.dynamic.build import DEFAULTS
from ._common import defaults_of, frame_html, note_html, parse_number, parse_numbers
from ._plots import figure, to_png

__all__ = ["DynamicView"]

_CALL = "Panel.dynamic"
_AUTO = ""     # "auto": the branch point Study.dynamic picks (at=None); no module is named ""
#: columns of the sweep shown for the marked point, with their labels
_POINT = {"accuracy": "accuracy", "macs_mean": "mean MACs", "macs_longest": "longest-path MACs",
          "exit_share": "early exits", "paths": "paths",
          "latency_b1_mean_ms": "batch-1 latency (ms, mean)",
          "latency_b1_p95_ms": "batch-1 latency (ms, p95)"}


#: the sweep builds its paths with build_dynamic's default fine-tuning (it has no option)
_SWEEP_FINETUNE = int(DEFAULTS["finetune"])


def _class_aware() -> list[str]:
    out = []
    for name in criteria.available():
        try:
            if criteria.get(name).class_aware:
                out.append(name)
        except Exception:  # noqa: BLE001 - e.g. its optional dependency is missing
            continue
    return out


def _branch_points(model, example) -> list[str]:
    try:
        from ...pruning.dynamic.build import dynamic_branch_points

        return dynamic_branch_points(model, example, _CALL)
    except Exception:  # noqa: BLE001 - a model that cannot be cut: only the automatic choice
        return []


class DynamicView:
    """Controls mapped to :meth:`Study.dynamic`, the sweep's grid, and the trade-off plot."""

    def __init__(self, study) -> None:
        d = defaults_of(type(study).dynamic)
        classes = study.data.num_classes
        self.k = W.IntSlider(value=min(d.get("k", 2), max(classes - 1, 1)), min=1,
                             max=max(classes - 1, 1), description="k",
                             continuous_update=False)
        self.confidence = W.FloatSlider(value=d.get("confidence", 0.9), min=0.5, max=1.0,
                                        step=0.05, readout_format=".2f",
                                        description="confidence", continuous_update=False)
        self.keep = W.FloatSlider(value=d.get("keep", 0.5), min=0.05, max=1.0, step=0.05,
                                  readout_format=".0%", description="keep",
                                  continuous_update=False)
        from ...pruning.dynamic.step import default_criterion, usable_criterion

        example = study.timeline.example
        default = d.get("criterion") or default_criterion(example)
        aware = [c for c in _class_aware() if usable_criterion(c, example)] or [default]
        self.criterion = W.Dropdown(options=aware, description="criterion",
                                    value=default if default in aware else aware[0])
        # "auto" rather than None as the value: a Dropdown shows None as no selection; the
        # model's branch points need a trace of it (a second on a ResNet-50): they are added
        # when the tab is first shown or used (load_points), not when the panel opens
        self.at = W.Dropdown(options=[("auto", _AUTO)], value=_AUTO, description="branch at")
        self._study = study
        self._points_loaded = False
        self.epochs = W.BoundedIntText(value=d.get("epochs", 20), min=1, max=10_000,
                                       description="epochs")
        self.finetune = W.BoundedIntText(value=d.get("finetune", 3), min=0, max=10_000,
                                         description="finetune")
        self.max_paths = W.BoundedIntText(value=d.get("max_paths", 4), min=1, max=256,
                                          description="max paths")
        self.samples = W.Text(value="", description="samples", placeholder="default")
        self.build_button = W.Button(description="Build dynamic", icon="random",
                                     button_style="warning",
                                     tooltip="Make the current model input-adaptive "
                                             "(records a dynamic step)")
        self.build_button.add_class("xprune-dynamic")
        self.sweep_k = W.Text(value=", ".join(str(k) for k in range(1, min(classes - 1, 3) + 1)),
                              description="sweep k")
        self.sweep_keep = W.Text(value="0.25, 0.5, 0.75", description="sweep keep")
        self.sweep_confidence = W.Text(
            value=", ".join(f"{c / 100:g}" for c in range(50, 101, 5)),
            description="sweep conf.", layout=W.Layout(width="420px"))
        self.latency = W.Checkbox(value=False, description="measure batch-1 latency (slower)",
                                  indent=False)
        self.sweep_button = W.Button(description="Sweep trade-off", icon="line-chart",
                                     tooltip="Accuracy against mean MACs over the grid; the "
                                             "sliders then mark points of it")
        self.sweep_button.add_class("xprune-dynamic-sweep")
        self.plot = W.Image(format="png", layout=W.Layout(max_width="560px", display="none"))
        self.point = W.HTML()
        self.result = W.HTML()
        self.frame = None     # the last sweep (a DataFrame), marked by the sliders
        self.swept_step: int | None = None
        #: where a failure inside a slider callback is reported (the panel's status line)
        self.on_error = lambda text: setattr(self.point, "value", note_html(
            html.escape(text), "#b00020"))
        for w in (self.k, self.confidence, self.keep):
            w.observe(self._on_setting, names="value")
        help_text = note_html(
            "Dynamic pruning (DyFiP): a small branch after <i>branch at</i> predicts the top-"
            "<i>k</i> classes; inputs whose top-1 probability reaches <i>confidence</i> exit "
            "early, the others run only the <i>keep</i> fraction of later channels that the "
            "class-wise relevance (<i>criterion</i>) marks for their class subset. "
            "<b>Build dynamic</b> records a step; <b>Sweep trade-off</b> measures the grid "
            "below on the test split (its paths are always fine-tuned for the default "
            f"{_SWEEP_FINETUNE} epochs, whatever <i>finetune</i> says) and the sliders then "
            "mark its points.")
        self.widget = W.VBox([
            W.HTML(help_text),
            W.HBox([self.k, self.confidence, self.keep]),
            W.HBox([self.criterion, self.at]),
            W.HBox([self.epochs, self.finetune, self.max_paths, self.samples]),
            self.build_button, self.result,
            W.HBox([self.sweep_k, self.sweep_keep]),
            W.HBox([self.sweep_confidence, self.latency, self.sweep_button]),
            self.point, self.plot,
        ])

    # ------------------------------------------------------------------ parameters
    def config(self) -> dict[str, Any]:
        """Keyword arguments of :meth:`Study.dynamic`."""
        return {"k": int(self.k.value), "confidence": round(float(self.confidence.value), 6),
                "keep": round(float(self.keep.value), 6), "at": self._at(),
                "criterion": self.criterion.value, "epochs": int(self.epochs.value),
                "samples": parse_number(self.samples.value, _CALL, "samples", integer=True),
                "max_paths": int(self.max_paths.value), "finetune": int(self.finetune.value)}

    def load_points(self) -> None:
        """Offer the model's branch points in *branch at* (once: on the tab's first show or
        first use)."""
        if self._points_loaded:
            return
        self._points_loaded = True
        value = self.at.value
        self.at.options = [("auto", _AUTO)] + [(n, n) for n in _branch_points(
            self._study.model, self._study.timeline.example)]
        self.at.value = value

    def _at(self) -> str | None:
        self.load_points()
        return None if self.at.value == _AUTO else self.at.value

    def sweep_config(self) -> dict[str, Any]:
        """Keyword arguments of :func:`xprune_nb.pruning.dynamic.sweep.sweep` (grid and branch)."""
        call = "Panel.dynamic_sweep"
        return {"k": parse_numbers(self.sweep_k.value, call, "k", integer=True),
                "keep": parse_numbers(self.sweep_keep.value, call, "keep"),
                "confidence": parse_numbers(self.sweep_confidence.value, call, "confidence"),
                "at": self._at(), "epochs": int(self.epochs.value),
                "max_paths": int(self.max_paths.value), "latency": bool(self.latency.value)}

    # ------------------------------------------------------------------ results
    def show_step(self, step) -> None:
        """The dynamic step's honest metrics: mean and longest-path MACs, early exits."""
        m = step.metrics
        rows = {"accuracy": m.get("accuracy"), "mean MACs": m.get("macs"),
                "longest-path MACs": m.get("macs_longest"),
                "early exits": (f"{100 * m['exit_share']:.1f}%" if m.get("exit_share")
                                is not None else None), "paths": m.get("paths")}
        import pandas as pd

        frame = pd.DataFrame({"value": rows})
        frame.index.name = "metric"
        self.result.value = (f"<b>Step {step.index}</b> (dynamic): {html.escape(step.note)}"
                             + frame_html(frame))

    def show_sweep(self, frame, step: int) -> None:
        """Keep the sweep and draw it with the sliders' point marked."""
        self.frame, self.swept_step = frame, step
        self.draw()

    def _on_setting(self, change: Any = None) -> None:
        if self.frame is not None:
            try:
                self.draw()
            except Exception as exc:  # noqa: BLE001 - a slider callback must not fail silently
                self.on_error(f"Drawing the sweep failed: {type(exc).__name__}: {exc}")

    def marked(self):
        """The sweep's row nearest to the sliders (same k when swept), and whether it is exact."""
        dyn = self.frame[self.frame["technique"] == "dynamic"]
        if not len(dyn):
            return None, False
        k, keep, conf = self.k.value, float(self.keep.value), float(self.confidence.value)
        same_k = dyn[dyn["k"] == k]
        pool = same_k if len(same_k) else dyn
        distance = ((pool["k"] - k).abs() + (pool["keep"] - keep).abs()
                    + (pool["confidence"] - conf).abs())
        row = pool.loc[distance.idxmin()]
        exact = (row["k"] == k and abs(row["keep"] - keep) < 1e-6
                 and abs(row["confidence"] - conf) < 1e-6)
        return row, exact

    def draw(self) -> None:
        from ...pruning.dynamic.sweep import plot_sweep

        row, exact = self.marked()
        fig, ax = figure(6.0, 3.6)
        plot_sweep(self.frame, ax=ax)
        if row is not None:
            ax.scatter([row["macs_mean"]], [row["accuracy"]], s=220, facecolors="none",
                       edgecolors="red", linewidths=2, zorder=4)
        self.plot.value = to_png(fig)
        self.plot.layout.display = None
        if row is None:
            self.point.value = note_html("The sweep has no dynamic rows.")
            return
        dense = self.frame[self.frame["technique"] == "dense"]
        dense_macs = float(dense["macs_mean"].iloc[0]) if len(dense) else None
        where = ("this setting" if exact else
                 f"nearest swept setting: k={int(row['k'])}, keep={row['keep']:g}, "
                 f"confidence={row['confidence']:g} (add yours to the grid and sweep again)")
        parts = []
        for key, name in _POINT.items():
            if key in row and row[key] == row[key]:
                value = row[key]
                text = (f"{100 * value:.1f}%" if key == "exit_share" else
                        f"{value:.4f}" if key == "accuracy" else
                        f"{value:.3f}" if key.startswith("latency") else f"{value:.0f}")
                if key == "macs_mean" and dense_macs:
                    text += f" ({100 * value / dense_macs:.0f}% of dense)"
                parts.append(f"{name} <b>{text}</b>")
        self.point.value = (f"<b>Sweep of step {self.swept_step}</b>, {html.escape(where)}: "
                            + " · ".join(parts))
