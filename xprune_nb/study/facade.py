"""Study: one model, its data, and the history of score → prune → retrain steps on it.

A façade: it validates arguments (``params``), delegates the work to services and records each
result as a step of its ``Timeline``, one transaction per mutating call (undone on failure).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from ..core.errors import ConfigError, ModelError, NotScoredError
from ..core.history import History, Step, study_line
from ..core.params import check, check_classes, validate
from ..core.progress import StopSignal, make_progress
from ..core.scores import Scores
from ..data import StudyData, draw, resolve_data
from ..measure.metrics import macs_of
from ..measure.retraining import retrain_step
from ..measure.step import MeasureCache, measure_step
from ..measure.training import Callback, TrainResult
from ..models.mechanisms import model_tools as _tools
from ..models.mechanisms.device import call_on, input_device, model_device, resolve_device
from ..models.mechanisms.fit_check import check_fits
from ..pruning import units as _units
from ..pruning.plan import PrunePreview, prune_config, rewind_index, units_for
from ..pruning.scoring import criterion_and_kind, reference_for, score_units
from ..record.timeline import Timeline
from .delegate import delegate

__all__ = ["Study"]


class Study:
    """A pruning study: the untouched original model, the current model, data and history.

    Parameters
    ----------
    model : nn.Module
        The model to prune. It is copied: your object is never modified.
    data : DataBundle, optional
        A bundle from :func:`xprune_nb.data.public.load` (or with ``train``/``val``/``test``).
    train, val, test : optional
        Your own splits instead of ``data``: ``(X, y)`` pairs, or a ``DataLoader``, ``Dataset``
        or iterable, kept as given (never copied whole; retraining iterates it).
    seed : int
        Seeds reference sampling, random scores and retraining shuffles: same seed, same result.
    output_fn : callable, optional
        Turns the model's output into logits (default: a tensor, ``.logits`` or ``["logits"]``).
    feature_names, class_names, groups, group_names : optional
        Names of features and classes; sensitive groups per split, their names (groups.md).
    max_snapshots : int
        Weights of at most this many steps stay in memory; older ones are spilled to disk.
    probe_size, eval_samples, score_samples : int or "all"
        Seeded samples: test rows for drift at every step; val/test rows measured (``"auto"``:
        all of tensors, 1000 of a loader; ``"all"``: exact); a score's reference rows (256).
    device : "auto", "cpu", "cuda", "cuda:N" or torch.device
        Where the models live and compute (``"auto"``: the model's own device); data goes
        there batch by batch; snapshots and files hold CPU tensors (docs/big_models.md).
    progress : bool or callable
        The progress protocol while the original model is measured (a pass over the data).

    Examples
    --------
    >>> import xprune_nb as xp
    >>> study = xp.Study(xp.zoo.load("digits_cnn"), xp.datasets.load("digits"), seed=0)
    >>> _ = study.score("taylor", granularity="channel", samples=128)
    >>> step = study.prune(0.3)
    >>> step.metrics["params"] < study.history[0].metrics["params"]
    True
    >>> _ = study.undo()
    """

    def __init__(self, model: nn.Module, data=None, *, train=None, val=None, test=None,
                 seed: int = 0, output_fn: Callable | None = None,
                 feature_names: Sequence[str] | None = None,
                 class_names: Sequence[str] | None = None, groups: dict | None = None,
                 group_names: Sequence[str] | None = None, max_snapshots: int = 8,
                 snapshot_dir: str | Path | None = None, probe_size: int = 32,
                 device: str | torch.device = "auto", progress=False,
                 eval_samples: int | str | None = "auto", score_samples: int | str = 256) -> None:
        call = "Study"
        if not isinstance(model, nn.Module):
            raise ConfigError.bad_value(call, "model", "a torch.nn.Module", model)
        self.device = resolve_device(device, model, call)
        validate(call, seed=seed, max_snapshots=max_snapshots, probe_size=probe_size)
        study_data = resolve_data(data, train=train, val=val, test=test, seed=seed,
                                  eval_samples=eval_samples, score_samples=score_samples,
                                  feature_names=feature_names, class_names=class_names,
                                  groups=groups, group_names=group_names)
        self._setup(_tools.copy_model(model).to(self.device), study_data, seed, output_fn,
                    call=call, max_snapshots=max_snapshots, snapshot_dir=snapshot_dir)
        self.model_source, self.probe_size = _tools.model_source(model), probe_size
        self.probe_x, self.probe_y = draw(self.data.test, probe_size, seed=seed, clip=True,
                                          call=call, param="probe_size")
        first = Step(0, "original", None)   # measured with progress: a pass over the data
        measure_step(self, first, self.timeline.model, progress=make_progress(
            progress, call, "open: evaluate the original"))
        self.timeline.commit(first, self.timeline.model)

    def _setup(self, original: nn.Module, data: StudyData, seed: int, output_fn, *, call: str,
               max_snapshots: int = 8, snapshot_dir=None, analysis: dict | None = None,
               output_layers: list[str] | None = None, executed: set[str] | None = None) -> None:
        """Every attribute of a study, for both construction paths (new and loaded)."""
        if output_fn is not None and not callable(output_fn):
            raise ConfigError.bad_value(call, "output_fn", "a callable or None", output_fn)
        self.data, self.seed, self.output_fn = data, seed, output_fn
        _tools.check_finite(original, call)
        example = data.example(2)
        trace: dict = {}   # output and executed layers and the MACs, found in one single pass
        num_logits = check_fits(original, example, data.num_classes, self.forward, call, trace,
                                count_macs=macs_of)
        if not _tools.prunable_layers(original):
            raise ModelError(f"{call}: the model has no Conv or Linear layer to prune.")
        self.original: nn.Module = original.eval()
        self.env = _units.ModelEnv.of(
            original, example, self.forward, num_logits, analysis=analysis,
            output_layers=trace["output_layers"] if output_layers is None else output_layers,
            executed=trace["executed"] if executed is None else executed, ran=trace["ran"])
        self.output_layers = self.env.output_layers
        self.timeline = Timeline(original, example, max_snapshots=max_snapshots,
                                 snapshot_dir=snapshot_dir, forward=self.forward)
        self.model_source: dict = {}
        self.model_spec: dict | None = None   # the recipe's model entry, when built from one
        self.last_train_result: TrainResult | None = None
        self.measure_cache = MeasureCache(trace.get("macs"))   # MACs per structure, probe maps

    @classmethod
    def _from_state(cls, *, original: nn.Module, data: StudyData, seed: int, output_fn,
                    model_source: dict, analysis: dict, output_layers: list[str],
                    executed: list[str], probe: tuple, history: History, states: list[dict],
                    scores: dict[int, Scores], current: int) -> Study:
        """A study rebuilt from its saved record (used by :meth:`load`)."""
        study = cls.__new__(cls)
        study.device = model_device(original)
        study._setup(original, data, seed, output_fn, call="Study.load", analysis=analysis,
                     output_layers=output_layers, executed=set(executed))
        study.model_source, (study.probe_x, study.probe_y) = dict(model_source), probe
        study.timeline.replace(history, states, scores, current)
        return study

    def forward(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Logits of ``model`` on ``x`` (``output_fn``), on ``study.device``, returned to x's."""
        home = input_device(x)
        out = call_on(model, x, self.device)
        logits = self.output_fn(out) if self.output_fn is not None else _tools.logits_of(out)
        moved = isinstance(logits, torch.Tensor) and home is not None and logits.device != home
        return logits.to(home) if moved else logits

    @property
    def model(self) -> nn.Module:
        """The current model (that of the current history step)."""  # noqa: D401
        return self.timeline.model

    @property
    def history(self) -> History:
        """Every step, as a tree (``parent``); ``history.to_frame()`` is a table."""
        return self.timeline.history

    @property
    def current(self) -> int:
        """Index of the history step the current model corresponds to."""
        return self.timeline.current

    step = property(lambda self: self.timeline.step, doc="The current history step.")
    busy_with = property(lambda self: self.timeline.busy_with, doc="The changing call in "
                         "progress in another thread (e.g. a panel retrain), or None.")

    @property
    def scores_(self) -> Scores:
        """The scores computed for the current model (raises if :meth:`score` was not called)."""
        if self.current not in self.timeline.scores:
            raise NotScoredError(f"Study: no scores for step {self.current}; call "
                                 "study.score(criterion) first.")
        return self.timeline.scores[self.current]

    def scores_at(self, index: int) -> Scores | None:
        """Scores computed at step ``index``, if any."""
        return self.timeline.scores.get(self.timeline.index(index, "Study.scores_at"))

    def model_at(self, index: int) -> nn.Module:
        """A fresh copy of the model exactly as it was after step ``index``."""
        return self.timeline.model_at(self.timeline.index(index, "Study.model_at"))

    def score(self, criterion: str = "magnitude", granularity: str = "channel", *,
              samples: int | None = None, classes: Sequence[int | str] | None = None,
              prune_output: bool = False, batch_size: int = 64, progress=False,
              stop: StopSignal | None = None, **options) -> Scores:
        """Score every prunable unit of the current model with ``criterion``.

        Parameters
        ----------
        criterion : str
            A registered criterion (:func:`xprune_nb.criteria.available`), e.g. ``taylor``.
        granularity : str
            A unit kind (:func:`xprune_nb.pruning.units.available`): ``channel`` (removed for
            real), ``weight`` (masked), ``head``...
        samples, classes : int, list of class indices or names, optional
            Reference examples in total (default ``score_samples``), stratified by class, only
            from ``classes`` when given (``magnitude``/``random`` read no data: they refuse it).
        prune_output, batch_size, progress, stop
            Score the output layer too (``weight``); batch size; the progress protocol.
        **options
            The criterion's options (e.g. ``p=2`` for magnitude, ``rule="zplus"`` for lrp).

        Returns
        -------
        Scores
            Also kept as ``study.scores_`` for the next :meth:`prune`.
        """
        call = "Study.score"
        cls, kind = criterion_and_kind(criterion, granularity, call)
        classes = check_classes(call, classes, self.data.num_classes, self.data.class_names,
                                criterion=cls)
        validate(call, samples=samples, batch_size=batch_size, prune_output=prune_output)
        scorer = cls(**options)
        tick = make_progress(progress, call, f"score {criterion}", stop)
        inputs, targets, extras = reference_for(scorer, self.data, samples, classes,
                                                seed=self.seed, call=call)
        _tools.check_finite(self.model, call)

        with self.timeline.transaction(call):
            scores = score_units(
                self.model, self.env, kind, scorer, inputs=inputs, targets=targets, classes=classes,
                num_classes=self.data.num_classes, seed=self.seed, batch_size=batch_size,
                prune_output=prune_output, progress=tick, step=self.current, call=call,
                options={**scorer.params, "samples": len(targets), "classes": classes,
                         "prune_output": prune_output, "seed": self.seed,
                         "batch_size": batch_size}, **extras)
            self.timeline.record_scores(scores)
        return scores

    def prune(self, amount: float, *, scope: str = "global", normalize: str | None = "mean",
              layer_amounts: dict[str, float] | None = None, ignore: Sequence[str] = (),
              steps: int = 1, schedule: str = "linear", retrain: dict | None = None,
              rewind: int | str | None = None, recalibrate: bool | None = None,
              round_to: int | None = None) -> Step:
        """Remove the ``amount`` least important of the current units, as scored last.

        Parameters
        ----------
        amount : float in [0, 1)
            Fraction of the units alive now to remove (over ``steps`` rounds in total).
        scope, normalize : {"global", "layer"}, {"mean", "l1", "l2", "max", None}
            One ranking across groups after per-group normalisation, or the same fraction in
            every group.
        layer_amounts, ignore : dict, list of str
            Per-group fractions that override ``amount``; groups never pruned in this call.
        steps, schedule : int, {"linear", "geometric"}
            Iterative pruning: rounds of score → prune (→ ``retrain``, a dict of
            :meth:`retrain` arguments), re-scoring with the same criterion each round.
        rewind : int, "original" or None
            Lottery-ticket rewinding to the weights of that step after each round.
        recalibrate : bool, optional
            Re-estimate BatchNorm statistics after a structural removal (EagleEye); default:
            on for models with BatchNorm.
        round_to : int, optional
            Channels: every group keeps a multiple of this many (Torch-Pruning's ``round_to``).

        Returns
        -------
        Step
            The last step recorded. On any error the study is left exactly as before.
        """
        call = "Study.prune"
        scores = self.scores_
        cfg = prune_config(call, scores, amount, scope=scope, normalize=normalize,
                           layer_amounts=layer_amounts, ignore=ignore, steps=steps,
                           schedule=schedule, retrain=retrain, rewind=rewind,
                           recalibrate=recalibrate, round_to=round_to)
        rewind_to = rewind_index(self.timeline, rewind, call)
        from .prune_round import prune_round, rescore

        with self.timeline.transaction(call):
            last = None
            for i, frac in enumerate(cfg.fractions()):
                if i > 0:
                    scores = rescore(self, scores)
                last = prune_round(self, scores, frac, cfg, round_index=i, call=call,
                                   rewind_to=rewind_to)
                if cfg.retrain:
                    last = self.retrain(**{"progress": False, **cfg.retrain})
        return last

    def preview(self, amount: float, **prune_args) -> PrunePreview:
        """What :meth:`prune` with these arguments would remove (first round), on a copy."""
        from ..pruning.plan import preview_removal

        call = "Study.preview"
        scores = self.scores_
        cfg = prune_config(call, scores, amount, **prune_args)
        kind = _units.get(scores.granularity, call)
        units = units_for(kind, self.model, self.env, scores, self.current)
        return preview_removal(kind, self.model, self.env, units, scores, cfg, call)

    def retrain(self, epochs: int = 1, *, lr: float = 1e-3, optimizer: str = "adam",
                batch_size: int = 64, weight_decay: float = 0.0,
                callbacks: Sequence[Callback] = (), progress=True,
                stop: StopSignal | None = None, steps_per_epoch: int | None = None,
                train_fn: Callable[[nn.Module, StudyData], None] | None = None,
                seed: int | None = None, recalibrate: bool | None = None,
                recalibrate_samples: int = 2048) -> Step:
        """Fine-tune the current model on the training split; records a ``retrain`` step.

        Masks stay in force. ``progress`` follows the progress protocol (``True`` shows a
        bar, a callable gets ``(batches done, total)``); set ``stop`` to stop between batches:
        the step is recorded with ``stopped=True``. ``train_fn(model, data)`` replaces our
        loop. ``seed`` (default: study seed + step index) is recorded so a recipe replays it.
        ``recalibrate`` (default: on for models with BatchNorm and our loop) re-estimates the
        BatchNorm statistics after the last epoch from at most ``recalibrate_samples``
        training examples (:func:`xprune_nb.models.mechanisms.recalibrate.recalibrate_batchnorm`).
        Your own loader is iterated as given; ``steps_per_epoch`` bounds an epoch (required
        for data without a length)."""
        call = "Study.retrain"
        validate(call, epochs=epochs, lr=lr, optimizer=optimizer, batch_size=batch_size,
                 weight_decay=weight_decay, recalibrate=recalibrate,
                 recalibrate_samples=recalibrate_samples, steps_per_epoch=steps_per_epoch)
        seed = self.seed + len(self.history) if seed is None else check(call, "seed", seed)
        with self.timeline.transaction(call):
            return retrain_step(self, epochs=epochs, lr=lr, optimizer=optimizer,
                                batch_size=batch_size, weight_decay=weight_decay, stop=stop,
                                callbacks=callbacks, progress=progress, train_fn=train_fn,
                                seed=seed, call=call, steps_per_epoch=steps_per_epoch,
                                recalibrate=recalibrate, recalibrate_samples=recalibrate_samples)

    def goto(self, index: int) -> Step:
        """Make step ``index`` current (its exact model is restored); later steps are kept,
        and a new action from here starts a branch."""
        call = "Study.goto"
        index = self.timeline.index(index, call)
        with self.timeline.transaction(call):
            return self.timeline.go(index)

    def undo(self) -> Step:
        """Go back to the parent of the current step."""
        if (parent := self.step.parent) is None:
            raise ConfigError("Study.undo(): already at the original model; nothing to undo.")
        return self.goto(parent)

    # one call of a service each; signatures and docstrings are the services' own
    evaluate = delegate("xprune_nb.measure.step:evaluate")
    compare = delegate("xprune_nb.core.history:compare_study_steps")
    prunable = delegate("xprune_nb.pruning.units:study_prunable")
    saliency = delegate("xprune_nb.explain.study:saliency")
    shapley = delegate("xprune_nb.explain.study:shapley")
    why = delegate("xprune_nb.explain.lookup:why")
    drift = delegate("xprune_nb.explain.lookup:drift_table")
    save = delegate("xprune_nb.record.io.study_file:save_study")
    sensitivity = delegate("xprune_nb.pruning.sensitivity:sensitivity")
    auto_prune = delegate("xprune_nb.pruning.auto:auto_prune")
    dynamic = delegate("xprune_nb.pruning.dynamic.step:dynamic")
    forgotten = delegate("xprune_nb.explain.forgotten:forgotten")
    attention_maps = delegate("xprune_nb.explain.attention_compare:attention_maps")
    grounding = delegate("xprune_nb.explain.grounding:grounding")
    pathways = delegate("xprune_nb.explain.pathways.study:pathways")
    pathways_compare = delegate("xprune_nb.explain.pathways.study:pathways_compare")
    export_onnx = delegate("xprune_nb.export.study_deploy:export_onnx")
    recipe = delegate("xprune_nb.record.recipe.from_study:study_recipe")
    export_script = delegate("xprune_nb.export.study_ops:export_study_script")
    save_pruned = delegate("xprune_nb.export.study_ops:save_study_model")
    save_pretrained = delegate("xprune_nb.record.io.pretrained:save_study_pretrained")
    report = delegate("xprune_nb.export.report:study_report")

    @classmethod
    def load(cls, path: str | Path, model: nn.Module | None = None, data=None, *,
             trust_source: bool = False, output_fn: Callable | None = None,
             device: str | torch.device = "auto") -> Study:
        """Load a study saved with :meth:`save`; never executes code from the file unless
        ``trust_source=True`` lets it import the model class it names (see docs/concepts.md,
        "Trust and safety"). ``model`` is a fresh instance of the original architecture;
        ``device`` as in :class:`Study` (a study saved on a GPU loads on a CPU)."""
        from ..record.io.study_file import load_study

        return load_study(cls, path, model=model, data=data, trust_source=trust_source,
                          output_fn=output_fn, device=device)

    @classmethod
    def from_recipe(cls, recipe, *, model: nn.Module | None = None, data=None,
                    epochs: int | None = None, progress=True, trust_source: bool = False,
                    **study_options) -> Study:
        """Build a study and replay a recipe (a Recipe, its dict or a file) on it.

        By itself a recipe builds only zoo models and bundled datasets; factories, importable
        classes and model source code run code, so they need ``trust_source=True``. ``model=``
        and ``data=`` replace the recipe's sources; ``epochs`` overrides every retraining.
        See docs/recipes.md for an example.
        """
        from ..export.study_ops import study_from_recipe
        return study_from_recipe(cls, recipe, model=model, data=data, epochs=epochs,
                                 progress=progress, trust_source=trust_source, **study_options)

    def __repr__(self) -> str:
        return study_line(self.current, len(self.history), self.step.known(), self.step.pending)

    def _repr_html_(self) -> str:   # a display: never measures what is pending
        return (f"<b>Study</b>: step {self.current} of {len(self.history)}"
                + self.history._repr_html_().removeprefix("<b>History</b>"))
