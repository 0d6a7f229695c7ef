"""Study: one model, its data, and the history of score → prune → retrain steps on it."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from . import criteria as _criteria
from ._data import StudyData, resolve_data, stratified_indices
from ._model import (
    check_finite,
    check_fits,
    copy_model,
    eval_mode,
    find_output_layers,
    logits_of,
    prunable_layers,
)
from ._snapshots import SnapshotStore
from ._study_explain import ExplainMixin
from ._study_export import ExportMixin
from .errors import ConfigError, ModelError, NotScoredError, PruneError
from .history import History, Step
from .metrics import Metrics, evaluate_model
from .pruning.schedules import step_fractions
from .pruning.selection import SCOPES, select_units
from .pruning.unstructured import (
    alive_weights,
    apply_weight_removal,
    ensure_masks,
    masked_layers,
    refresh_masked_weights,
)
from .scores import NORMALIZATIONS, Scores
from .training import Callback, ProgressBar, StopSignal, TrainResult, train

__all__ = ["Study"]

_GRANULARITIES = ("weight", "channel", "head")


def _is_fraction(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and 0 <= x < 1


class Study(ExplainMixin, ExportMixin):
    """A pruning study: the untouched original model, the current model, data and history.

    Parameters
    ----------
    model : nn.Module
        The model to prune. It is copied: your object is never modified.
    data : DataBundle, optional
        A bundle from :func:`xprune_nb.datasets.load` (or anything with ``train``/``val``/``test``).
    train, val, test : optional
        Your own splits instead of ``data``: ``DataLoader``, ``Dataset`` or ``(X, y)`` pairs.
    seed : int
        Seeds reference sampling, random scores and retraining shuffles: same seed, same result.
    output_fn : callable, optional
        Turns the model's output into logits (default: a tensor as is, ``.logits``, ``["logits"]``
        or the first item of a tuple).
    max_snapshots : int
        Weights of at most this many steps stay in memory; older ones are spilled to disk.
    probe_size : int
        Test examples (stratified) on which every step records explanation drift.

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
                 seed: int = 0, output_fn: Callable | None = None, max_snapshots: int = 8,
                 snapshot_dir: str | Path | None = None, probe_size: int = 32) -> None:
        if not isinstance(model, nn.Module):
            raise ConfigError.bad_value("Study", "model", "a torch.nn.Module", model)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError.bad_value("Study", "seed", "an integer", seed)
        if output_fn is not None and not callable(output_fn):
            raise ConfigError.bad_value("Study", "output_fn", "a callable or None", output_fn)
        self.data: StudyData = resolve_data(data, train=train, val=val, test=test)
        self.seed = seed
        self._output_fn = output_fn
        original = copy_model(model).cpu()
        check_finite(original, "Study")
        self._num_logits = check_fits(original, self.data.train.X[:2], self.data.num_classes,
                                      self.forward, "Study")
        if not prunable_layers(original):
            raise ModelError("Study: the model has no Conv or Linear layer, so nothing to prune.")
        original.eval()
        self.original: nn.Module = original
        self.model: nn.Module = copy.deepcopy(original)
        self.output_layers = find_output_layers(original, self.data.train.X[:2], self.forward)
        self._executed = _executed_layers(original, self.data.train.X[:2], self.forward)
        self.model_source = _model_source(model)
        self._snapshots = SnapshotStore(max_snapshots, snapshot_dir)
        self._scores: dict[int, Scores] = {}
        self._all_scores: dict[int, dict[str, Scores]] = {}
        self._safe_channel_keys: list[str] | None = None
        self._skipped: dict[str, str] = {}
        probe = stratified_indices(self.data.test.y, min(probe_size, len(self.data.test)),
                                   seed=seed, call="Study")
        self.probe_x, self.probe_y = self.data.test.X[probe], self.data.test.y[probe]
        self.history = History()
        self.history.current = 0
        first = Step(0, "original", None)
        self._finish_step(first)
        self.history.append(first)

    # ------------------------------------------------------------------ basics
    def forward(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Logits of ``model`` on ``x`` (applies ``output_fn``)."""
        out = model(x)
        return self._output_fn(out) if self._output_fn is not None else logits_of(out)

    @property
    def current(self) -> int:
        """Index of the history step the current model corresponds to."""
        return self.history.current

    @property
    def step(self) -> Step:
        return self.history[self.current]

    @property
    def scores_(self) -> Scores:
        """The scores computed for the current model (raises if :meth:`score` was not called)."""
        if self.current not in self._scores:
            raise NotScoredError(
                f"Study: no scores for the current model (step {self.current}); "
                "call study.score(criterion) first."
            )
        return self._scores[self.current]

    def _example(self) -> torch.Tensor:
        return self.data.train.X[:2]

    # ------------------------------------------------------------------ scoring
    def prunable(self):
        """Table of the channel groups that can be pruned (and the layers that cannot, why)."""
        import pandas as pd

        from .pruning.groups import build_graph, channel_groups

        groups = self._channel_groups(self.model)
        rows = [{"group": g.key, "units": g.size, "layers": ", ".join(g.layers),
                 "prunable": True, "reason": ""} for g in groups]
        covered = {n for g in groups for n in g.layers}
        for name, why in self._skipped.items():
            if name not in covered:
                rows.append({"group": name, "units": None, "layers": name, "prunable": False,
                             "reason": why})
        del build_graph, channel_groups
        return pd.DataFrame(rows)

    def _graph_for(self, model: nn.Module):
        """The dependency graph of ``model``, built once per (model, step): scoring and the
        pruning that follows share it."""
        from .pruning.groups import build_graph

        cached = getattr(self, "_graph_cache", None)
        if cached is not None and cached[0] is model and cached[1] == self.current:
            return cached[2]
        graph = build_graph(model, self._example())
        if model is self.model:
            self._graph_cache = (model, self.current, graph)
        return graph

    def _attention_modules(self, model: nn.Module):
        """Maskable ``nn.MultiheadAttention`` modules (those that run) and why others not."""
        from .pruning.heads import attention_modules

        seen: set[str] = set()
        names = {m: n for n, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)}
        handles = [m.register_forward_hook(lambda mod, *a: seen.add(names[mod]))
                   for m in names]
        try:
            with torch.no_grad(), eval_mode(model):
                self.forward(model, self._example())
        finally:
            for h in handles:
                h.remove()
        return attention_modules(model, seen)

    def _channel_groups(self, model: nn.Module):
        from .pruning.groups import channel_groups, safe_channel_groups

        graph = self._graph_for(model)
        if self._safe_channel_keys is None:
            # the analysis is made once, on the original architecture; while no channel has
            # been removed yet the current model has that architecture, so use its graph
            unpruned = not self.step.structure and model is self.model
            safe, skipped = safe_channel_groups(
                model if unpruned else self.original, self._example(),
                ignored=self.output_layers, graph=graph if unpruned else None)
            self._safe_channel_keys = [g.key for g in safe]
            self._skipped = skipped
            if unpruned:
                return safe
        keys = set(self._safe_channel_keys)
        return [g for g in channel_groups(model, graph, self.output_layers) if g.key in keys]

    def score(self, criterion: str = "magnitude", granularity: str = "channel", *,
              samples: int | None = None, classes: Sequence[int] | None = None,
              prune_output: bool = False, batch_size: int = 64,
              progress: Callable[[int, int], None] | None = None, **options) -> Scores:
        """Score every prunable unit of the current model with ``criterion``.

        Parameters
        ----------
        criterion : str
            A registered criterion: ``magnitude``, ``random``, ``gradient``, ``taylor``,
            ``activation``, ``lrp``, ``conductance``, ``shapley`` (see
            :func:`xprune_nb.criteria.available`).
        granularity : {"channel", "weight", "head"}
            ``channel`` scores conv channels / linear neurons (removed for real by
            :meth:`prune`); ``weight`` scores individual weights (masked); ``head`` scores the
            heads of ``nn.MultiheadAttention`` modules (masked).
        samples : int, optional
            Reference examples in total, drawn stratified by class from the training split
            (default: 256, or every example available if fewer).
        classes : list of int, optional
            Only examples of these classes are used: relevance for these classes.
        prune_output : bool
            Also score the output layer's weights (``weight`` granularity only).
        **options
            Options of the criterion (e.g. ``p=2`` for magnitude, ``rule="zplus"`` for lrp).

        Returns
        -------
        Scores
            Also kept as ``study.scores_`` for the next :meth:`prune`.
        """
        call = "Study.score"
        cls = _criteria.get(criterion, call)
        if granularity not in _GRANULARITIES:
            raise ConfigError.unknown_name(call, "granularity", _GRANULARITIES, granularity)
        if granularity not in cls.granularities:
            raise ConfigError.bad_value(call, "granularity",
                                        f"one of {list(cls.granularities)} for {criterion!r}",
                                        granularity)
        if classes is not None:
            if isinstance(classes, int):
                classes = [classes]
            classes = [int(c) for c in classes]
            bad = [c for c in classes if not 0 <= c < self.data.num_classes]
            if bad or not classes:
                raise ConfigError.bad_value(
                    call, "classes", f"class indices in [0, {self.data.num_classes})", classes)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError.bad_value(call, "batch_size", "a positive integer", batch_size)
        scorer = cls(**options)
        if samples is None:
            pool = self.data.train.y if classes is None else self.data.train.y[
                torch.isin(self.data.train.y, torch.tensor(classes))]
            samples = min(256, len(pool))
        idx = stratified_indices(self.data.train.y, samples, seed=self.seed, classes=classes,
                                 call=call)
        check_finite(self.model, call)
        start = time.perf_counter()
        if granularity == "channel":
            groups = self._channel_groups(self.model)
            if not groups:
                raise ModelError(
                    f"{call}: no channel of this model can be removed without breaking it "
                    f"(not prunable: {self._skipped}). Try granularity='weight'."
                )
            modules = dict(self.model.named_modules())
            layers = {n: modules[n] for g in groups for n in g.layers}
        elif granularity == "head":
            groups = []
            layers, head_skipped = self._attention_modules(self.model)
            if not layers:
                raise ModelError(
                    f"{call}: the model has no nn.MultiheadAttention whose heads can be masked"
                    + (f" ({head_skipped})" if head_skipped else "") + ". Hand-written "
                    "attention is not supported at head granularity; prune its MLP units with "
                    "granularity='channel' or its weights with granularity='weight'."
                )
        else:
            groups = []
            # layers whose forward() never runs (e.g. nn.MultiheadAttention.out_proj, read
            # functionally) would ignore a mask's pre-forward hook, so they are not maskable
            layers = {n: m for n, m in prunable_layers(self.model).items()
                      if n in self._executed and (prune_output or n not in self.output_layers)}
        ctx = _criteria.ScoringContext(
            model=self.model, granularity=granularity, layers=layers, inputs=self.data.train.X[idx],
            targets=self.data.train.y[idx], classes=classes, num_classes=self.data.num_classes,
            forward=self.forward, seed=self.seed, batch_size=batch_size, progress=progress,
        )
        before = _fingerprint(self.model)
        with eval_mode(self.model):
            raw = scorer.score(ctx)
            per_class_raw = None
            if cls.class_aware and granularity == "channel":
                per_class_raw = scorer.per_class_channel_scores(ctx)
            elif cls.class_aware and granularity == "head":
                per_class_raw = scorer.per_class_head_scores(ctx)
        if _fingerprint(self.model) != before:   # a criterion must never change the model
            raise ModelError(f"{call}: criterion {criterion!r} changed the model's weights.")
        errors_raw = None
        if getattr(type(scorer), "standard_errors_", None) is not None:
            try:
                errors_raw = scorer.standard_errors_
            except NotScoredError:
                errors_raw = None
        if granularity == "channel":
            try:
                # standard errors of a mean over coupled layers: a conservative mean of errors
                errors = ({g.key: g.combine(errors_raw) for g in groups}
                          if errors_raw else None)
                values = {g.key: g.combine(raw) for g in groups}
                per_class = ({g.key: g.combine(per_class_raw) for g in groups}
                             if per_class_raw else None)
            except KeyError as exc:
                raise ModelError(f"{call}: criterion {criterion!r} returned no scores for "
                                 f"layer group {exc.args[0]!r}.") from None
        else:
            values = {k: v.detach().float() for k, v in raw.items()}
            per_class = ({k: v.detach().float() for k, v in per_class_raw.items()}
                         if per_class_raw else None)
            errors = ({k: v.detach().float() for k, v in errors_raw.items()}
                      if errors_raw else None)
        for key, v in values.items():
            if not torch.isfinite(v).all():
                raise ModelError(
                    f"{call}: criterion {criterion!r} gave NaN or infinite scores for {key!r}; "
                    "check the model's weights and the reference data."
                )
        scores = Scores(
            criterion=criterion, granularity=granularity, values=values,
            groups={g.key: g.layers for g in groups}, step=self.current, per_class=per_class,
            options={**scorer.params, "samples": samples, "classes": classes,
                     "prune_output": prune_output, "seed": self.seed,
                     "batch_size": batch_size},
            skipped=(dict(self._skipped) if granularity == "channel"
                     else head_skipped if granularity == "head" else {}),
            errors=errors,
            seconds=time.perf_counter() - start,
        )
        scores._channel_groups = {g.key: g for g in groups}
        self._scores[self.current] = scores
        self._all_scores.setdefault(self.current, {})[f"{criterion}/{granularity}"] = scores
        return scores

    # ------------------------------------------------------------------ pruning
    def prune(self, amount: float, *, scope: str = "global", normalize: str | None = "mean",
              layer_amounts: dict[str, float] | None = None, ignore: Sequence[str] = (),
              steps: int = 1, schedule: str = "linear", retrain: dict | None = None,
              rewind: int | str | None = None) -> Step:
        """Remove the ``amount`` least important of the current units, as scored last.

        Parameters
        ----------
        amount : float in [0, 1)
            Fraction of the units alive now to remove (over ``steps`` steps in total).
        scope : {"global", "layer"}
            One ranking across layers after per-layer normalisation, or the same fraction in
            every layer.
        normalize : {"mean", "l1", "l2", "max", None}
            Per-layer normalisation before a global ranking.
        layer_amounts : dict, optional
            Per-layer fractions that override ``amount`` (keys: group / layer names).
        ignore : list of str
            Layers never pruned in this call.
        steps, schedule : int, {"linear", "geometric"}
            Iterative pruning: ``steps`` rounds of score → prune (→ retrain), re-scoring with the
            same criterion before each round after the first.
        retrain : dict, optional
            Keyword arguments of :meth:`retrain` run after every round (e.g. ``{"epochs": 1}``).
        rewind : int, "original" or None
            Lottery-ticket rewinding: after each round, reset the surviving weights to their
            values at that history step (``"original"`` = step 0).

        Returns
        -------
        Step
            The last step recorded. On any error the study is left exactly as before.
        """
        call = "Study.prune"
        scores = self.scores_
        if not _is_fraction(amount):
            raise ConfigError.bad_value(call, "amount", "a number in [0, 1)", amount)
        if scope not in SCOPES:
            raise ConfigError.unknown_name(call, "scope", SCOPES, scope)
        if normalize not in NORMALIZATIONS:
            raise ConfigError.unknown_name(call, "normalize", [n for n in NORMALIZATIONS if n],
                                           normalize)
        valid = set(scores.values)
        ignore = [ignore] if isinstance(ignore, str) else list(ignore)
        layer_amounts = dict(layer_amounts or {})
        for name in list(ignore) + list(layer_amounts):
            if name not in valid:
                raise ConfigError.unknown_name(call, "layer name", valid, name)
        for name, frac in layer_amounts.items():
            if not _is_fraction(frac):
                raise ConfigError.bad_value(call, f"layer_amounts[{name!r}]",
                                            "a number in [0, 1)", frac)
        fractions = step_fractions(amount, steps, schedule, call)
        if retrain is not None and not isinstance(retrain, dict):
            raise ConfigError.bad_value(call, "retrain", "a dict of Study.retrain arguments",
                                        retrain)
        rewind_index = self._rewind_index(rewind, call)
        config = {"amount": amount, "scope": scope, "normalize": normalize,
                  "layer_amounts": layer_amounts, "ignore": ignore, "steps": steps,
                  "schedule": schedule, "retrain": retrain, "rewind": rewind}
        saved = self._save_state()
        try:
            last = None
            for i, frac in enumerate(fractions):
                if i > 0:
                    o = dict(scores.options)
                    self.score(scores.criterion, scores.granularity, samples=o.pop("samples"),
                               classes=o.pop("classes"), prune_output=o.pop("prune_output"),
                               **{k: v for k, v in o.items() if k != "seed"})
                    scores = self.scores_
                la = {k: 1 - (1 - v) ** (1 / steps) for k, v in layer_amounts.items()}
                last = self._prune_once(scores, frac, scope, normalize, la, ignore,
                                        {**config, "round": i + 1, "fraction": frac},
                                        rewind_index)
                if retrain:
                    last = self.retrain(**{"progress": False, **retrain})
        except BaseException:
            self._restore_state(saved)
            raise
        return last

    def _rewind_index(self, rewind, call: str) -> int | None:
        if rewind is None:
            return None
        if rewind == "original":
            return 0
        if isinstance(rewind, int) and not isinstance(rewind, bool) and (
                0 <= rewind <= self.current and self._is_ancestor(rewind, self.current)):
            return rewind
        raise ConfigError.bad_value(call, "rewind",
                                    "None, 'original' or the index of an earlier step on the "
                                    f"path to the current step {self.current}", rewind)

    def _is_ancestor(self, a: int, b: int) -> bool:
        while b is not None:
            if a == b:
                return True
            b = self.history[b].parent
        return False

    def _prune_once(self, scores: Scores, fraction: float, scope, normalize, layer_amounts,
                    ignore, config, rewind_index) -> Step:
        start = time.perf_counter()
        values = {k: v for k, v in scores.values.items() if k not in ignore}
        # the model is pruned in place (no copy, and the dependency graph built while scoring
        # is reused); if anything fails, the exact model is restored from the step's snapshot
        model = self.model
        structure = [dict(op) for op in self.step.structure]
        if scores.granularity == "weight":
            layers = {n: m for n, m in model.named_modules() if n in values}
            removal = select_units(values, fraction, scope=scope, normalize=normalize,
                                   layer_amounts=layer_amounts, alive=alive_weights(layers))
        elif scores.granularity == "head":
            from .pruning.heads import alive_heads

            layers = {n: m for n, m in model.named_modules() if n in values}
            removal = select_units(values, fraction, scope=scope, normalize=normalize,
                                   layer_amounts=layer_amounts, alive=alive_heads(layers))
        else:
            groups = getattr(scores, "_channel_groups", None) or {
                g.key: g for g in self._channel_groups(self.model)}
            keep_sets = {k: [list(root) for _, _, root in g.mapping] for k, g in groups.items()}
            removal = select_units(values, fraction, scope=scope, normalize=normalize,
                                   layer_amounts=layer_amounts, keep_sets=keep_sets)
            plan = {k: v.tolist() for k, v in removal.items()}
            self._check_members_keep_units(scores, plan)
        step = Step(len(self.history), "prune", self.current,
                    config={"criterion": scores.criterion, "granularity": scores.granularity,
                            "score_options": dict(scores.options), **config},
                    removed={k: v.tolist() for k, v in removal.items()})
        try:
            if scores.granularity == "weight":
                apply_weight_removal(layers, removal)
            elif scores.granularity == "head":
                from .pruning.heads import apply_head_removal

                apply_head_removal(layers, removal)
            else:
                from .pruning.groups import apply_channel_plan

                graph = self._graph_for(model)
                self._graph_cache = None
                apply_channel_plan(model, self._example(), plan, graph=graph)
                if plan:
                    structure.append(plan)
                self._check_runs(model)
            step.structure = structure
            if rewind_index is not None:
                self._rewind(model, rewind_index, structure)
            self._finish_step(step, seconds=time.perf_counter() - start)
        except BaseException:
            self._graph_cache = None
            self.model = self.model_at(self.current)
            raise
        self._append(step)
        return step

    def _check_members_keep_units(self, scores: Scores, plan: dict[str, list[int]]) -> None:
        """A group behind a concatenation spans several layers: none of them may be emptied."""
        groups = getattr(scores, "_channel_groups", None)
        if groups is None:
            groups = {g.key: g for g in self._channel_groups(self.model)}
        for key, idxs in plan.items():
            removed = set(idxs)
            for name, _, root in groups[key].mapping:
                if root and removed.issuperset(root):
                    raise PruneError(
                        f"Study.prune: this request would remove every unit of {name!r} (its "
                        f"channels are part of group {key!r}), which breaks the model. Use a "
                        f"smaller amount, scope='layer', or ignore=[{key!r}]."
                    )

    def _check_runs(self, model: nn.Module) -> None:
        try:
            with torch.no_grad(), eval_mode(model):
                out = self.forward(model, self._example())
        except Exception as exc:  # noqa: BLE001
            raise PruneError(f"Study.prune: the pruned model no longer runs ({exc}); "
                             "nothing was changed. Ignore the layers involved.") from exc
        if out.shape[1] != self._num_logits:
            raise PruneError("Study.prune: pruning changed the number of logits; "
                             "nothing was changed.")

    def _rewind(self, model: nn.Module, index: int, structure: list) -> None:
        from .pruning.groups import apply_channel_plan

        donor = self.model_at(index)
        for plan in structure[len(self.history[index].structure):]:
            apply_channel_plan(donor, self._example(), plan)
        donor_state = donor.state_dict()
        state = model.state_dict()
        for key in state:
            if key.endswith("_mask"):
                continue
            src = key if key in donor_state else key.replace("weight_orig", "weight")
            if src in donor_state and donor_state[src].shape == state[key].shape:
                state[key] = donor_state[src].clone()
        model.load_state_dict(state)

    # ------------------------------------------------------------------ retraining
    def retrain(self, epochs: int = 1, *, lr: float = 1e-3, optimizer: str = "adam",
                batch_size: int = 64, weight_decay: float = 0.0,
                callbacks: Sequence[Callback] = (), progress: bool = True,
                stop: StopSignal | None = None,
                train_fn: Callable[[nn.Module, StudyData], None] | None = None,
                seed: int | None = None) -> Step:
        """Fine-tune the current model on the training split; records a ``retrain`` step.

        Masks from unstructured pruning stay in force (pruned weights stay zero).

        Parameters
        ----------
        epochs, lr, optimizer, batch_size, weight_decay
            Training settings; ``optimizer`` is ``"adam"``, ``"adamw"`` or ``"sgd"``.
        callbacks : list of Callback
            Hooks called after each batch and epoch (live plots, custom stopping).
        progress : bool
            Show a tqdm progress bar.
        stop : StopSignal, optional
            Set it (e.g. from a button) to stop between batches; the step is recorded with
            ``stopped=True`` and the weights of the last complete batch.
        train_fn : callable, optional
            Your own training function ``train_fn(model, data)``, called instead of ours.
        seed : int, optional
            Seed of the shuffling (default: the study's seed plus the new step's index). It is
            recorded, so a recipe replays this step exactly even on another history branch.
            Under ``torchrun`` the training is data-parallel (see :mod:`xprune_nb.distributed`).
        """
        call = "Study.retrain"
        from .training import OPTIMIZERS

        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ConfigError.bad_value(call, "epochs", "a positive integer", epochs)
        if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not lr > 0:
            raise ConfigError.bad_value(call, "lr", "a positive number", lr)
        if optimizer not in OPTIMIZERS:
            raise ConfigError.unknown_name(call, "optimizer", OPTIMIZERS, optimizer)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError.bad_value(call, "batch_size", "a positive integer", batch_size)
        if seed is None:
            seed = self.seed + len(self.history)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError.bad_value(call, "seed", "an integer or None", seed)
        if train_fn is not None and not callable(train_fn):
            raise ConfigError.bad_value(call, "train_fn", "a callable(model, data)", train_fn)
        model = copy_model(self.model)
        start = time.perf_counter()
        result = TrainResult()
        if train_fn is not None:
            train_fn(model, self.data)
            model.eval()
        else:
            cbs = list(callbacks) + ([ProgressBar()] if progress else [])
            result = train(model, self.data.train, epochs=epochs, lr=lr, optimizer=optimizer,
                           batch_size=batch_size, weight_decay=weight_decay,
                           seed=seed, forward=self.forward,
                           val_split=self.data.val, callbacks=cbs, stop=stop)
            model.eval()
        check_finite(model, call)
        config = {"epochs": epochs, "lr": lr, "optimizer": optimizer, "batch_size": batch_size,
                  "weight_decay": weight_decay, "custom_train_fn": train_fn is not None,
                  "seed": seed}
        step = Step(len(self.history), "retrain", self.current, config=config,
                    structure=[dict(op) for op in self.step.structure],
                    stopped=result.stopped)
        step.note = (f"{result.epochs_done} epochs, {result.batches_done} batches"
                     + (", stopped by the user" if result.stopped else ""))
        self.model = model
        self._finish_step(step, seconds=time.perf_counter() - start)
        self._append(step)
        self.last_train_result = result
        return step

    # ------------------------------------------------------------------ history
    def _finish_step(self, step: Step, seconds: float = 0.0) -> None:
        m = evaluate_model(self.model, self.data, self.forward, latency=False)
        step.metrics = {k: v for k, v in m.as_dict().items()}
        step.per_class_accuracy = m.per_class_accuracy
        step.masked = masked_layers(self.model)
        step.seconds = seconds
        step.drift = self._drift(self.model)
        self._snapshots.put(step.index, self.model.state_dict())

    def _drift(self, model: nn.Module) -> dict:
        try:
            from .explain.drift import probe_drift
        except ImportError:
            return {}
        return probe_drift(self.original, model, self.probe_x, self.probe_y,
                           forward=self.forward)

    def _append(self, step: Step) -> None:
        self.history.append(step)
        self.history.current = step.index

    def _save_state(self):
        return (self.model, len(self.history), self.history.current, dict(self._scores))

    def _restore_state(self, saved) -> None:
        _, length, current, scores = saved
        for step in self.history[length:]:
            self._snapshots.drop(step.index)
        del self.history[length:]
        self.history.current = current
        self._graph_cache = None
        # steps prune in place: rebuild the exact model of the step we return to
        self.model = self.model_at(current)
        self._scores = scores

    def model_at(self, index: int) -> nn.Module:
        """A fresh copy of the model exactly as it was after step ``index``."""
        from .pruning.groups import apply_channel_plan

        index = self._index(index, "Study.model_at")
        step = self.history[index]
        model = copy.deepcopy(self.original)
        for plan in step.structure:
            apply_channel_plan(model, self._example(), plan)
        ensure_masks(model, step.masked)
        model.load_state_dict(self._snapshots.get(index))
        refresh_masked_weights(model)
        model.eval()
        return model

    def _index(self, index: int, call: str) -> int:
        n = len(self.history)
        if isinstance(index, bool) or not isinstance(index, int) or not -n <= index < n:
            raise ConfigError.bad_value(call, "step", f"a step index in [{-n}, {n - 1}]", index)
        return index % n

    def goto(self, index: int) -> Step:
        """Make step ``index`` current (its exact model is restored); later steps are kept, and
        a new action from here starts a branch."""
        index = self._index(index, "Study.goto")
        self.model = self.model_at(index)
        self.history.current = index
        self._graph_cache = None
        return self.history[index]

    def undo(self) -> Step:
        """Go back to the parent of the current step."""
        parent = self.step.parent
        if parent is None:
            raise ConfigError("Study.undo(): already at the original model (step 0); "
                              "nothing to undo.")
        return self.goto(parent)

    def compare(self, a: int = 0, b: int = -1):
        """Metrics of two steps side by side, with the ratio b / a."""
        import pandas as pd

        sa = self.history[self._index(a, "Study.compare")]
        sb = self.history[self._index(b, "Study.compare")]
        keys = [k for k in sa.metrics if isinstance(sa.metrics.get(k), (int, float))]
        frame = pd.DataFrame({f"step {sa.index}": [sa.metrics[k] for k in keys],
                              f"step {sb.index}": [sb.metrics.get(k) for k in keys]}, index=keys)
        frame["ratio"] = frame.iloc[:, 1] / frame.iloc[:, 0].where(frame.iloc[:, 0] != 0)
        return frame

    def evaluate(self, *, latency: bool = True, step: int | None = None) -> Metrics:
        """Measure the current model (or the model of ``step``): accuracy and loss on test and
        validation, parameters, MACs, latency at batch 1 and 64, sparsity, size."""
        model = self.model if step is None else self.model_at(self._index(step,
                                                                           "Study.evaluate"))
        return evaluate_model(model, self.data, self.forward, latency=latency)

    def scores_at(self, index: int) -> Scores | None:
        """Scores computed at step ``index``, if any."""
        return self._scores.get(self._index(index, "Study.scores_at"))

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Save the whole study (weights of every step, history, scores) to one file that
        :meth:`load` reads with ``torch.load(weights_only=True)``."""
        from ._study_io import save_study

        return save_study(self, path)

    @classmethod
    def load(cls, path: str | Path, model: nn.Module | None = None, data=None) -> Study:
        """Load a study saved with :meth:`save`. Never executes code from the file.

        ``model`` is a fresh instance of the original architecture; it is needed when the
        architecture is not a zoo model nor an importable class with a no-argument
        constructor. ``data`` is needed when the study's data was not a bundled dataset and
        was not stored in the file.
        """
        from ._study_io import load_study

        return load_study(cls, path, model=model, data=data)

    def __repr__(self) -> str:
        m = self.step.metrics
        return (f"Study(step {self.current} of {len(self.history)}, "
                f"accuracy={m.get('accuracy', float('nan')):.4f}, params={m.get('params')})")

    def _repr_html_(self) -> str:
        return (f"<b>Study</b>: step {self.current} of {len(self.history)}"
                + self.history.to_frame().to_html(float_format=lambda x: f"{x:.4g}"))


def _executed_layers(model: nn.Module, example: torch.Tensor, forward) -> set[str]:
    """Names of the Conv/Linear layers whose forward() actually runs."""
    seen: set[str] = set()
    handles = [m.register_forward_hook(lambda *a, name=name: seen.add(name))
               for name, m in prunable_layers(model).items()]
    try:
        with torch.no_grad(), eval_mode(model):
            forward(model, example)
    finally:
        for h in handles:
            h.remove()
    return seen


def _fingerprint(model: nn.Module) -> tuple:
    return tuple((k, v.shape, float(v.double().sum())) for k, v in model.state_dict().items())


def _model_source(model: nn.Module) -> dict:
    """Where the architecture comes from: a zoo name or an importable class path."""
    zoo_name = getattr(model, "_xprune_zoo_name", None)
    if zoo_name:
        return {"kind": "zoo", "name": zoo_name}
    cls = type(model)
    return {"kind": "class", "module": cls.__module__, "qualname": cls.__qualname__}
