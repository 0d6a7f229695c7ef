"""Compare pruning techniques on one model at the same budget and the same retraining.

Each technique runs on a fresh :class:`~xprune_nb.Study` of the same model and data, reaches the
same budget, is fine-tuned for the same number of epochs and is measured the same way: accuracy,
size, MACs, eager and onnxruntime latency, explanation drift (saliency rank correlation on the
study's probe, change of Shapley feature importances), time to prune, the worst per-class
accuracy drop, and accuracy on a noisy copy of the test split. A technique this build does not
have yet gets a row of NaN with a note saying why, so the table's shape never changes.

The budget is the fraction of the original MACs to keep, except for weight masks, where it is
the fraction of non-zero weights to keep: dense kernels multiply masked zeros too, so masks
cannot reduce MACs, and the table shows that honestly.

Examples
--------
>>> import xprune_nb as xp
>>> frame = compare_techniques(xp.zoo.load("toy_mlp"), xp.datasets.load("moons"),
...                            techniques=["magnitude_weights", "taylor_channels"],
...                            retrain_epochs=0, onnx=False, shapley_rows=0)
>>> frame["technique"].tolist()
['original', 'magnitude_weights', 'taylor_channels']
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from numbers import Integral, Real
from pathlib import Path

import torch
from torch import nn

from ..core.errors import ConfigError, MissingDependencyError, ModelError, PruneError
from ..core.params import Interval, check

__all__ = ["compare_techniques", "pareto_plot", "TECHNIQUES", "COLUMNS", "format_table",
           "static_at_macs"]

#: The techniques, in the mission's order, with what each one is.
TECHNIQUES = {
    "magnitude_weights": "weight masks, smallest magnitudes (unstructured)",
    "taylor_channels": "channels removed for real, first-order Taylor importance (structured)",
    "lrp_channels": "channels removed for real, LRP relevance (explainability-aware)",
    "blocks": "whole residual blocks / transformer layers removed",
    "dynamic": "input-dependent channel paths with early exit (DyFiP-style)",
    "auto_prune": "per-layer amounts from sensitivity, greedy by damage per MAC saved",
}

#: The columns of the returned table, in order.
COLUMNS = ["technique", "accuracy", "params", "nonzero_params", "macs", "macs_fraction",
           "latency_b1_ms", "latency_b64_ms", "onnx_b1_ms", "onnx_b64_ms",
           "saliency_rank_correlation", "shapley_change", "seconds", "worst_class_drop",
           "noisy_accuracy", "note"]


def _prune_to_macs(study, criterion: str, granularity: str, budget: float) -> str:
    """Score, then prune the global amount whose MACs come closest to ``budget`` of now (found
    by bisection on previews); returns a note when the budget can't be reached exactly."""
    call = "compare_techniques"
    study.score(criterion, granularity)
    m0 = study.step.metrics["macs"]
    target = budget * m0
    lo, hi, best = 0.0, 0.99, None
    for _ in range(14):
        mid = (lo + hi) / 2
        try:
            after = study.preview(mid).macs[1]
        except PruneError:       # removes nothing, or would empty a group
            after = m0 if mid < 0.5 else 0
        if after > target:
            lo = mid
        else:
            hi = mid
        if after and (best is None or abs(after - target) < abs(best[1] - target)):
            best = (mid, after)
    if best is None or best[1] >= m0:
        raise PruneError(f"{call}: no {granularity} of this model can be removed.")
    study.prune(best[0])
    reached = study.step.metrics["macs"] / m0
    return "" if abs(reached - budget) <= 0.02 else f"reached {reached:.3f} of the MACs"


