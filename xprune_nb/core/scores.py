"""The result of scoring: one importance tensor per prunable group, plus how it was made."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .errors import ConfigError

__all__ = ["Scores", "score_call", "normalize_scores", "NORMALIZATIONS"]

NORMALIZATIONS = ("mean", "l1", "l2", "max", None)


def normalize_scores(values: dict[str, torch.Tensor], method: str | None,
                     call: str = "Study.prune") -> dict[str, torch.Tensor]:
    """Rescale each group's scores so that groups of different scale can be ranked together.

    ``"mean"`` divides by the mean absolute score (width-independent), ``"l1"``/``"l2"`` by the
    norm (as Yeom et al. 2021 do per layer), ``"max"`` by the largest score, ``None`` keeps raw
    scores. Groups whose scores are all zero stay zero.

    Examples
    --------
    >>> import torch
    >>> out = normalize_scores({"a": torch.tensor([1.0, 3.0])}, "mean")
    >>> out["a"].tolist()
    [0.5, 1.5]
    """
    if method not in NORMALIZATIONS:
        raise ConfigError.unknown_name(call, "normalize", [m for m in NORMALIZATIONS if m],
                                       method)
    if method is None:
        return dict(values)
    out = {}
    for key, v in values.items():
        v = v.double()
        if method == "mean":
            scale = v.abs().mean()
        elif method == "l1":
            scale = v.abs().sum()
        elif method == "l2":
            scale = v.norm()
        else:
            scale = v.abs().max()
        out[key] = v / scale if scale > 0 else torch.zeros_like(v)
    return out


def score_call(criterion: str, granularity: str, options: dict) -> dict:
    """The ``Study.score`` arguments of a recorded score (a recipe's ``score`` step): the
    criterion, the granularity, then ``samples``/``classes``/``prune_output`` and the
    criterion's own options; the seed is the study's, not the call's."""
    options = {k: v for k, v in options.items() if k != "seed"}
    out = {"criterion": criterion, "granularity": granularity}
    for key in ("samples", "classes", "prune_output"):
        if key in options:
            out[key] = options.pop(key)
    if isinstance(out.get("classes"), tuple):
        out["classes"] = list(out["classes"])
    out.update(options)
    return out


@dataclass
class Scores:
    """Importance of every prunable unit, one tensor per group.

    Attributes
    ----------
    criterion, granularity : str
        How the scores were made (e.g. ``"taylor"``, ``"channel"``).
    values : dict[str, torch.Tensor]
        For ``channel``: group key (root layer name) -> 1-D tensor, one score per channel.
        For ``weight``: layer name -> tensor shaped like the layer's weight.
    groups : dict[str, tuple[str, ...]]
        The layers each channel group removes together (empty for ``weight``).
    options : dict
        The criterion's options, ``samples``, ``classes`` and ``seed``.
    step : int
        The history step whose model was scored.
    per_class : dict[str, torch.Tensor] | None
        For class-aware criteria: group key -> (classes, units) relevance per class.
    skipped : dict[str, str]
        Layers that are not prunable and why.
    errors : dict[str, torch.Tensor] | None
        Standard errors of sampled scores (``shapley``), shaped like ``values``.

    Examples
    --------
    >>> import torch
    >>> s = Scores("magnitude", "channel", {"conv": torch.tensor([0.5, 2.0])})
    >>> s.num_units
    2
    >>> s.to_frame()["rank"].tolist()
    [0, 1]
    """

    criterion: str
    granularity: str
    values: dict[str, torch.Tensor]
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)
    options: dict = field(default_factory=dict)
    step: int = 0
    per_class: dict[str, torch.Tensor] | None = None
    skipped: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    errors: dict[str, torch.Tensor] | None = None

    def call(self) -> dict:
        """The ``Study.score`` arguments that made these scores (a recipe's ``score`` step)."""
        return score_call(self.criterion, self.granularity, self.options)

    @property
    def layers(self) -> list[str]:
        return list(self.values)

    @property
    def num_units(self) -> int:
        return int(sum(v.numel() for v in self.values.values()))

    def normalized(self, method: str | None = "mean") -> dict[str, torch.Tensor]:
        """Per-group normalised copies of the scores (see :func:`normalize_scores`)."""
        return normalize_scores(self.values, method, call="Scores.normalized")

    def to_frame(self, normalize: str | None = "mean"):
        """One row per unit: layer, unit index, raw score, normalised score, global rank
        (0 = least important, pruned first) and percentile."""
        import pandas as pd

        norm = self.normalized(normalize)
        rows = []
        for key, v in self.values.items():
            flat, nflat = v.flatten(), norm[key].flatten()
            for i in range(flat.numel()):
                rows.append((key, i, float(flat[i]), float(nflat[i])))
        frame = pd.DataFrame(rows, columns=["layer", "unit", "score", "normalized"])
        if self.errors:
            frame["stderr"] = [float(e) for key in self.values
                               for e in self.errors[key].flatten()]
        order = frame["normalized"].rank(method="first").astype(int) - 1
        frame["rank"] = order
        frame["percentile"] = 100.0 * order / max(len(frame) - 1, 1)
        return frame

    def summary(self):
        """One row per group: units, mean/min/max score, and the coupled layers."""
        import pandas as pd

        rows = []
        for key, v in self.values.items():
            v = v.double()
            rows.append({
                "layer": key, "units": v.numel(), "mean": float(v.mean()),
                "min": float(v.min()), "max": float(v.max()),
                "coupled": ", ".join(self.groups.get(key, ())[1:]),
            })
        return pd.DataFrame(rows)

    def plot(self, ax=None, normalize: str | None = "mean"):
        """Box plot of the (normalised) scores per layer; returns the axes."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(max(4, 0.6 * len(self.values) + 2), 3))
        norm = self.normalized(normalize)
        data = [norm[k].flatten().float().numpy() for k in self.values]
        ax.boxplot(data, showfliers=True)
        ax.set_xticks(range(1, len(data) + 1), list(self.values), rotation=45, ha="right")
        ax.set_ylabel("score" + (f" ({normalize}-normalised)" if normalize else ""))
        ax.set_title(f"{self.criterion} scores per {self.granularity} group")
        return ax

    def __repr__(self) -> str:
        return (f"Scores(criterion={self.criterion!r}, granularity={self.granularity!r}, "
                f"groups={len(self.values)}, units={self.num_units}, step={self.step})")

    def _repr_html_(self) -> str:
        head = (f"<b>Scores</b>: {self.criterion} / {self.granularity}, "
                f"{len(self.values)} groups, {self.num_units} units (step {self.step})")
        return head + self.summary().to_html(index=False, float_format=lambda x: f"{x:.4g}")
