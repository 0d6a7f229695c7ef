"""The panel: a metrics strip, a toolbar of actions, a status line, and one tab per section.

Every action calls one method of the headless core (``Study.score``, ``Study.prune``...) with
the values of the controls; the panel keeps no state of its own beyond what it displays.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import ipywidgets as W

from ...core.errors import ConfigError
from ...measure.metrics import measure_latency
from ._plots import prewarm
from ._preview import PrunePreview, preview_prune
from ._runner import Runner, Task
from .actions import SectionActions
from .auto import AutoView
from .dynamic import DynamicView
from .explain import ExplainView
from .export import ExportView
from .history import HistoryView
from .pathways import PathwaysView
from .prune import PruneView
from .retrain import RetrainView
from .score import ScoreView
from .sensitivity import SensitivityView
from .strip import MetricsStrip, StatusLine, accuracy_text

__all__ = ["Panel"]

# the first six keep their places (scripts select tabs by index); later sections follow
_TABS = ("Score", "Prune", "Retrain", "Explain", "History", "Export", "Sensitivity", "Auto",
         "Dynamic", "Pathways")
#: toolbar: action -> (label, icon, button style, tooltip)
_BUTTONS = {
    "score": ("Score", "calculator", "primary", "Score every prunable unit (Score tab)"),
    "preview": ("Preview", "eye", "", "What Prune would remove, without changing anything"),
    "prune": ("Prune", "scissors", "warning", "Remove the least important units (Prune tab)"),
    "retrain": ("Retrain", "refresh", "info", "Fine-tune the current model (Retrain tab)"),
    "stop": ("Stop", "stop", "danger", "Stop the running work between batches"),
    "undo": ("Undo", "undo", "", "Go back to the step before the current one"),
    "measure": ("Measure", "tachometer", "", "Time the current and the original model "
                "(batch 1) and measure the accuracy and drift a big model left for the first "
                "ask"),
    "export": ("Export", "download", "success", "Write a script that reproduces this step"),
}


class Panel(SectionActions):
    """Interactive panel over a :class:`~xprune_nb.Study` (ipywidgets 8).

    The toolbar's buttons (CSS classes ``xprune-score``, ``xprune-preview``, ``xprune-prune``,
    ``xprune-retrain``, ``xprune-stop``, ``xprune-undo``, ``xprune-export``) act on the study
    with the settings of the tabs below; the metrics strip (``xprune-metrics``) and the status
    line (``xprune-status``) stay on top; the History tab holds the table of steps
    (``xprune-history``). The Dynamic, Sensitivity and Auto tabs have their own buttons
    (``xprune-dynamic``, ``xprune-sensitivity``, ``xprune-auto``), the Export tab writes ONNX
    (``xprune-onnx``), the Pathways tab maps relevance flow (``xprune-pathways``; a unit's
    why-row in ``xprune-pathways-why``) and the Explain tab adds attention maps
    (``xprune-attention``, only for models with attention) and forgotten examples
    (``xprune-forgotten``). Each button is also a method (:meth:`dynamic`, :meth:`sensitivity`,
    :meth:`pathways`, :meth:`auto_prune`, :meth:`export_onnx`,
    :meth:`attention`, :meth:`forgotten`...), for scripts and tests.

    Work runs in a background thread when started from a button, so the progress display
    updates, *Stop* works, and a second click while busy is refused with a message. The methods
    wait for the work by default (``block=True``) and return what the study returned, or
    ``None`` when the action failed or was refused; the status line says why, and
    :attr:`last_error` holds the exception.

    Parameters
    ----------
    study : Study
        The study to show and drive. The panel never copies it: what you do in the panel is
        in ``study`` and vice versa (call :meth:`refresh` after changing it from code).

    Examples
    --------
    >>> import xprune_nb as xp
    >>> study = xp.Study(xp.zoo.load("digits_cnn"), xp.datasets.load("digits"), seed=0)
    >>> panel = xp.Panel(study)
    >>> panel.prune_view.amount.value = 0.3
    >>> scores = panel.score()
    >>> step = panel.prune()
    >>> study.current, "params" in panel.metrics_text
    (1, True)
    >>> _ = panel.undo(); study.current
    0
    """

    def __init__(self, study) -> None:
        from ...study import Study

        if not isinstance(study, Study):
            raise ConfigError.bad_value("Panel", "study", "an xprune_nb.Study", study)
        self.study = study
        self.metrics = MetricsStrip()
        self.status_line = StatusLine()
        self.runner = Runner(self.status_line.set, self.status_line.progress)
        self.score_view = ScoreView(study)
        self.prune_view = PruneView(study)
        self.retrain_view = RetrainView(study)
        self.dynamic_view = DynamicView(study)
        self.sensitivity_view = SensitivityView(study, self.score_view.kinds)
        self.auto_view = AutoView(study, self.score_view.kinds)
        self.explain_view = ExplainView()
        self.explain_view.set_model(study)
        self.history_view = HistoryView()
        self.export_view = ExportView()
        self.pathways_view = PathwaysView()
        self.buttons: dict[str, W.Button] = {}
        for action, (label, icon, style, tip) in _BUTTONS.items():
            button = W.Button(description=label, icon=icon, button_style=style, tooltip=tip,
                              layout=W.Layout(width="auto"))
            button.add_class(f"xprune-{action}")
            self.buttons[action] = button
        clicks = {"score": self.score, "preview": self.preview, "prune": self.prune,
                  "retrain": self.retrain, "undo": self.undo, "export": self.export,
                  "measure": self.measure}
        for action, method in clicks.items():
            self.buttons[action].on_click(lambda _b, m=method: m(block=False))
        self.buttons["stop"].on_click(lambda _b: self.stop())
        ex, views = self.explain_view, (self.history_view, self.export_view, self.dynamic_view,
                                        self.sensitivity_view, self.auto_view)
        h, e, d, s, a = views
        for button, method in ((h.goto_button, self.goto), (h.compare_button, self.compare),
                               (e.recipe_button, self.export_recipe),
                               (e.onnx_button, self.export_onnx),
                               (ex.saliency_button, self.saliency),
                               (ex.shapley_button, self.shapley), (ex.why_button, self.why),
                               (ex.drift_button, self.drift),
                               (ex.attention_button, self.attention),
                               (ex.forgotten_button, self.forgotten),
                               (d.build_button, self.dynamic),
                               (d.sweep_button, self.dynamic_sweep),
                               (s.run_button, self.sensitivity),
                               (s.preview_button, self.sensitivity_preview),
                               (a.run_button, self.auto_prune),
                               (self.pathways_view.button, self.pathways)):
            button.on_click(lambda _b, m=method: m(block=False))
        s.on_cell = lambda: self.sensitivity_preview(block=False)
        s.on_error = d.on_error = lambda text: self.status_line.set("error", text)
        self.tabs = W.Tab(children=[self.score_view.widget, self.prune_view.widget,
                                    self.retrain_view.widget, ex.widget, h.widget, e.widget,
                                    s.widget, a.widget, d.widget,
                                    self.pathways_view.widget], titles=list(_TABS))
        model_name = type(study.original).__name__
        title = W.HTML(f"<b>xprune_nb</b> · {model_name} · seed {study.seed} · "
                       f"{getattr(study, 'device', 'cpu')}",
                       layout=W.Layout(flex="0 0 auto", margin="0 12px 0 0"))
        self.metrics.widget.layout.flex = "1 1 auto"
        self.widget = W.VBox([
            W.HBox([title, self.metrics.widget]),
            W.HBox(list(self.buttons.values()), layout=W.Layout(flex_flow="row wrap")),
            W.HBox([self.status_line.bar, self.status_line.bar_text, self.status_line.widget],
                   layout=W.Layout(align_items="center")),
            self.tabs,
        ])
        self.widget.add_class("xprune-panel")
        self.tabs.observe(self._on_tab, names="selected_index")
        # latency is timed only on Measure: on a big model it takes seconds per click
        self._latency: dict[int, tuple[float | None, float | None]] = {}
        self._latency_original: float | None = None
        self._refresh(table=False)   # the History table: on its tab's first show
        # the first plot would otherwise pay matplotlib's import and font cache (~0.7 s)
        # inside the first click; this runs while the panel renders and the user reads it
        # (started last: while the widgets are built it would compete for the interpreter)
        threading.Thread(target=prewarm, name="xprune-prewarm", daemon=True).start()

    def _on_tab(self, change) -> None:
        # what a tab computes is built on its first show (the panel opens within a second
        # even on a ResNet-50): the Dynamic tab's branch points, the History tab's table
        if change["new"] == _TABS.index("Dynamic") and not self.busy:
            self.dynamic_view.load_points()
        self.history_view.visible = change["new"] == _TABS.index("History")
        if self.history_view.visible and not self.busy:   # else the running task's refresh
            try:
                self.history_view.show(self.study)
            except Exception as exc:  # noqa: BLE001 - a callback must not fail silently
                self.status_line.set("error", f"Drawing the history plot failed: "
                                              f"{type(exc).__name__}: {exc}")

    # ------------------------------------------------------------------ display
    def _repr_mimebundle_(self, **kwargs: Any):
        return self.widget._repr_mimebundle_(**kwargs)

    def __repr__(self) -> str:
        return f"Panel({self.study!r})"

    @property
    def status(self) -> str:
        """The status line as plain text."""
        return self.status_line.text

    @property
    def metrics_text(self) -> str:
        """The metrics strip as plain text (contains ``params N`` and ``accuracy X``)."""
        return self.metrics.text

    @property
    def busy(self) -> bool:
        return self.runner.busy

    @property
    def last_error(self) -> BaseException | None:
        """The exception of the last action that failed (``None`` after a success)."""
        return self.runner.last_error

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for work started from a button; True when the panel is idle."""
        return self.runner.wait(timeout)

    def close(self) -> None:
        """Close every widget of the panel (it disappears from the notebook)."""
        def close(w: W.Widget) -> None:
            for child in getattr(w, "children", ()):
                close(child)
            w.close()

        close(self.widget)

    def refresh(self) -> None:
        """Redraw everything that shows the study's state (after changing it from code)."""
        self._refresh(table=True)

    def _refresh(self, table: bool) -> None:
        study = self.study
        latency, worst = self._latency.get(study.current, (None, None))
        self.metrics.update(study, latency, self._latency_original, worst)
        if table or self.history_view.visible:
            self.history_view.refresh(study)
        else:
            self.history_view.refresh(study, table=False)
        self.explain_view.refresh(study)
        self.pathways_view.refresh(study)
        self.score_view.sync(study)
        scores = study.scores_at(study.current)
        self.prune_view.set_groups(list(scores.values) if scores is not None else [])

    def _measure(self, model) -> tuple[float | None, float | None]:
        """Batch-1 latency in ms, and its 95th percentile over test inputs for a dynamic model
        (whose latency depends on the input: ``Study.evaluate`` measures both)."""
        try:
            if type(model).__name__ == "DynamicNet" and model is self.study.model:
                found = self.study.evaluate(latency=True).dynamic
                return found.get("latency_b1_mean_ms"), found.get("latency_b1_p95_ms")
            return measure_latency(model, self.study.data.example(1), self.study.forward,
                                   repeats=10, warmup=2), None
        except Exception:  # noqa: BLE001 - latency is informative only; the strip omits it
            return None, None

    def _run(self, action: str, label: str, work, done, block: bool, tab: str | None = None):
        if tab is not None and not self.busy:
            self.tabs.selected_index = _TABS.index(tab)
        return self.runner.run(action, label, work, done, block=block, after=self.refresh)

    # ------------------------------------------------------------------ actions
    def score(self, *, block: bool = True):
        """Score the current model with the Score tab's settings (:meth:`Study.score`)."""
        view = self.score_view

        def work(task: Task):
            return self.study.score(**view.config(), progress=task.progress)

        def done(scores) -> str:
            view.show(scores)
            self.prune_view.set_groups(list(scores.values))
            unit = {"channel": "channels/neurons", "head": "attention heads"}.get(
                scores.granularity, "weights")
            return (f"Scored {scores.num_units} {unit} in {len(scores.values)} groups with "
                    f"{scores.criterion} in {scores.seconds:.2f} s. Next: Preview or Prune.")

        return self._run("score", f"Scoring with {view.criterion.value}", work, done, block,
                         "Score")

    def preview(self, *, block: bool = True) -> PrunePreview | None:
        """What :meth:`prune` would remove per layer, and the predicted size; changes nothing."""
        view = self.prune_view

        def done(preview: PrunePreview) -> str:
            view.show_preview(preview)
            return preview.summary() + " Nothing was changed yet; press Prune to commit."

        return self._run("preview", "Computing the preview",
                         lambda task: preview_prune(self.study, **view.config()), done, block,
                         "Prune")

    def prune(self, *, block: bool = True):
        """Prune the current model with the Prune tab's settings (:meth:`Study.prune`)."""
        view = self.prune_view
        parent = self.study.step

        def done(step) -> str:
            view.show_step(step)
            before, m = parent.known(), step.known()
            return (f"Pruned: step {step.index} ({step.label}), params {before.get('params')} "
                    f"→ {m.get('params')}, MACs {before.get('macs')} → {m.get('macs')}, "
                    f"accuracy {accuracy_text(parent)} → {accuracy_text(step)}.")

        return self._run("prune", f"Pruning {100 * view.amount.value:.0f}%",
                         lambda task: self.study.prune(**view.config()), done, block, "Prune")

    def retrain(self, *, block: bool = True):
        """Fine-tune with the Retrain tab's settings (:meth:`Study.retrain`), with a live plot;
        :meth:`stop` (or *Stop*) stops between batches and the step is still recorded."""
        view = self.retrain_view
        parent = self.study.step

        def work(task: Task):
            live = view.callback(task.update)
            return self.study.retrain(**view.config(), callbacks=[live], progress=False,
                                      stop=task.stop)

        def done(step) -> str:
            before, acc = accuracy_text(parent), accuracy_text(step)
            if step.stopped:
                return (f"Retraining was stopped by you ({step.note}); step {step.index} "
                        f"keeps the weights of the last complete batch: accuracy {before} "
                        f"→ {acc}.")
            return (f"Retrained: step {step.index} ({step.note}) in {step.seconds:.1f} s, "
                    f"accuracy {before} → {acc}.")

        return self._run("retrain", f"Retraining for {view.epochs.value} epoch(s)", work, done,
                         block, "Retrain")

    def stop(self) -> bool:
        """Ask the running work to stop between batches; False when nothing is running."""
        return self.runner.stop()

    def undo(self, *, block: bool = True):
        """Go back to the parent of the current step (:meth:`Study.undo`)."""
        return self._run("undo", "Undoing", lambda task: self.study.undo(), self._arrived,
                         block)

    def goto(self, index: int | None = None, *, block: bool = True):
        """Restore step ``index`` (default: the one picked in the History tab)."""
        target = self.history_view.step.value if index is None else index
        return self._run("go to", f"Restoring step {target}",
                         lambda task: self.study.goto(target), self._arrived, block)

    def _arrived(self, step) -> str:
        return (f"Now at step {step.index} ({step.label}): params "
                f"{step.known().get('params')}, accuracy {accuracy_text(step)}. A new action from "
                "here starts a branch; later steps are kept.")

    def compare(self, a: int | None = None, b: int | None = None, *, block: bool = True):
        """Metrics of two steps side by side (:meth:`Study.compare`), in the History tab."""
        a = self.history_view.a.value if a is None else a
        b = self.history_view.b.value if b is None else b

        def done(frame) -> str:
            self.history_view.show_compare(frame, a, b)
            return f"Compared step {a} with step {b} (History tab)."

        return self._run("compare", f"Comparing steps {a} and {b}",
                         lambda task: self.study.compare(a, b), done, block, "History")

    def export(self, path: str | Path | None = None, *, block: bool = True) -> Path | None:
        """Write a standalone script reproducing the current step (:meth:`Study.export_script`)."""
        target = self._path(path, self.export_view.script_path, "script")

        def work(task: Task) -> Path:
            return Path(self.study.export_script(target))

        def done(out: Path) -> str:
            self.export_view.show_file(out, "Script")
            return f"Exported the script to {out}; run it with: python {out}"

        return self._run("export", f"Exporting the script to {target}", work, done, block,
                         "Export")

    def export_recipe(self, path: str | Path | None = None, *, block: bool = True
                      ) -> Path | None:
        """Save the study's recipe (:meth:`Study.recipe`) as YAML or JSON."""
        target = self._path(path, self.export_view.recipe_path, "recipe")

        def work(task: Task) -> Path:
            return Path(self.study.recipe().save(target))

        def done(out: Path) -> str:
            self.export_view.show_file(out, "Recipe")
            return f"Saved the recipe to {out}; replay it with: xprune-nb run {out}"

        return self._run("export recipe", f"Saving the recipe to {target}", work, done, block,
                         "Export")

    @staticmethod
    def _path(path, control: W.Text, what: str) -> Path:
        text = str(path) if path is not None else control.value.strip()
        return Path(text) if text else Path(control.placeholder or f"pruned_study.{what}")