def _run(study, technique: str, budget: float) -> str:
    """Apply one technique to a fresh study; returns a note ('' when nothing to say)."""
    from ..pruning import units

    if technique == "magnitude_weights":
        study.score("magnitude", "weight")
        study.prune(1.0 - budget)
        return "masks: MACs and latency stay dense"
    if technique == "taylor_channels":
        return _prune_to_macs(study, "taylor", "channel", budget)
    if technique == "lrp_channels":
        return _prune_to_macs(study, "lrp", "channel", budget)
    if technique == "blocks":
        if "block" not in units.available():
            raise _Unavailable("granularity='block' is not in this build yet")
        from .. import criteria

        for name in ("taylor", "magnitude", *criteria.available()):
            cls = criteria.get(name, "compare_techniques")
            if "block" in cls.granularities or units.get("block", "").score_as in \
                    cls.granularities:
                return _prune_to_macs(study, name, "block", budget)
        raise _Unavailable("no criterion scores blocks")
    if technique == "dynamic":
        if not hasattr(type(study), "dynamic"):
            raise _Unavailable("Study.dynamic is not in this build yet")
        # k: the branch's class subset, at most the defaults' 3 and fewer than the classes
        study.dynamic(keep=budget, k=min(3, study.data.num_classes - 1))
        return ("macs: mean per example; its paths are fine-tuned when built (no extra "
                "retraining); onnx n/a: a dynamic model picks its path per input, so it has "
                "no single graph")
    if technique == "auto_prune":
        from ..pruning.auto import auto_prune

        step = auto_prune(study, macs=budget, steps=5)
        return "" if step.auto.met else step.auto.message
    raise ConfigError.unknown_name("compare_techniques", "techniques", TECHNIQUES, technique)


class _Unavailable(Exception):
    """The technique does not exist in this build."""


def _median_ms(fn: Callable[[], object], repeats: int = 10, rounds: int = 5) -> float:
    """Milliseconds per call: the smallest of ``rounds`` medians of ``repeats`` calls. On a
    shared machine other processes only ever add time, so the least disturbed round is the
    best estimate."""
    fn()
    medians = []
    for _ in range(rounds):
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        medians.append(statistics.median(times))
    return 1000.0 * min(medians)


