"""Why a dynamic (input-adaptive) step runs the channels it runs, for each class subset."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DynamicWhy", "why_dynamic"]


@dataclass
class DynamicWhy:
    """Per sliced path: the class subsets routed to it, and per group the channels it keeps,
    chosen by their class-wise relevance for those classes.

    Attributes
    ----------
    paths : DataFrame
        One row per (path, group): ``path``, ``classes`` (what its channels were chosen for),
        ``group``, ``kept`` and ``of`` channels, ``kept_relevance`` (share of the classes'
        relevance that the kept channels carry).
    channels : dict[int, DataFrame]
        Per path, :func:`~xprune_nb.pruning.dynamic.eval.path_channels`: every channel with
        ``kept``, its ``score`` and per-class relevance.
    exits : dict
        The branch point, ``k``, the confidence threshold and the measured share of exits.
    """

    paths: object
    channels: dict
    exits: dict

    def to_frame(self):
        return self.paths.copy()

    def summary(self) -> dict:
        out = dict(self.exits)
        out["paths"] = int(self.paths["path"].nunique()) if len(self.paths) else 0
        if len(self.paths):
            out["mean_kept_relevance"] = float(self.paths["kept_relevance"].mean())
        return out

    def plot(self, ax=None):
        """Share of class-wise relevance the kept channels carry, per path and group."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(6, 3))
        table = self.paths.pivot(index="group", columns="path", values="kept_relevance")
        table.plot.bar(ax=ax)
        ax.set_ylabel("relevance kept")
        ax.set_title("channels each path runs: share of its classes' relevance kept")
        ax.legend([f"path {p}: classes {c}" for p, c in
                   self.paths.drop_duplicates("path")[["path", "classes"]].values],
                  fontsize=7)
        return ax

    def _repr_html_(self) -> str:
        import html

        head = "; ".join(f"{k}: {v}" for k, v in self.summary().items())
        return f"<b>Why these channels run</b><p>{html.escape(head)}</p>" + \
            self.paths.to_html(index=False, float_format=lambda x: f"{x:.3g}")


def why_dynamic(study, record) -> DynamicWhy:
    """The explanation of the dynamic step ``record`` of ``study``."""
    import pandas as pd

    from ..pruning.dynamic.eval import path_channels

    model = study.model if record.index == study.current else study.model_at(record.index)
    plan = model.plan
    rows, channels = [], {}
    for p, entry in enumerate(plan["paths"]):
        table = path_channels(model, p)
        channels[p] = table
        for group, part in table.groupby("group", sort=False):
            total = float(part["score"].clip(lower=0).sum())
            kept = float(part.loc[part["kept"], "score"].clip(lower=0).sum())
            rows.append({"path": p, "classes": tuple(entry["classes"]), "group": group,
                         "kept": int(part["kept"].sum()), "of": len(part),
                         "kept_relevance": kept / total if total > 0 else float("nan")})
    exits = {"branch_point": plan["at"], "k": plan["k"], "confidence": plan["confidence"],
             "exit_share": record.metrics.get("exit_share")}
    return DynamicWhy(pd.DataFrame(rows), channels, exits)
