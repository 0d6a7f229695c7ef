"""Study methods that explain: saliency and Shapley comparisons, why-removed, drift.

They pick the models of two history steps and the inputs, then hand over to
:mod:`xprune_nb.explain`, which does the work (captum, shap and zennit are imported there,
lazily).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ._data import stratified_indices
from .errors import ConfigError


class ExplainMixin:
    """Explanation methods of :class:`~xprune_nb.study.Study`."""

    def _model_of(self, index: int, call: str):
        index = self._index(index, call)
        return index, (self.model if index == self.current else self.model_at(index))

    def _rows(self, inputs, n: int, split: str, call: str, param: str = "inputs"):
        """Rows to explain: given tensors/arrays, indices into the split, or ``n`` rows drawn
        stratified from the split (deterministic under the study's seed)."""
        data = self.data.split(split)
        if inputs is None:
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise ConfigError.bad_value(call, "n", "a positive integer", n)
            idx = stratified_indices(data.y, min(n, len(data)), seed=self.seed, call=call)
            return data.X[idx], data.y[idx]
        if isinstance(inputs, (list, tuple, range)) and all(
                isinstance(i, int) and not isinstance(i, bool) for i in inputs):
            idx = torch.tensor(list(inputs), dtype=torch.long)
            if len(idx) == 0 or idx.min() < 0 or idx.max() >= len(data):
                raise ConfigError.bad_value(call, param,
                                            f"row indices of the {split} split in "
                                            f"[0, {len(data)})", list(inputs))
            return data.X[idx], data.y[idx]
        x = torch.as_tensor(inputs, dtype=torch.float32)
        if x.shape[1:] != data.X.shape[1:]:
            if x.shape == data.X.shape[1:]:
                x = x.unsqueeze(0)
            else:
                raise ConfigError.bad_value(
                    call, param, f"inputs of shape (N, {', '.join(map(str, data.X.shape[1:]))})",
                    tuple(x.shape))
        return x, None

    def saliency(self, before: int = 0, after: int = -1, *, method: str = "saliency",
                 inputs=None, labels: Sequence[int] | None = None, n: int = 8,
                 **method_options):
        """Saliency maps of the same inputs under two steps' models, side by side.

        Parameters
        ----------
        before, after : int
            History steps to compare (default: the original and the current step).
        method : str
            ``saliency``, ``integrated_gradients``, ``gradcam``, ``lrp`` or ``occlusion``
            (captum; LRP through zennit). Options go to the method (captum's defaults).
        inputs : tensor, array or list of test-row indices, optional
            Default: ``n`` test rows drawn stratified by class.
        labels : list of int, optional
            Targets for given inputs; by default the true labels of test rows, else the
            ``before`` model's predictions; the same targets for both models.

        Returns
        -------
        SaliencyComparison
            ``.before``, ``.after``, drift numbers (rank correlation, top-k IoU, prediction
            agreement, deletion/insertion AUC), ``.to_frame()``, ``.plot()``.

        Examples
        --------
        >>> comparison = study.saliency(0, -1, method="integrated_gradients")  # doctest: +SKIP
        >>> comparison.plot()                                                     # doctest: +SKIP
        """
        from .explain import compare_saliency

        call = "Study.saliency"
        b, model_b = self._model_of(before, call)
        a, model_a = self._model_of(after, call)
        x, y = self._rows(inputs, n, "test", call)
        if labels is not None:
            y = torch.as_tensor(list(labels), dtype=torch.long)
            if len(y) != len(x):
                raise ConfigError.bad_value(call, "labels", f"{len(x)} class indices", labels)
        return compare_saliency(model_b, model_a, x, labels=y, method=method,
                                forward=self.forward, class_names=self.data.class_names,
                                steps=(b, a), **method_options)

    def shapley(self, before: int = 0, after: int = -1, *, explainer: str = "auto",
                inputs=None, background=None, n: int = 20, background_size: int = 50,
                output: str = "logits"):
        """Shapley values (shap) of the same rows under two steps' models, side by side.

        Parameters
        ----------
        explainer : str
            ``auto``, ``exact``, ``permutation``, ``kernel``, ``gradient`` or ``deep``.
        inputs : optional
            Rows to explain (tensor/array or test-row indices); default ``n`` test rows.
        background : optional
            Reference rows (tensor/array or training-row indices); default
            ``background_size`` training rows drawn stratified by class. With a background,
            values are interventional Shapley values.
        output : {"logits", "probability"}

        Returns
        -------
        ShapleyComparison
            ``.before``/``.after`` are ``shap.Explanation`` objects (pass them to
            ``shap.plots.*``), plus global importance before/after, rank correlation, features
            whose rank moved most and the efficiency check.
        """
        from .explain import compare_shapley

        call = "Study.shapley"
        b, model_b = self._model_of(before, call)
        a, model_a = self._model_of(after, call)
        x, _ = self._rows(inputs, n, "test", call)
        bg, _ = self._rows(background, background_size, "train", call, param="background")
        return compare_shapley(model_b, model_a, x, bg, explainer=explainer, output=output,
                               forward=self.forward, feature_names=self.data.feature_names,
                               class_names=self.data.class_names, seed=self.seed,
                               steps=(b, a))

    def why(self, step: int | str = -1, unit: int | None = None):
        """Why units were removed.

        ``study.why(step)`` — for a prune step: every removed unit with its score, rank and
        percentile under the criterion, its relevance per class (class-aware criteria) and the
        accuracy per class before and after. ``study.why(layer, unit)`` — one unit's scores
        under every criterion computed so far on the current model.
        """
        from .explain import why_removed, why_unit

        call = "Study.why"
        if isinstance(step, str):
            if unit is None or isinstance(unit, bool) or not isinstance(unit, int):
                raise ConfigError.bad_value(call, "unit", "a unit index (with a layer name)",
                                            unit)
            by_criterion = {}
            for s in self._scores_on_path():
                if step in s.values:
                    by_criterion[s.criterion] = s
            if not by_criterion:
                valid = sorted({k for s in self._scores.values() for k in s.values})
                raise ConfigError.unknown_name(call, "layer", valid, step)
            return why_unit(step, unit, by_criterion)
        index = self._index(step, call)
        record = self.history[index]
        if record.kind != "prune":
            prunes = [s.index for s in self.history if s.kind == "prune"]
            raise ConfigError.bad_value(call, "step", f"a prune step (one of {prunes})", step)
        scores = self._scores.get(record.parent)
        if scores is None:
            raise ConfigError(f"{call}: the scores behind step {index} are not available.")
        parent = self.history[record.parent]
        return why_removed(scores, record.removed, per_class=scores.per_class,
                           acc_before=parent.per_class_accuracy,
                           acc_after=record.per_class_accuracy,
                           class_names=self.data.class_names)

    def _scores_on_path(self):
        """Every score computed on the current model (one per criterion and granularity)."""
        found = list(getattr(self, "_all_scores", {}).get(self.current, {}).values())
        latest = self._scores.get(self.current)
        if latest is not None and all(s is not latest for s in found):
            found.append(latest)
        return found

    def drift(self):
        """Accuracy and explanation similarity to the original along the history.

        Every step records, on a fixed probe set of test examples chosen when the study starts,
        the rank correlation and top-k overlap of its gradient saliency maps with the original
        model's, and its accuracy per class. Returns a :class:`DriftTable`
        (``.to_frame()``, ``.plot()``).
        """
        base = self.history[0].metrics
        rows = []
        for s in self.history:
            row = {"step": s.index, "action": s.label, "parent": s.parent,
                   "fraction_pruned": 1 - s.metrics["nonzero_params"] / base["nonzero_params"],
                   "accuracy": s.metrics["accuracy"]}
            row.update({k: v for k, v in s.drift.items()
                        if k in ("saliency_spearman", "saliency_topk_iou", "agreement")})
            for name, acc in zip(self.data.class_names, s.per_class_accuracy, strict=False):
                row[f"accuracy[{name}]"] = acc
            rows.append(row)
        return DriftTable(rows)


class DriftTable:
    """Accuracy and saliency similarity to the original, one row per history step."""

    def __init__(self, rows: list[dict]) -> None:
        self.rows = rows

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame(self.rows).set_index("step")

    def plot(self, ax=None):
        """Accuracy and explanation similarity against the fraction of weights pruned."""
        from .explain.plots import plot_drift

        return plot_drift(self.to_frame(), ax=ax)

    def _repr_html_(self) -> str:
        return "<b>Drift along the history</b>" + self.to_frame().to_html(
            float_format=lambda x: f"{x:.4g}")