def _batch(x: torch.Tensor, n: int) -> torch.Tensor:
    return x[:n] if len(x) >= n else x.repeat(n // len(x) + 1, *[1] * (x.dim() - 1))[:n]


def _eager_latency(study) -> tuple[float, float]:
    from ..models.mechanisms.model_tools import eval_mode

    model, x = study.model, study.data.train.X

    def run(batch):
        def call():
            with torch.inference_mode(), eval_mode(model):
                study.forward(model, batch)
        return call

    return _median_ms(run(_batch(x, 1))), _median_ms(run(_batch(x, 64)))


def _onnx_latency(study) -> tuple[float, float, str]:
    try:
        from ..export.onnx import export_onnx, onnx_session, run_onnx
    except ImportError as exc:
        return math.nan, math.nan, f"onnx n/a: {exc}"
    x = study.data.train.X
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = export_onnx(study.model, x[:2], Path(tmp) / "m.onnx",
                               output_fn=study.output_fn)
            session = onnx_session(path)
            b64 = _batch(x, 64)
            return (_median_ms(lambda: run_onnx(session, x[:1])),
                    _median_ms(lambda: run_onnx(session, b64)), "")
    except (MissingDependencyError, ModelError) as exc:
        return math.nan, math.nan, f"onnx n/a: {str(exc)[:160]}"


def _noisy_accuracy(study, noise: float, seed: int) -> float:
    from ..measure.training import evaluate_split

    X, y = study.data.test.X, study.data.test.y
    if not X.is_floating_point():
        return math.nan          # token ids: Gaussian noise has no meaning
    gen = torch.Generator().manual_seed(seed)
    noisy = X + noise * float(X.std()) * torch.randn(X.shape, generator=gen)
    from ..data import Split

    return evaluate_split(study.model, Split(noisy, y), study.forward)[0]


def _measure(study, technique: str, seconds: float, *, onnx: bool, shapley_rows: int,
             noise: float, seed: int) -> dict:
    m = study.evaluate(latency=False)
    b1, b64 = _eager_latency(study)
    first = study.history[0]
    drops = [a - b for a, b in zip(first.per_class_accuracy, m.per_class_accuracy)
             if math.isfinite(a) and math.isfinite(b)]
    row = {"technique": technique, "accuracy": m.accuracy, "params": m.params,
           "nonzero_params": m.nonzero_params, "macs": m.macs,
           "macs_fraction": m.macs / first.metrics["macs"],
           "latency_b1_ms": b1, "latency_b64_ms": b64,
           "onnx_b1_ms": math.nan, "onnx_b64_ms": math.nan,
           "saliency_rank_correlation": study.step.drift.get("saliency_spearman", math.nan),
           "shapley_change": math.nan, "seconds": seconds,
           "worst_class_drop": max(drops) if drops else math.nan,
           "noisy_accuracy": _noisy_accuracy(study, noise, seed), "note": ""}
    notes = []
    if onnx:
        row["onnx_b1_ms"], row["onnx_b64_ms"], why = _onnx_latency(study)
        notes.append(why)
    if shapley_rows and study.current != 0:
        try:
            result = study.shapley(0, study.current, n=shapley_rows, background_size=20)
            row["shapley_change"] = 1.0 - result.rank_correlation
        except Exception as exc:  # noqa: BLE001 - one missing column must not lose the row
            notes.append(f"shapley n/a: {str(exc)[:120]}")
    elif shapley_rows:
        row["shapley_change"] = 0.0
    row["note"] = "; ".join(n for n in notes if n)
    return row


def compare_techniques(model, data, budget: float = 0.5,
                       techniques: Sequence[str] | None = None, *, retrain_epochs: int = 1,
                       seed: int = 0, onnx: bool = True, shapley_rows: int = 10,
                       noise: float = 0.3, progress=False, stop=None):
    """One row per pruning technique, each on a fresh study at the same budget and retraining.

    Parameters
    ----------
    model : nn.Module
        The trained model (never changed: every study copies it).
    data : DataBundle or anything ``Study`` accepts as ``data``
    budget : float in (0, 1)
        Fraction of the original MACs to keep (of non-zero weights for weight masks).
    techniques : list of str, optional
        Names from :data:`TECHNIQUES` (default: all, in that order).
    retrain_epochs : int
        Epochs of fine-tuning after every technique (0: none).
    seed : int
        Study seed (reference sampling, recalibration, retraining, the noisy copy).
    onnx : bool
        Measure onnxruntime latency (needs the ``deploy`` extra; NaN with a note otherwise).
    shapley_rows : int
        Test rows for the Shapley comparison (0 skips it; needs ``shap``).
    noise : float
        Gaussian noise added to the test inputs, in units of their standard deviation.
    progress : bool or callable
        ``progress(done, total)`` after each technique (``True``: a bar).
    stop : StopSignal, optional
        Ends the comparison after the technique in progress (``StoppedError``).

    Returns
    -------
    pandas.DataFrame
        The :data:`COLUMNS`; the first row is the unpruned original. ``seconds`` is the time
        to prune (scoring, pruning and retraining). Unavailable techniques have NaN values and
        the reason in ``note``.
    """
    import pandas as pd

    from ..core.progress import make_progress
    from ..study import Study

    call = "compare_techniques"
    check(call, "budget", budget)
    check(call, "retrain_epochs", retrain_epochs, Interval(Integral, 0, None))
    check(call, "shapley_rows", shapley_rows, Interval(Integral, 0, None))
    check(call, "noise", noise, Interval(Real, 0, None))
    check(call, "seed", seed)
    if not isinstance(onnx, bool):
        raise ConfigError.bad_value(call, "onnx", "True or False", onnx)
    names = list(TECHNIQUES) if techniques is None else techniques
    if isinstance(names, str) or not isinstance(names, (list, tuple)) or not names:
        raise ConfigError.bad_value(call, "techniques", f"a list of names from "
                                    f"{list(TECHNIQUES)}", techniques)
    for name in names:
        if name not in TECHNIQUES:
            raise ConfigError.unknown_name(call, "techniques", TECHNIQUES, name)
    tick = make_progress(progress, call, "compare techniques", stop)
    base = Study(model, data, seed=seed)
    rows = [_measure(base, "original", 0.0, onnx=onnx, shapley_rows=shapley_rows,
                     noise=noise, seed=seed)]
    if tick is not None:   # the original's row is measured: the first place to stop
        tick(0, len(names))
    for i, name in enumerate(names):
        study = Study(model, data, seed=seed)
        start = time.perf_counter()
        try:
            # one transaction: a technique that fails half-way leaves no half-pruned study
            with study.timeline.transaction(call):
                note = _run(study, name, budget)
                if retrain_epochs and name != "dynamic":
                    study.retrain(epochs=retrain_epochs, progress=False)
        except (_Unavailable, PruneError, ModelError, ConfigError) as exc:
            # the technique does not exist here, or refuses this model: a row saying why
            rows.append({c: math.nan for c in COLUMNS} | {"technique": name,
                                                          "note": f"n/a: {exc}"})
        else:
            row = _measure(study, name, time.perf_counter() - start, onnx=onnx and
                           name != "dynamic", shapley_rows=shapley_rows, noise=noise,
                           seed=seed)
            row["note"] = "; ".join(n for n in (note, row["note"]) if n)
            rows.append(row)
        if tick is not None:
            tick(i + 1, len(names))
    return pd.DataFrame(rows, columns=COLUMNS)


def format_table(frame):
    """The table for reading: numbers rounded, missing values shown as ``n/a``."""
    return frame.to_string(index=False, na_rep="n/a", float_format=lambda x: f"{x:.3g}")


def pareto_plot(frame, ax=None, *, x: str = "macs", y: str = "accuracy"):
    """Accuracy against MACs, one point per technique, with the Pareto front (fewer MACs and
    higher accuracy are better). Returns the matplotlib figure."""
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 4))
    else:
        fig = ax.figure
    data = frame.dropna(subset=[x, y])
    ax.scatter(data[x], data[y], color="tab:blue", zorder=3)
    for _, r in data.iterrows():
        ax.annotate(r["technique"], (r[x], r[y]), fontsize=8, xytext=(4, 3),
                    textcoords="offset points")
    front, best = [], -math.inf
    for _, r in data.sort_values([x, y], ascending=[True, False]).iterrows():
        if r[y] > best:
            front.append((r[x], r[y]))
            best = r[y]
    if front:
        ax.step(*zip(*front), where="post", color="tab:orange", lw=1.5, label="Pareto front")
        ax.legend(fontsize=8)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title("Accuracy vs. MACs per technique")
    fig.tight_layout()
    return fig


