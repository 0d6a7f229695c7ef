"""The trade-offs of dynamic pruning: sweep confidence x k x keep, compare with static pruning.

The branch is trained once per sweep (it depends only on the branch point, epochs and seed);
the sliced paths are built once per (k, keep); the confidence only changes routing, so each
threshold is a change of one attribute, not a rebuild.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from ...models.mechanisms.model_tools import eval_mode, logits_of, prunable_layers
from .build import DEFAULTS, build_dynamic
from .eval import dense_metrics, dynamic_metrics

__all__ = ["per_class_scores", "sweep", "plot_sweep"]


def per_class_scores(model: nn.Module, X: torch.Tensor, y: torch.Tensor, *,
                     criterion: str = "lrp", samples: int = 200, seed: int = 0,
                     forward: Callable | None = None) -> dict[str, torch.Tensor]:
    """(classes, channels) relevance per Conv/Linear layer from a class-aware criterion, on
    ``samples`` examples drawn stratified by class (the same numbers ``Scores.per_class``
    holds, keyed by layer instead of group).

    Examples
    --------
    >>> import torch
    >>> from xprune_nb import zoo, datasets
    >>> data = datasets.load("digits")
    >>> s = per_class_scores(zoo.load("digits_cnn"), data.train.X, data.train.y, samples=50)
    >>> s["conv2"].shape
    torch.Size([10, 32])
    """
    from ...criteria import ScoringContext, create
    from ...data import stratified_indices
    from ...data.batch import take
    from ...models.mechanisms.model_tools import call_model

    forward = forward or (lambda m, x: logits_of(call_model(m, x)))
    num_classes = int(y.max()) + 1
    idx = stratified_indices(y, min(samples, len(y)), seed=seed, call="per_class_scores")
    scorer = create(criterion)
    ctx = ScoringContext(model, "channel", prunable_layers(model), take(X, idx), y[idx], None,
                         num_classes, forward, seed=seed)
    with eval_mode(model):
        scores = scorer.per_class_channel_scores(ctx)
    if not scores:
        from ...core.errors import ConfigError

        raise ConfigError.bad_value("per_class_scores", "criterion", "a class-aware criterion "
                                    "(e.g. 'lrp')", criterion)
    return {k: v.detach().float() for k, v in scores.items()}


def sweep(model: nn.Module, *, train_X: torch.Tensor, train_y: torch.Tensor,
          X: torch.Tensor, y: torch.Tensor, per_class_scores: dict[str, torch.Tensor],
          confidence: Sequence[float] = (0.8, 0.9, 0.95, 1.0), k: Sequence[int] = (2, 3),
          keep: Sequence[float] = (0.25, 0.5, 0.75), at: str | None = DEFAULTS["at"],
          epochs: int = DEFAULTS["epochs"], seed: int = 0,
          max_paths: int = DEFAULTS["max_paths"], forward: Callable | None = None,
          latency: bool = True, samples: int = 50, repeats: int = 3, clock: str = "wall",
          finetune: int = DEFAULTS["finetune"]):
    """Accuracy, mean and longest-path MACs, early exits and batch-1 latency over a grid.

    Returns a pandas DataFrame: one row per (k, keep, confidence) with ``technique`` =
    ``"dynamic"``, plus a ``"dense"`` reference row; columns ``k``, ``keep``, ``confidence``,
    ``accuracy``, ``macs_mean``, ``macs_longest``, ``exit_share``, ``paths`` and, with
    ``latency=True``, ``latency_b1_mean_ms`` / ``_p50_ms`` / ``_p95_ms`` / ``_max_ms`` (on
    ``clock``: ``"wall"`` or ``"cpu"``, as in ``dynamic_metrics``).

    Examples
    --------
    >>> # frame = sweep(model, train_X=..., train_y=..., X=test_X, y=test_y,
    >>> #               per_class_scores=scores, confidence=(0.9, 1.0), k=(2,), keep=(0.5,))
    >>> # plot_sweep(frame)
    """
    import pandas as pd

    common = dict(train_X=train_X, train_y=train_y, per_class_scores=per_class_scores,
                  forward=forward, epochs=epochs, seed=seed, max_paths=max_paths,
                  finetune=finetune, call="sweep")
    timing = dict(latency=latency, samples=samples, repeats=repeats, clock=clock)
    dense = dense_metrics(model, X, y, forward, **timing)
    rows = [{"technique": "dense", **dense}]
    branch_state = None
    for kk in k:
        for kp in keep:
            net = build_dynamic(model, k=kk, keep=kp, confidence=1.0, at=at,
                                branch_state=branch_state, **common)
            if branch_state is None:  # train once, reuse for every other (k, keep)
                branch_state, at = net.branch.state_dict(), net.plan["at"]
            for c in confidence:
                net.confidence = float(c)
                m = dynamic_metrics(net, X, y, forward, **timing)
                rows.append({"technique": "dynamic", "at": at, "k": kk, "keep": kp,
                             "confidence": float(c), **m})
    return pd.DataFrame(rows).drop(columns=["path_share"])


def plot_sweep(frame, *, x: str = "macs_mean", y: str = "accuracy", ax=None):
    """Accuracy against mean MACs (or any two columns): one marker per k, colour by keep,
    the dense model as a star and static pruning rows (``technique == "static"``) as squares.

    Returns (fig, ax).
    """
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 4))
    else:
        fig = ax.figure
    dyn = frame[frame["technique"] == "dynamic"]
    markers = "o^Dv<>ph"  # squares mark the static rows
    cmap = plt.get_cmap("viridis")
    keeps = sorted(dyn["keep"].unique()) if len(dyn) else []
    for i, (kk, part) in enumerate(dyn.groupby("k")):
        for j, kp in enumerate(keeps):
            sel = part[part["keep"] == kp].sort_values("confidence")
            if len(sel):
                ax.plot(sel[x], sel[y], marker=markers[i % len(markers)], ls="-", alpha=0.8,
                        color=cmap(j / max(len(keeps) - 1, 1)),
                        label=f"k={int(kk)}, keep={kp:g}")
    dense = frame[frame["technique"] == "dense"]
    if len(dense):
        ax.scatter(dense[x], dense[y], marker="*", s=160, color="black", label="dense",
                   zorder=3)
    static = frame[frame["technique"] == "static"]
    if len(static):
        ax.scatter(static[x], static[y], marker="s", s=60, color="tab:red",
                   label="static (same mean MACs)", zorder=3)
    ax.set_xlabel(x.replace("_", " "))
    ax.set_ylabel(y.replace("_", " "))
    ax.set_title("Dynamic pruning trade-off (lines: confidence)")
    ax.legend(fontsize=7, loc="lower right")
    return fig, ax


