"""Two relevance-flow maps of the same inputs: the paths pruning cut, and who took them up."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .result import Pathways

__all__ = ["PathwaysComparison", "compare_pathways", "CUT_MATTERS", "RECOVERED"]

#: below this share of the original flow through removed units, "little was cut"
CUT_MATTERS = 0.05
#: the class's evidence counts as re-established when its accuracy is within this of before
#: (or, without accuracies, its logit at least :data:`RECOVERED` of before)
ACCURACY_KEPT = 0.02
RECOVERED = 0.9
#: kept units named in a sentence
NAMED = 3


def _layer_shares(p: Pathways, c: int, layer: str) -> np.ndarray:
    r = np.abs(np.nan_to_num(p.relevance[c][layer]))
    total = r.sum()
    return r / total if total else r


@dataclass
class PathwaysComparison:
    """Per class: how much of the ``before`` flow went through units removed by ``after``, and
    where the evidence went.

    Attributes
    ----------
    before, after : Pathways
        The two maps (same inputs, units named by their original index).
    retrained : bool
        True when a retrain step lies between the two steps.
    """

    before: Pathways
    after: Pathways
    retrained: bool
    accuracy_before: list | None = None
    accuracy_after: list | None = None

    def removed_between(self) -> dict[str, set[int]]:
        """Units alive at ``before`` and gone at ``after``, per layer."""
        out = {}
        for layer in self.before.layers:
            gone_after = set(self.after.removed_at.get(layer, {}))
            gone_before = set(self.before.removed_at.get(layer, {}))
            out[layer] = gone_after - gone_before
        return out

    def _row(self, c: int) -> dict:
        b, a = self.before, self.after
        removed = self.removed_between()
        cut = total = 0.0
        for (la, lb), m in b.edges[c].items():
            flow = np.abs(m)
            total += flow.sum()
            hit = np.zeros_like(flow, dtype=bool)
            hit[list(removed.get(la, ())), :] = True
            hit[:, list(removed.get(lb, ()))] = True
            cut += flow[hit].sum()
        if total == 0:      # no edges (a single column): use the units' relevance
            for layer in b.layers[:-1]:
                r = np.abs(np.nan_to_num(b.relevance[c][layer]))
                total += r.sum()
                cut += r[list(removed[layer])].sum()
        cut_share = cut / total if total else np.nan
        gains, moved = [], []
        for layer in b.layers[:-1]:
            sb, sa = _layer_shares(b, c, layer), _layer_shares(a, c, layer)
            kept = np.ones(len(sb), dtype=bool)
            kept[list(a.removed_at.get(layer, {}))] = False
            moved.append(0.5 * np.abs(sa - sb)[kept].sum() + 0.5 * sb[~kept].sum())
            for u in np.nonzero(kept)[0]:
                gains.append((float(sa[u] - sb[u]), layer, int(u)))
        gains.sort(reverse=True)
        took = [f"{layer}:{u} (+{g * 100:.1f} pts)" for g, layer, u in gains[:NAMED] if g > 0]
        lb_, la_ = b.logits[c], a.logits[c]
        recovered = la_ / lb_ if lb_ > 0 else np.nan
        acc_b, acc_a = self._accuracy(c)
        kept = (acc_a >= acc_b - ACCURACY_KEPT if np.isfinite(acc_b) and np.isfinite(acc_a)
                else np.isfinite(recovered) and recovered >= RECOVERED)
        rerouted = bool(np.isfinite(cut_share) and cut_share >= CUT_MATTERS and kept)
        return {"class": b.class_name(c), "cut_share": cut_share,
                "moved_share": float(np.mean(moved)) if moved else np.nan,
                "logit_before": lb_ / b.inputs, "logit_after": la_ / a.inputs,
                "recovered": recovered, "accuracy_before": acc_b, "accuracy_after": acc_a,
                "retrained": self.retrained, "rerouted": rerouted,
                "taken_up_by": ", ".join(took),
                "reason": "" if lb_ > 0 else "the class's logit was not positive before, "
                "so there was no evidence to recover"}

    def _accuracy(self, c: int) -> tuple[float, float]:
        def get(values):
            try:
                return float(values[c])
            except (TypeError, IndexError, ValueError):
                return float("nan")
        return get(self.accuracy_before), get(self.accuracy_after)

    def to_frame(self):
        """One row per class: ``cut_share`` (share of the original flow through removed
        units), ``moved_share`` (how much of each layer's relevance changed hands, mean over
        layers), mean logits before/after, ``recovered`` (after / before; NaN with a
        ``reason`` when the class had no positive evidence before), test accuracy of the class
        before/after (NaN when not recorded), ``retrained``, ``rerouted`` (much was cut and the
        class's accuracy stayed within 2 points, or without accuracies its logit within 90%)
        and ``taken_up_by`` (kept units whose share grew most), ``sentence``."""
        import pandas as pd

        rows = [self._row(c) for c in self.before.classes]
        for row in rows:
            row["sentence"] = _sentence(row, self.before.step, self.after.step)
        return pd.DataFrame(rows)

    def sentences(self) -> list[str]:
        """One plain sentence per class."""
        return self.to_frame()["sentence"].tolist()

    def paths(self, top: int = 10):
        """The ``top`` edges per class that lost most flow (cut or weakened) and that gained
        most (taken up), with their flow before and after."""
        import pandas as pd

        rows = []
        for c in self.before.classes:
            name = self.before.class_name(c)
            for key, mb in self.before.edges[c].items():
                ma = self.after.edges[c].get(key, np.zeros_like(mb))
                diff = ma - mb
                for kind, order in (("cut", np.argsort(diff, axis=None)),
                                    ("taken up", np.argsort(-diff, axis=None))):
                    for flat in order[:top]:
                        i, j = np.unravel_index(flat, diff.shape)
                        if (kind == "cut" and diff[i, j] >= 0) or \
                                (kind == "taken up" and diff[i, j] <= 0):
                            break
                        rows.append({"class": name, "change": kind, "from_layer": key[0],
                                     "from_unit": int(i), "to_layer": key[1],
                                     "to_unit": int(j), "flow_before": float(mb[i, j]),
                                     "flow_after": float(ma[i, j]),
                                     "difference": float(diff[i, j])})
        frame = pd.DataFrame(rows, columns=["class", "change", "from_layer", "from_unit",
                                            "to_layer", "to_unit", "flow_before",
                                            "flow_after", "difference"])
        if frame.empty:
            return frame
        frame["size"] = frame["difference"].abs()
        frame = frame.sort_values(["class", "change", "size"], ascending=[True, True, False])
        return frame.groupby(["class", "change"], sort=False).head(top).drop(
            columns="size").reset_index(drop=True)

    def plot(self, cls: int | str | None = None, *, top: int = 10, edges: int = 40):
        """The two maps side by side, drawing the same units (the ``top`` of ``before`` per
        layer and those removed in between, hollow on the right)."""
        import matplotlib.pyplot as plt

        c = self.before._class_index(cls)
        units = self.before.top_units(c, top)
        for layer, gone in self.removed_between().items():
            units[layer] = sorted(set(units[layer]) | set(sorted(gone)[: max(1, top // 3)]))
        fig, axes = plt.subplots(1, 2, figsize=(14, 5))
        doomed = {(layer, u) for layer, gone in self.removed_between().items() for u in gone}
        self.before.plot(ax=axes[0], cls=c, top=top, edges=edges, units=units, mark=doomed)
        self.after.plot(ax=axes[1], cls=c, top=top, edges=edges, units=units)
        fig.tight_layout()
        return fig

    def _repr_html_(self) -> str:
        import html

        frame = self.to_frame()
        items = "".join(f"<li>{html.escape(s)}</li>" for s in frame["sentence"])
        table = frame.drop(columns="sentence").to_html(
            index=False, float_format=lambda v: f"{v:.3f}", na_rep="n/a")
        return (f"<b>Pathways, step {self.before.step} vs step {self.after.step}</b>"
                f"<ul>{items}</ul>{table}")

    def __repr__(self) -> str:
        return (f"PathwaysComparison(before={self.before.step}, after={self.after.step}, "
                f"classes={[self.before.class_name(c) for c in self.before.classes]})")


def _sentence(row: dict, b: int, a: int) -> str:
    name, cut = row["class"], row["cut_share"]
    if not np.isfinite(cut):
        return f"Class {name}: n/a: no relevance flowed for this class at step {b}."
    head = (f"Class {name}: {cut:.0%} of its evidence at step {b} flowed through units "
            f"removed by step {a}")
    if row["reason"]:
        return f"{head}; n/a for recovery: {row['reason']}."
    rec = row["recovered"]
    who = f", taken up mostly by {row['taken_up_by']}" if row["taken_up_by"] else ""
    how = "after retraining" if row["retrained"] else "without retraining"
    acc = ""
    if np.isfinite(row["accuracy_before"]) and np.isfinite(row["accuracy_after"]):
        acc = (f" and its accuracy {row['accuracy_after']:.0%} (was "
               f"{row['accuracy_before']:.0%})")
    state = f"its logit is at {rec:.0%} of before{acc}"
    if cut < CUT_MATTERS:
        return f"{head}: pruning barely touched its pathway; {how} {state}."
    if row["rerouted"]:
        return f"{head}; {how} the evidence was re-routed: {state}{who}."
    return f"{head}; {how} it was not re-routed: {state}{who}."



def compare_pathways(before: Pathways, after: Pathways, *, retrained: bool,
                     accuracy_before=None, accuracy_after=None) -> PathwaysComparison:
    """Compare two maps of the same classes and inputs (see :class:`PathwaysComparison`)."""
    from ...core.errors import ConfigError

    if before.classes != after.classes or before.granularity != after.granularity:
        raise ConfigError("pathways_compare: the two maps must have the same classes and "
                          f"granularity (got {before.classes}/{before.granularity} and "
                          f"{after.classes}/{after.granularity}).")
    return PathwaysComparison(before, after, retrained, accuracy_before, accuracy_after)
