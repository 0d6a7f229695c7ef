"""The result of a sensitivity analysis: a table, per-layer curves and a heat map.

Built by :func:`xprune_nb.pruning.sensitivity.sensitivity`; plain data (no model inside), so it
is cheap to keep and to show.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field

__all__ = ["Sensitivity", "COLUMNS"]

#: The columns of :meth:`Sensitivity.to_frame`, in order.
COLUMNS = ["layer", "amount", "removed", "accuracy", "loss", "drift", "macs", "params",
           "nonzero_params", "note"]

_LOWER_IS_WORSE = {"accuracy": True, "loss": False, "drift": False,
                   "worst_group_accuracy": True, "group_accuracy_gap": False}


@dataclass
class Sensitivity:
    """How much each group (layer) suffers when it alone is pruned, at several amounts.

    Attributes
    ----------
    criterion, granularity : str
        How units were ranked and what a unit is.
    metric : str
        The measure that :meth:`most_sensitive`, the heat map and the HTML view use:
        ``"accuracy"``, ``"loss"`` or ``"drift"``.
    amounts : list of float
        Fractions of each group's alive units removed.
    rows : list of dict
        One row per (group, amount), with the :data:`COLUMNS`.
    baseline : dict
        The same measures for the unpruned current model (``amount`` 0).
    step : int
        The history step whose model was analysed (the study itself is never changed).
    seconds : float
        Wall time of the whole analysis, scoring included.
    recalibrated : bool
        Whether candidates were evaluated after BatchNorm recalibration.
    group_names : list of str
        The study's sensitive groups (empty without): the table then also has
        ``worst_group_accuracy``, ``group_accuracy_gap`` and ``accuracy[<group>]`` (validation).

    Examples
    --------
    >>> s = Sensitivity("taylor", "channel", "accuracy", [0.5],
    ...                 [{"layer": "fc1", "amount": 0.5, "accuracy": 0.9}],
    ...                 {"accuracy": 0.95})
    >>> s.to_frame()[["layer", "amount", "accuracy"]].values.tolist()
    [['fc1', 0.5, 0.9]]
    """

    criterion: str
    granularity: str
    metric: str
    amounts: list[float]
    rows: list[dict] = field(default_factory=list)
    baseline: dict = field(default_factory=dict)
    step: int = 0
    seconds: float = 0.0
    recalibrated: bool = False
    group_names: list[str] = field(default_factory=list)

    @property
    def columns(self) -> list[str]:
        """The columns of :meth:`to_frame`: :data:`COLUMNS`, with groups the worst group's
        accuracy, the gap and each group's accuracy before ``note``."""
        extra = ["worst_group_accuracy", "group_accuracy_gap",
                 *(f"accuracy[{g}]" for g in self.group_names)] if self.group_names else []
        return COLUMNS[:-1] + extra + COLUMNS[-1:]

    @property
    def layers(self) -> list[str]:
        """The groups analysed, in model order."""
        return list(dict.fromkeys(r["layer"] for r in self.rows))

    def to_frame(self):
        """One row per (layer, amount): ``layer, amount, removed, accuracy, loss, drift, macs,
        params, nonzero_params, note`` (accuracy and loss on the validation split; drift is
        ``1 - saliency rank correlation`` with the original model on the study's probe); with
        sensitive groups also ``worst_group_accuracy``, ``group_accuracy_gap`` and
        ``accuracy[<group>]`` (validation, see :attr:`columns`)."""
        import pandas as pd

        columns = self.columns
        return pd.DataFrame([{c: r.get(c) for c in columns} for r in self.rows],
                            columns=columns)

    def table(self, metric: str | None = None):
        """The ``metric`` as a layer x amount table (the heat map's numbers)."""
        metric = metric or self.metric
        known = [m for m in _LOWER_IS_WORSE if self.group_names or "group" not in m]
        if metric not in known:
            from ..core.errors import ConfigError

            raise ConfigError.bad_value("Sensitivity", "metric", f"one of {known}" + (
                "" if self.group_names else " (the group metrics need a study with groups)"),
                metric)
        frame = self.to_frame()
        return frame.pivot(index="layer", columns="amount", values=metric).reindex(self.layers)

    def damage(self, metric: str | None = None):
        """Per (layer, amount): how much worse than the baseline the ``metric`` is (>= 0 is
        worse: accuracy lost, loss or drift gained)."""
        metric = metric or self.metric
        base = float(self.baseline.get(metric, math.nan))
        table = self.table(metric).astype(float)
        return (base - table) if _LOWER_IS_WORSE[metric] else (table - base)

    def most_sensitive(self, n: int | None = None, *, amount: float | None = None,
                       metric: str | None = None):
        """Layers ranked by damage, most sensitive first.

        Parameters
        ----------
        n : int, optional
            Keep the ``n`` most sensitive layers.
        amount : float, optional
            Rank by the damage at this amount (one of :attr:`amounts`); default: the mean
            damage over all amounts.
        metric : str, optional
            ``"accuracy"``, ``"loss"``, ``"drift"`` or, with groups, ``"worst_group_accuracy"``
            (the worst-group cost) or ``"group_accuracy_gap"`` (default: :attr:`metric`).

        Returns
        -------
        pandas.Series
            Damage per layer, sorted from the most to the least sensitive.
        """
        dmg = self.damage(metric)
        if amount is not None:
            if amount not in dmg.columns:
                from ..core.errors import ConfigError

                raise ConfigError.bad_value("Sensitivity.most_sensitive", "amount",
                                            f"one of {list(dmg.columns)}", amount)
            ranked = dmg[amount]
        else:
            ranked = dmg.mean(axis=1, skipna=True)
        ranked = ranked.sort_values(ascending=False, kind="stable")
        ranked.name = f"{metric or self.metric} damage"
        return ranked if n is None else ranked.head(n)

    def summary(self) -> str:
        """One sentence: what was analysed, the most sensitive layer, and the cost."""
        text = (f"Sensitivity of {len(self.layers)} {self.granularity} groups to {self.criterion} "
                f"pruning at {len(self.amounts)} amounts ({self.seconds:.1f} s, step "
                f"{self.step}")
        text += ", BatchNorm recalibrated)" if self.recalibrated else ")"
        ranked = self.most_sensitive(metric=self.metric)
        if len(ranked) and math.isfinite(float(ranked.iloc[0])):
            text += (f"; most sensitive by {self.metric}: {ranked.index[0]!r}, least: "
                     f"{ranked.index[-1]!r}")
        return text + "."

    def plot(self, ax=None, *, metric: str | None = None):
        """Per-layer curves of ``metric`` against the amount, and a layer x amount heat map.

        Parameters
        ----------
        ax : matplotlib Axes or a pair of them, optional
            One Axes draws the curves only; two draw curves and heat map; default: a new
            figure with both.
        metric : str, optional
            ``"accuracy"``, ``"loss"`` or ``"drift"`` (default: :attr:`metric`).

        Returns
        -------
        matplotlib.figure.Figure
        """
        import matplotlib.pyplot as plt
        import numpy as np

        metric = metric or self.metric
        if ax is None:
            fig, axes = plt.subplots(1, 2, figsize=(11, 3.8),
                                     gridspec_kw={"width_ratios": [1, 1.1]})
        else:
            axes = list(ax) if isinstance(ax, (list, tuple, np.ndarray)) else [ax]
            fig = axes[0].figure
        table = self.table(metric).astype(float)
        base = float(self.baseline.get(metric, math.nan))
        curves = axes[0]
        for layer in table.index:
            xs = [0.0] + list(table.columns)
            curves.plot(xs, [base] + table.loc[layer].tolist(), marker="o", ms=3, label=layer)
        curves.set_xlabel("fraction of the layer's units removed")
        curves.set_ylabel(f"{metric} (validation)" if metric != "drift" else
                          "drift (1 - saliency rank corr.)")
        curves.set_title(f"{self.criterion} / {self.granularity}: each layer alone")
        curves.legend(fontsize=7, loc="best")
        if len(axes) > 1:
            heat = axes[1]
            dmg = self.damage(metric).astype(float).values
            image = heat.imshow(dmg, aspect="auto", cmap="magma_r",
                                vmin=0.0, vmax=max(float(np.nanmax(dmg)) if np.isfinite(
                                    dmg).any() else 1.0, 1e-9))
            heat.set_xticks(range(len(table.columns)),
                            [f"{a:g}" for a in table.columns], fontsize=7)
            heat.set_yticks(range(len(table.index)), list(table.index), fontsize=7)
            heat.set_xlabel("amount")
            heat.set_title(f"{metric} damage vs. unpruned")
            fig.colorbar(image, ax=heat)
        fig.tight_layout()
        return fig

    def _repr_html_(self) -> str:
        table = self.table().to_html(float_format=lambda x: f"{x:.3f}", na_rep="–")
        return (f"<b>Sensitivity</b>: {html.escape(self.summary())}<br>"
                f"{html.escape(self.metric)} on the validation split per layer (rows) and "
                f"amount (columns); unpruned: {self.baseline.get(self.metric, math.nan):.3f}"
                + table)

    def __repr__(self) -> str:
        return f"<{self.summary()}>"