def static_at_macs(model: nn.Module, target_macs: float, *, train, test, val=None,
                   criterion: str = "taylor", seed: int = 0, tries: int = 8,
                   samples: int = 100, repeats: int = 3, latency: bool = True,
                   clock: str = "wall", retrain: int = 0) -> dict:
    """Static channel pruning with (about) ``target_macs`` MACs, for a comparison row.

    Bisects the pruning amount of ``xp.Study(model, train=, val=, test=).score(criterion);
    .prune(amount)`` (global scope, channel granularity, no retraining) until the pruned
    model's MACs are within 2% of the target, then measures it on ``test`` like
    :func:`~xprune_nb.pruning.dynamic.eval.dense_metrics`. ``train``/``val``/``test`` are
    ``(X, y)`` pairs. Returns a dict with ``technique="static"``, ``amount`` and the metrics.
    """
    from ..pruning.dynamic.eval import dense_metrics
    from ..study import Study

    study = Study(model, train=train, val=val if val is not None else test, test=test,
                  seed=seed)
    study.score(criterion, granularity="channel")
    lo, hi, best = 0.0, 0.95, None
    for _ in range(tries):
        amount = (lo + hi) / 2
        study.prune(amount)
        macs = study.evaluate(latency=False).macs
        study.undo()
        if best is None or abs(macs - target_macs) < abs(best[1] - target_macs):
            best = (amount, macs)
        if abs(macs - target_macs) <= 0.02 * target_macs:
            break
        lo, hi = (amount, hi) if macs > target_macs else (lo, amount)
    study.prune(best[0])
    if retrain:
        study.retrain(epochs=retrain, progress=False)
    m = dense_metrics(study.model, test[0], test[1], study.forward, latency=latency,
                      samples=samples, repeats=repeats, clock=clock)
    return {"technique": "static", "amount": best[0], "criterion": criterion,
            "retrain": retrain, **m}
