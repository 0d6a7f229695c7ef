"""The actions of the panel's later sections: Dynamic, Sensitivity, Auto, ONNX export, and the
explanations (saliency, Shapley, why, drift, attention maps, forgotten examples).

A mixin of :class:`~xprune_nb.ui.widgets.Panel` (kept apart so each module stays small). Each
action reads its section's controls, makes one core call in the panel's runner (a background
thread from a button, with progress and *Stop*), shows the result in its tab and says what
happened in the status line; errors end there too, never only in the log.
"""

from __future__ import annotations

from pathlib import Path

from ...core.errors import XPruneError
from ._runner import Task
from .explain import call_supported

__all__ = ["SectionActions"]


class SectionActions:
    """Panel methods for the Dynamic, Sensitivity, Auto and Explain tabs, and ONNX."""

    # ------------------------------------------------------------------ dynamic
    def dynamic(self, *, block: bool = True):
        """Make the current model input-adaptive with the Dynamic tab's settings
        (:meth:`Study.dynamic`); records a ``dynamic`` step."""
        view = self.dynamic_view

        def work(task: Task):
            return self.study.dynamic(**view.config(), progress=task.progress)

        def done(step) -> str:
            view.show_step(step)
            m = step.metrics
            return (f"Dynamic: step {step.index} ({step.note}); accuracy "
                    f"{m.get('accuracy', 0):.4f}, mean MACs {m.get('macs')} (longest path "
                    f"{m.get('macs_longest')}), early exits {100 * m.get('exit_share', 0):.1f}%.")

        return self._run("dynamic", f"Building the dynamic model (k={view.k.value}, keep "
                                    f"{view.keep.value:.0%})", work, done, block, "Dynamic")

    def dynamic_sweep(self, *, block: bool = True):
        """Accuracy against mean MACs over the Dynamic tab's grid of k x keep x confidence
        (:func:`xprune_nb.pruning.dynamic.sweep.sweep`); changes nothing in the study. The
        sliders then mark points of it. A dynamic current step is swept on its parent's model
        (the model it was built on)."""
        view = self.dynamic_view
        study = self.study

        def work(task: Task):
            from ...pruning.dynamic.step import is_dynamic
            from ...pruning.dynamic.sweep import per_class_scores, sweep

            config = view.sweep_config()
            index = study.step.parent if is_dynamic(study.model) else study.current
            model = study.model_at(index)
            task.update(0, 2, "class-wise relevance")
            data = study.data
            scores = per_class_scores(model, data.train.X, data.train.y,
                                      criterion=view.criterion.value, seed=study.seed,
                                      forward=study.forward)
            # raises StoppedError after a Stop (nothing was changed anyway)
            task.progress(1, 2, "sweeping (the branch is trained once)")
            frame = sweep(model, train_X=data.train.X, train_y=data.train.y, X=data.test.X,
                          y=data.test.y, per_class_scores=scores, seed=study.seed,
                          forward=study.forward, **config)
            return frame, index

        def done(result) -> str:
            frame, index = result
            view.show_sweep(frame, index)
            points = int((frame["technique"] == "dynamic").sum())
            return (f"Swept {points} dynamic settings of step {index} (test split); move the "
                    "k, confidence and keep sliders to read a point, then Build dynamic.")

        return self._run("sweep", "Sweeping dynamic settings", work, done, block, "Dynamic")

    # ------------------------------------------------------------------ sensitivity
    def sensitivity(self, *, block: bool = True):
        """Each layer pruned alone at each amount, on copies (:meth:`Study.sensitivity`), with
        progress and *Stop*; the study does not change."""
        view = self.sensitivity_view

        used: dict = {}

        def work(task: Task):
            used.update(view.config())
            return self.study.sensitivity(**used, progress=task.progress, stop=task.stop)

        def done(result) -> str:
            view.show(result, used)
            return result.summary() + " Click a cell of the heat map to preview that prune."

        return self._run("sensitivity", f"Sensitivity analysis with {view.criterion.value}",
                         work, done, block, "Sensitivity")

    def sensitivity_preview(self, layer: str | None = None, amount: float | None = None, *,
                            block: bool = True):
        """Preview pruning one layer alone at one amount (:meth:`Study.preview` with only that
        layer's override), as a heat-map cell shows. When the current scores are not those of
        the analysis (criterion and unit kind), the current model is scored that way first, so
        the preview removes the units the analysis removed."""
        view = self.sensitivity_view
        study = self.study
        call = "Panel.sensitivity_preview"

        def work(task: Task):
            from ...core.errors import ConfigError

            lay, am = view.cell()
            lay, am = (lay if layer is None else layer), (am if amount is None else amount)
            result = view.result
            if lay not in result.layers:
                raise ConfigError.unknown_name(call, "layer", result.layers, lay)
            if am not in result.amounts:
                raise ConfigError.bad_value(call, "amount", f"one of {result.amounts}", am)
            if result.step != study.current:
                raise ConfigError(f"{call}: the heat map was measured on step {result.step}, "
                                  f"but the current step is {study.current}; run the analysis "
                                  "again.")
            scores, scored = study.scores_at(study.current), None
            if scores is None or (scores.criterion, scores.granularity) != (
                    result.criterion, result.granularity):
                # the same reference examples as the analysis, so the same ranking
                study.score(result.criterion, result.granularity,
                            samples=view.used.get("samples"), progress=task.progress)
                scored = f"{result.criterion}/{result.granularity}"
            preview = study.preview(0.0, layer_amounts={lay: am},
                                    ignore=[g for g in result.layers if g != lay])
            return preview, lay, am, scored

        def done(out) -> str:
            return view.show_preview(*out)

        return self._run("preview", "Previewing one layer's prune", work, done, block,
                         "Sensitivity")

    # ------------------------------------------------------------------ auto
    def auto_prune(self, *, block: bool = True):
        """Prune to the Auto tab's budget under its constraints (:meth:`Study.auto_prune`);
        the History tab is redrawn after every round, and *Stop* ends after the round in
        progress (the kept rounds stay)."""
        view = self.auto_view

        def work(task: Task):
            def progress(done: int, total: int) -> None:
                task.progress(done, total, f"auto-prune: round {done} of about {total}")
                if done:
                    self.refresh()    # the kept round appears in History while the rest runs

            return self.study.auto_prune(**view.config(), progress=progress, stop=task.stop)

        def done(step):
            outcome = getattr(step, "auto", None)
            view.show(step, outcome)
            if outcome is None:
                return f"Auto-prune ended at step {step.index}."
            return ("ok" if outcome.met else "warn"), outcome.message

        return self._run("auto-prune", f"Auto-pruning to {view.value.value:.0%} of the "
                                       f"{view.budget.value}", work, done, block, "Auto")

    # ------------------------------------------------------------------ export
    def export_onnx(self, path: str | Path | None = None, *, block: bool = True
                    ) -> Path | None:
        """Write the current model as ONNX (:meth:`Study.export_onnx`; needs the ``deploy``
        extra, and the status line says how to install it when it is missing)."""
        target = self._path(path, self.export_view.onnx_path, "onnx")

        def work(task: Task) -> Path:
            return Path(self.study.export_onnx(target))

        def done(out: Path) -> str:
            self.export_view.show_onnx(out)
            return (f"Exported ONNX to {out} (BatchNorm folded, outputs checked with "
                    "onnxruntime).")

        return self._run("export onnx", f"Exporting ONNX to {target}", work, done, block,
                         "Export")

    # ------------------------------------------------------------------ explanations
    def saliency(self, *, block: bool = True):
        """Saliency maps of two steps on probe inputs, with drift numbers (``Study.saliency``)."""
        return self._explain("saliency", self.explain_view.saliency_config, block)

    def shapley(self, *, block: bool = True):
        """Shapley values of two steps on probe inputs (``Study.shapley``)."""
        return self._explain("shapley", self.explain_view.shapley_config, block)

    def why(self, *, block: bool = True):
        """Why the prune step behind *after* removed what it removed (``Study.why``)."""
        return self._explain("why", self.explain_view.why_config, block)

    def measure(self, *, block: bool = True):
        """*Measure*: batch-1 latency of the original and the current model (within a time
        budget), and the accuracy and drift a big model left for the first ask; the strip shows
        them."""
        study = self.study

        def work(task: Task):
            from ...measure.step import fill_accuracy, fill_drift

            steps = [study.history[0], study.step]
            task.progress(0, 4)
            fill_accuracy(study, steps)
            task.progress(1, 4)
            fill_drift(study, steps)
            task.progress(2, 4)
            if self._latency_original is None:
                self._latency_original = self._measure(study.original)[0]
            task.progress(3, 4)
            self._latency[study.current] = self._measure(study.model)
            task.progress(4, 4)
            return self._latency[study.current]

        def done(found) -> str:
            ms = found[0]
            return (f"Measured step {study.current}: batch-1 latency "
                    + (f"{ms:.3f} ms" if ms is not None else "n/a: the model could not be timed")
                    + f" (original {self._latency_original or float('nan'):.3f} ms).")

        return self._run("measure", "Measuring", work, done, block)

    def drift(self, *, block: bool = True):
        """Accuracy and saliency similarity to the original along the history
        (``Study.drift``)."""
        return self._explain("drift", lambda study: {}, block)

    def _explain(self, kind: str, config, block: bool, method: str | None = None):
        """Run one explanation of the Explain tab: ``Study.<method or kind>`` with the
        arguments ``config(study)`` gives (those its signature names)."""
        def work(task: Task):
            func = getattr(self.study, method or kind, None)
            if func is None:
                raise XPruneError(f"Panel.{kind}: this installation's Study has no "
                                  f"{method or kind}(); install xprune_nb[explain] and update "
                                  "it.")
            return call_supported(func, **config(self.study), progress=task.progress)

        def done(result) -> str:
            self.explain_view.show(kind, result)
            return f"{kind.capitalize()}: done, see the Explain tab."

        return self._run(kind, f"Computing {kind}", work, done, block, "Explain")

    def attention(self, *, block: bool = True):
        """Attention maps per head and layer, and rollout, of two steps on the probe inputs
        (``Study.attention_maps``); offered only for models with readable attention."""
        return self._explain("attention", self.explain_view.attention_config, block,
                             method="attention_maps")

    def pathways(self, *, block: bool = True):
        """The relevance-flow map of the current step against the chosen one, per class
        (``Study.pathways_compare``), shown in the Pathways tab."""
        view = self.pathways_view

        def work(task: Task):
            return self.study.pathways_compare(**view.config(self.study),
                                               progress=task.progress)

        def done(result) -> str:
            view.show(result)
            return "Pathways: done, see the Pathways tab."

        return self._run("pathways", "Mapping pathways", work, done, block, "Pathways")

    def forgotten(self, *, block: bool = True):
        """The test examples whose prediction changed between two steps, the per-class
        accuracy change and their saliency (``Study.forgotten``)."""
        return self._explain("forgotten", self.explain_view.forgotten_config, block)
