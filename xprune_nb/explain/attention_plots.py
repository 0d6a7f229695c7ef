"""Figures of attention comparisons: rollout over the input and attention matrices per layer."""

from __future__ import annotations

import numpy as np

__all__ = ["plot_attention", "plot_heads"]


def _check_index(comp, index: int) -> int:
    from ..core.errors import ConfigError

    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) \
            or not 0 <= index < len(comp.targets):
        raise ConfigError.bad_value("AttentionComparison.plot", "index",
                                    f"an input index in [0, {len(comp.targets)})", index)
    return int(index)


def _mean_heads(maps: np.ndarray, active: np.ndarray) -> np.ndarray:
    return maps[:, active].mean(1) if active.any() else maps.mean(1)


def plot_attention(comp, ax=None, index: int = 0):
    """Row 1: before, row 2: after. Column 1: rollout (image inputs: over the image; token ids:
    token scores as bars); then each layer's head-mean attention (queries x keys)."""
    import matplotlib.pyplot as plt

    index = _check_index(comp, index)
    layers = list(comp.maps_before)
    cols = 1 + len(layers)
    fig = ax.figure if ax is not None else plt.figure(figsize=(2.2 * cols, 4.6))
    if ax is not None:
        ax.set_axis_off()
    axes = fig.subplots(2, cols, squeeze=False)
    image = comp.inputs.ndim == 4
    for row, (name, scores, maps, active, pred) in enumerate((
            ("before", comp.scores_before, comp.maps_before, comp.active_before,
             comp.pred_before),
            ("after", comp.scores_after, comp.maps_after, comp.active_after, comp.pred_after))):
        first = axes[row, 0]
        if image:
            first.imshow(comp.inputs[index].mean(0), cmap="gray")
            first.imshow(scores[index].sum(0), cmap="inferno", alpha=0.6)
            first.set_xticks([])
            first.set_yticks([])
        else:
            first.bar(np.arange(scores.shape[1]), scores[index])
            first.set_xlabel("token")
        first.set_title(f"{name}: rollout\npred {comp.label(pred[index])}", fontsize=8)
        for col, layer in enumerate(layers, start=1):
            axis = axes[row, col]
            axis.set_xticks([])
            axis.set_yticks([])
            if layer not in maps:
                axis.set_title(f"{layer}\n(removed)", fontsize=7)
                axis.set_axis_off()
                continue
            axis.imshow(_mean_heads(maps[layer], active[layer])[index], cmap="viridis",
                        vmin=0)
            axis.set_title(f"{layer}\n{int(active[layer].sum())} heads", fontsize=7)
    fig.suptitle(f"Attention, step {comp.steps[0]} vs {comp.steps[1]}, input {index} "
                 f"(target {comp.label(comp.targets[index])})", fontsize=9)
    fig.tight_layout()
    return fig


def plot_heads(comp, index: int = 0, which: str = "before"):
    """Every head's attention matrix (queries x keys) for input ``index``; masked heads are
    titled as such."""
    import matplotlib.pyplot as plt

    from ..core.errors import ConfigError

    if which not in ("before", "after"):
        raise ConfigError.unknown_name("AttentionComparison.plot_heads", "which",
                                       ("before", "after"), which)
    index = _check_index(comp, index)
    maps = comp.maps_before if which == "before" else comp.maps_after
    heads = comp.heads_before if which == "before" else comp.heads_after
    active = comp.active_before if which == "before" else comp.active_after
    width = max((m.shape[1] for m in maps.values()), default=1)
    fig, axes = plt.subplots(max(len(maps), 1), width, squeeze=False,
                             figsize=(1.8 * width, 1.9 * max(len(maps), 1)))
    for axis in axes.flat:
        axis.set_axis_off()
    for r, (layer, m) in enumerate(maps.items()):
        for h in range(m.shape[1]):
            axis = axes[r, h]
            axis.imshow(m[index, h], cmap="viridis", vmin=0)
            state = "" if active[layer][h] else " (masked)"
            axis.set_title(f"{layer}\nhead {heads[layer][h]}{state}", fontsize=7)
    fig.suptitle(f"Per-head attention ({which}, step "
                 f"{comp.steps[0 if which == 'before' else 1]}), input {index}", fontsize=9)
    fig.tight_layout()
    return fig
