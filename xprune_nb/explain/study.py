"""Explanations of two steps of a study: pick the models and rows, then hand over to the
explainers (``saliency``, ``shapley``), with the progress/stop protocol.

Progress is counted in forward passes of the two models, against an estimate of how many the
method needs; the stop signal is checked at each pass, so a long Shapley run stops promptly and
leaves the study untouched (explanations never change it).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..core.errors import ConfigError
from ..core.params import check_classes
from ..core.progress import StopSignal, make_progress
from ..data.batch import batch_size, is_mapping
from .rows import pick_rows

__all__ = ["saliency", "shapley", "shapley_cost", "counting_forward", "step_models"]

#: forward passes per explained row, per method (both models), for the progress estimate
_SALIENCY_PASSES = {"saliency": 2, "integrated_gradients": 2 * 50, "gradcam": 2, "lrp": 2,
                    "occlusion": 2 * 64}


def counting_forward(forward, total: int, tick):
    """``forward`` that reports each call to ``tick(done, total)`` (the estimate grows if the
    method turns out to need more passes)."""
    state = {"done": 0, "total": max(int(total), 1)}

    def counted(model, x):
        out = forward(model, x)
        state["done"] += 1
        state["total"] = max(state["total"], state["done"])
        tick(state["done"], state["total"])
        return out

    return counted


def step_models(study, before: int, after: int, call: str):
    b = study.timeline.index(before, call, "before")
    a = study.timeline.index(after, call, "after")
    # the live model, the original itself for step 0, else a rebuilt copy: explanations
    # never change a model, so a big model's weights are not copied for them
    reading = study.timeline.reading_model
    return (b, reading(b)), (a, reading(a))


def saliency(study, before: int = 0, after: int = -1, *, method: str = "saliency", inputs=None,
             labels: Sequence[int] | None = None, n: int = 8, curves: bool | str = "lazy",
             progress=False, stop: StopSignal | None = None, **method_options):
    """Saliency maps of the same inputs under two steps' models, with drift numbers.

    ``method`` is one of :data:`xprune_nb.explain.METHODS` (``saliency``,
    ``integrated_gradients``, ``gradcam``, ``lrp``, ``occlusion``, ``attention_relevance``,
    ``attention_rollout``; options go to the method); ``inputs`` are tensors or test-row
    indices (default: ``n`` test rows drawn stratified); ``labels`` the targets (default: the
    true labels, else the ``before`` model's predictions). Token models are attributed to
    tokens. ``progress``/``stop`` follow :mod:`xprune_nb.core.progress`.

    ``curves="lazy"`` (default) leaves the deletion/insertion curves (``2 x 21`` forward
    passes per input and model, more than the maps for most methods) for the first ask:
    reading ``comparison.deletion_before``, ``.to_frame()``, ``.summary()`` or
    ``.measure_curves()`` computes them then, on the two steps' models rebuilt from the
    study's record (so later prunes do not change them); displays say "not measured yet"
    until then. ``curves=True`` computes them now. Token models compute them now either way.

    Returns a :class:`~xprune_nb.explain.SaliencyComparison` (``.to_frame()``, ``.plot()``).

    Examples
    --------
    >>> import xprune_nb as xp
    >>> study = xp.Study(xp.zoo.load("digits_cnn"), xp.datasets.load("digits"))
    >>> study.saliency(0, 0, n=4).summary()["saliency_rank_correlation"]
    1.0
    """
    from . import compare_saliency
    from .saliency import check_curves, saliency_curves

    call = "Study.saliency"
    check_curves(curves, call)
    tick = make_progress(progress, call, f"saliency {method}", stop)
    (b, model_b), (a, model_a) = step_models(study, before, after, call)
    x, y = pick_rows(study.data, inputs, n, "test", seed=study.seed, call=call)
    if labels is not None and not isinstance(labels, str) and any(
            isinstance(c, str) for c in labels):   # class names, as everywhere else
        labels = check_classes(call, list(labels), study.data.num_classes,
                               study.data.class_names, param="labels")
    if labels is not None:
        try:
            y = torch.as_tensor(list(labels))
        except (TypeError, ValueError) as exc:
            raise ConfigError.bad_value(call, "labels", f"{batch_size(x)} class indices",
                                        labels) from exc
        num_classes = study.data.num_classes
        if (len(y) != batch_size(x) or y.is_floating_point() or y.dtype == torch.bool
                or (len(y) and (y.min() < 0 or y.max() >= num_classes))):
            raise ConfigError.bad_value(call, "labels", f"{batch_size(x)} class indices in "
                                        f"[0, {num_classes})", list(labels))
        y = y.long()
    forward = study.forward
    if tick is not None:
        forward = counting_forward(forward, batch_size(x) * _SALIENCY_PASSES.get(method, 2),
                                   tick)
    comparison = compare_saliency(model_b, model_a, x, labels=y, method=method, forward=forward,
                                  class_names=study.data.class_names,
                                  feature_names=study.data.feature_names, steps=(b, a),
                                  curves=curves, **method_options)
    if comparison.curves_pending:
        del model_b, model_a      # not held by the comparison: rebuilt at the first ask

        def later() -> tuple:
            # the steps' models from the record, with the study's plain forward (the
            # progress callback and stop signal of this call are over by then)
            (_, mb), (_, ma) = step_models(study, b, a, call)
            return saliency_curves(mb, ma, comparison.inputs, comparison.before,
                                   comparison.after, comparison.targets, study.forward)

        comparison.defer_curves(later)
    return comparison


#: above this many features, Shapley defaults get cheaper (fewer permutations, background rows)
MANY_FEATURES = 20
#: an estimate above this many seconds is announced before the run starts
ANNOUNCE_SECONDS = 10.0


def shapley_cost(study, *, features: int, rows: int, background_rows: int,
                 explainer: str = "auto", permutations: int = 16) -> dict:
    """Estimated cost of a Shapley comparison of two models: model evaluations per row, rows
    pushed through a model, and seconds (from one timed forward pass on this machine).

    Examples
    --------
    >>> import xprune_nb as xp
    >>> study = xp.Study(xp.zoo.load("toy_mlp"), xp.datasets.load("moons"))
    >>> cost = shapley_cost(study, features=2, rows=10, background_rows=20)
    >>> cost["explainer"], cost["evaluations_per_row"]
    ('exact', 4)
    """
    import time

    if explainer == "auto":
        explainer = "exact" if features <= 12 else "permutation"
    per_row = {"exact": 2 ** features, "permutation": permutations * (2 * features + 1),
               "kernel": 2 * features + 2048}.get(explainer, 2)
    forwards = 2 * rows * per_row * (background_rows if explainer != "gradient" else 1)
    x = study.data.train.X[: max(1, min(512, len(study.data.train)))]
    with torch.no_grad():
        model = study.model.eval()
        start = time.perf_counter()
        study.forward(model, x)
        per_forward_row = (time.perf_counter() - start) / len(x)
    return {"explainer": explainer, "evaluations_per_row": per_row, "row_forwards": forwards,
            "seconds": forwards * per_forward_row}


def shapley(study, before: int = 0, after: int = -1, *, explainer: str = "auto", inputs=None,
            background=None, n: int = 20, background_size: int | None = None,
            permutations: int | None = None, output: str = "logits",
            classes: str | Sequence[int | str] = "auto", nsamples: int | str = "auto",
            progress=False, stop: StopSignal | None = None):
    """Shapley values (shap) of the same rows under two steps' models, side by side.

    ``explainer`` is ``auto``, ``exact``, ``permutation``, ``kernel``, ``gradient`` or
    ``deep``; ``inputs``/``background`` are tensors or row indices (default: ``n`` test rows
    and ``background_size`` training rows, stratified). A run whose estimated cost
    (:func:`shapley_cost`) passes about ten seconds is announced first; above 20 features the
    defaults get cheaper (8 permutations, 25 background rows).

    ``classes`` are the outputs explained, the same for both models: ``"all"``,
    ``"predicted"`` (the classes the ``before`` model predicts on the rows), a list of class
    indices or names, or ``"auto"`` (all for tabular rows, the predicted ones for images: shap's
    gradient explainer pays its samples per row **per class**). ``nsamples`` is shap's sample
    budget for the ``gradient`` explainer (per row and class; ``"auto"``: shap's 200 up to 4096
    input values per row, 32 above, e.g. 224-px images) and the ``kernel`` explainer.

    Returns a :class:`~xprune_nb.explain.ShapleyComparison` whose ``before``/``after`` are
    ``shap.Explanation`` objects.

    Examples
    --------
    >>> import xprune_nb as xp
    >>> study = xp.Study(xp.zoo.load("toy_mlp"), xp.datasets.load("moons"))
    >>> round(study.shapley(0, 0, n=5).rank_correlation, 6)
    1.0
    """
    import warnings

    from . import compare_shapley
    from .shapley_options import check_classes_choice, check_nsamples

    call = "Study.shapley"
    check_nsamples(nsamples, call)
    if not isinstance(classes, str):
        # class names, as everywhere else; then indices checked against the model's classes
        classes = check_classes(call, classes, study.data.num_classes, study.data.class_names)
    check_classes_choice(classes, study.data.num_classes, call)
    X = study.data.train.X
    # token inputs (a dict of input_ids, attention_mask...): one feature per token position
    features = int(X["input_ids"][0].numel() if is_mapping(X) and "input_ids" in X
                   else X[0].numel())
    many = features > MANY_FEATURES
    # cheaper defaults for wide inputs: the cost grows with features x permutations x rows
    background_size = (25 if many else 50) if background_size is None else background_size
    permutations = (8 if many else 16) if permutations is None else permutations
    (b, model_b), (a, model_a) = step_models(study, before, after, call)
    x, _ = pick_rows(study.data, inputs, n, "test", seed=study.seed, call=call)
    bg, _ = pick_rows(study.data, background, background_size, "train", seed=study.seed,
                      call=call, param="background")
    cost = None
    if isinstance(x, torch.Tensor) and x.is_floating_point() and x.dim() == 2:
        cost = shapley_cost(study, features=features, rows=len(x), background_rows=len(bg),
                            explainer=explainer, permutations=permutations)
        if cost["seconds"] > ANNOUNCE_SECONDS:
            warnings.warn(f"{call}: about {cost['row_forwards']:,} rows through the models "
                          f"({cost['explainer']}, {features} features), roughly "
                          f"{cost['seconds']:.0f} s here; pass fewer rows (n=), a smaller "
                          "background_size= or fewer permutations= for a quicker answer.",
                          stacklevel=3)
    tick = make_progress(progress, call, f"shapley {explainer}", stop)
    forward = study.forward
    if tick is not None:
        # progress in forward calls: shap evaluates coalitions in batches of rows
        calls = (cost["row_forwards"] // 512 + 2) if cost else 2 * batch_size(x)
        forward = counting_forward(forward, calls, tick)
    return compare_shapley(model_b, model_a, x, bg, explainer=explainer, output=output,
                           forward=forward, feature_names=study.data.feature_names,
                           class_names=study.data.class_names, seed=study.seed, steps=(b, a),
                           permutations=permutations, nsamples=nsamples, classes=classes)
