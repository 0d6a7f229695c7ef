"""What did pruning forget? The examples whose prediction changed, and the classes that paid.

Hooker et al. (2019) call the examples on which a compressed model and the original disagree
*pruning-identified exemplars* (PIEs): a small, atypical, often mislabelled or hard part of the
data that carries most of the accuracy lost to compression, unevenly across classes. With one
model on each side, an example is a PIE when its predicted class changed; it is *forgotten*
when it was right before and wrong after, *learned* in the reverse case, and *changed* when both
were wrong.

:func:`forgotten` compares two steps of a study on a whole split: the PIEs (most confidently
forgotten first), the per-class accuracy change, and saliency before vs after for the chosen
examples through ``study.saliency`` (any method it offers).

Examples
--------
>>> import xprune_nb as xp
>>> study = xp.Study(xp.zoo.load("digits_cnn"), xp.datasets.load("digits"), seed=0)
>>> _ = study.score("magnitude", granularity="channel"); _ = study.prune(0.6)
>>> report = forgotten(study, 0, -1, n_examples=2)
>>> report.summary()["changed"] == len(report.to_frame())
True
"""

from __future__ import annotations

import html
from dataclasses import dataclass

import numpy as np
import torch

from ..core.errors import ConfigError
from ..models.mechanisms.model_tools import eval_mode

__all__ = ["ForgottenReport", "forgotten"]

_SPLITS = ("train", "val", "test")


@dataclass
class ForgottenReport:
    """Pruning-identified exemplars between two steps, per-class accuracy change, saliency.

    Attributes
    ----------
    steps : tuple of int
    split : str
    labels, pred_before, pred_after : ndarray (rows of the split,)
    p_true_before, p_true_after : ndarray
        Each model's softmax probability of the true class.
    examples : list of int
        Row indices (of the split) explained in ``saliency``: forgotten ones first, by how much
        the true class's probability fell.
    saliency : comparison or None
        ``study.saliency(before, after, inputs=examples)`` (None when nothing changed or
        ``saliency=False``).
    groups, group_names : ndarray and list of str, or None
        The sensitive group of each row and the groups' names (``Study(groups=...)``).
    """

    steps: tuple
    split: str
    labels: np.ndarray
    pred_before: np.ndarray
    pred_after: np.ndarray
    p_true_before: np.ndarray
    p_true_after: np.ndarray
    examples: list
    saliency: object | None
    class_names: list
    groups: np.ndarray | None = None
    group_names: list | None = None

    @property
    def changed(self) -> np.ndarray:
        """Row indices whose prediction changed (the PIEs)."""
        return np.flatnonzero(self.pred_before != self.pred_after)

    def kind(self) -> np.ndarray:
        """Per row: ``forgotten``, ``learned``, ``changed`` or ``same``."""
        right_b, right_a = self.pred_before == self.labels, self.pred_after == self.labels
        out = np.full(len(self.labels), "same", dtype=object)
        moved = self.pred_before != self.pred_after
        out[moved & right_b & ~right_a] = "forgotten"
        out[moved & ~right_b & right_a] = "learned"
        out[moved & ~right_b & ~right_a] = "changed"
        return out

    def _name(self, c) -> str:
        return self.class_names[int(c)] if int(c) < len(self.class_names) else str(int(c))

    def to_frame(self):
        """One row per PIE: its row index, label, both predictions, kind and the probability
        of the true class before and after; most forgotten first."""
        import pandas as pd

        idx = self.changed
        frame = pd.DataFrame({
            "row": idx, "label": [self._name(c) for c in self.labels[idx]],
            "pred_before": [self._name(c) for c in self.pred_before[idx]],
            "pred_after": [self._name(c) for c in self.pred_after[idx]],
            "kind": self.kind()[idx], "p_true_before": self.p_true_before[idx],
            "p_true_after": self.p_true_after[idx]})
        drop = frame["p_true_before"] - frame["p_true_after"]
        return frame.assign(p_true_drop=drop).sort_values(
            "p_true_drop", ascending=False, kind="stable").reset_index(drop=True)

    def per_class(self):
        """One row per class: examples, accuracy before and after, the change, and how many
        were forgotten and learned; the classes that paid most first."""
        import pandas as pd

        kinds = self.kind()
        rows = []
        for c in range(len(self.class_names)):
            sel = self.labels == c
            if not sel.any():
                continue
            acc_b = float((self.pred_before[sel] == c).mean())
            acc_a = float((self.pred_after[sel] == c).mean())
            rows.append({"class": self._name(c), "examples": int(sel.sum()),
                         "accuracy_before": acc_b, "accuracy_after": acc_a,
                         "accuracy_change": acc_a - acc_b,
                         "forgotten": int((kinds[sel] == "forgotten").sum()),
                         "learned": int((kinds[sel] == "learned").sum())})
        return pd.DataFrame(rows).sort_values("accuracy_change", kind="stable").reset_index(
            drop=True)

    def per_group(self):
        """One row per sensitive group: examples, accuracy before and after, the change,
        predictions changed, forgotten and learned; the groups that lost most first.

        Raises :class:`~xprune_nb.core.errors.ConfigError` for a study without groups.

        Examples
        --------
        >>> import numpy as np
        >>> r = ForgottenReport((0, 1), "test", np.array([0, 1, 1]), np.array([0, 1, 1]),
        ...                     np.array([0, 0, 1]), np.ones(3), np.ones(3), [], None,
        ...                     ["a", "b"], np.array([0, 1, 1]), ["women", "men"])
        >>> r.per_group()["group"].tolist(), r.per_group()["forgotten"].tolist()
        (['men', 'women'], [1, 0])
        """
        import pandas as pd

        if self.groups is None or not self.group_names:
            raise ConfigError("Study.forgotten(...).per_group(): the study has no sensitive "
                              "groups; give them with Study(..., groups=...) or (X, y, groups) "
                              "splits (docs/groups.md).")
        kinds = self.kind()
        rows = []
        for g, name in enumerate(self.group_names):
            sel = self.groups == g
            if not sel.any():
                continue
            acc_b = float((self.pred_before[sel] == self.labels[sel]).mean())
            acc_a = float((self.pred_after[sel] == self.labels[sel]).mean())
            rows.append({"group": name, "examples": int(sel.sum()), "accuracy_before": acc_b,
                         "accuracy_after": acc_a, "accuracy_change": acc_a - acc_b,
                         "changed": int((self.pred_before[sel] != self.pred_after[sel]).sum()),
                         "forgotten": int((kinds[sel] == "forgotten").sum()),
                         "learned": int((kinds[sel] == "learned").sum())})
        return pd.DataFrame(rows).sort_values("accuracy_change", kind="stable").reset_index(
            drop=True)

    def per_group_words(self) -> str:
        """The groups that lost most, in plain words (empty for a study without groups)."""
        if self.groups is None or not self.group_names:
            return ""
        frame = self.per_group()
        lost = frame[frame["accuracy_change"] < 0]
        if lost.empty:
            return (f"No group lost accuracy between step {self.steps[0]} and step "
                    f"{self.steps[1]} on the {self.split} split.")
        parts = [f"{r.group} ({100 * r.accuracy_before:.1f}% -> {100 * r.accuracy_after:.1f}%, "
                 f"{100 * r.accuracy_change:+.1f} points; {r.forgotten} of {r.examples} "
                 "examples forgotten)" for r in lost.itertuples()]
        gap = frame["accuracy_change"].max() - frame["accuracy_change"].min()
        return (f"Between step {self.steps[0]} and step {self.steps[1]} ({self.split} split), "
                f"the group that lost most is {parts[0]}"
                + (f"; then {'; '.join(parts[1:])}" if len(parts) > 1 else "")
                + f". The groups' accuracy changes differ by up to {100 * gap:.1f} points.")

    def summary(self) -> dict[str, float]:
        kinds = self.kind()
        return {"accuracy_before": float((self.pred_before == self.labels).mean()),
                "accuracy_after": float((self.pred_after == self.labels).mean()),
                "changed": int(len(self.changed)),
                "forgotten": int((kinds == "forgotten").sum()),
                "learned": int((kinds == "learned").sum()),
                "changed_fraction": float(len(self.changed) / max(len(self.labels), 1))}

    def plot(self, ax=None):
        """Per-class accuracy change as bars (which classes paid for the compression), with
        the number forgotten above each bar. Returns the axes; ``saliency.plot()`` draws the
        chosen examples' maps."""
        import matplotlib.pyplot as plt

        frame = self.per_class().sort_values("class", key=lambda s: s.map(
            {n: i for i, n in enumerate(self.class_names)}))
        ax = ax if ax is not None else plt.figure(figsize=(6, 3)).add_subplot(1, 1, 1)
        change = frame["accuracy_change"].to_numpy()
        bars = ax.bar(frame["class"].astype(str), change,
                      color=["#c0392b" if v < 0 else "#2e86c1" for v in change])
        for bar, lost in zip(bars, frame["forgotten"]):
            if lost:
                ax.annotate(f"-{lost}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                            ha="center", va="top" if bar.get_height() < 0 else "bottom",
                            fontsize=7)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xlabel("class")
        ax.set_ylabel("accuracy after - before")
        s = self.summary()
        ax.set_title(f"What pruning forgot (step {self.steps[0]} -> {self.steps[1]}, "
                     f"{self.split}): {s['forgotten']} forgotten, {s['learned']} learned",
                     fontsize=9)
        return ax

    def __repr__(self) -> str:
        s = self.summary()
        return (f"ForgottenReport(steps={self.steps}, split={self.split!r}, "
                f"changed={s['changed']}, forgotten={s['forgotten']}, learned={s['learned']})")

    def _repr_html_(self) -> str:
        from .plots import html_report

        title = (f"What pruning forgot: step {self.steps[0]} vs {self.steps[1]} on the "
                 f"{self.split} split (pruning-identified exemplars, Hooker et al. 2019)")
        out = html_report(title, self.summary(), self.per_class())
        if self.groups is not None and self.group_names:
            out += f"<p>{html.escape(self.per_group_words())}</p>"
            out += html_report("", {}, self.per_group())
        out += "<p><b>Examples whose prediction changed</b></p>"
        out += html_report("", {}, self.to_frame())
        if self.saliency is not None:
            out += self.saliency._repr_html_()
        return out


def _predict(study, model, x: torch.Tensor, batch: int = 512):
    with torch.no_grad(), eval_mode(model):
        logits = torch.cat([study.forward(model, x[i:i + batch]) for i in range(0, len(x),
                                                                                 batch)])
    return logits.argmax(1).numpy(), torch.softmax(logits.double(), 1).numpy()


def forgotten(study, before: int = 0, after: int = -1, *, split: str = "test",
              n_examples: int = 8, saliency: bool = True, method: str = "saliency",
              **method_options) -> ForgottenReport:
    """Examples whose prediction changed between steps ``before`` and ``after`` (PIEs, Hooker
    et al. 2019), per-class accuracy change, and ``study.saliency`` of up to ``n_examples`` of
    them (forgotten first; ``saliency=False`` skips it). The study is not changed."""
    from .study import step_models

    call = "Study.forgotten"
    if split not in _SPLITS:
        raise ConfigError.unknown_name(call, "split", _SPLITS, split)
    if isinstance(n_examples, bool) or not isinstance(n_examples, int) or n_examples < 0:
        raise ConfigError.bad_value(call, "n_examples", "an integer >= 0", n_examples)
    if not isinstance(saliency, bool):
        raise ConfigError.bad_value(call, "saliency", "True or False", saliency)
    from .saliency import METHODS
    from .tokens import TOKEN_METHODS

    names = set(METHODS) | set(TOKEN_METHODS)   # checked even when no example changed
    if not isinstance(method, str) or method not in names:
        raise ConfigError.unknown_name(call, "method", names, method)
    (b, model_b), (a, model_a) = step_models(study, before, after, call)
    rows = study.data.split(split)
    labels = rows.y.numpy()
    pred_b, prob_b = _predict(study, model_b, rows.X)
    pred_a, prob_a = _predict(study, model_a, rows.X)
    take = np.arange(len(labels))
    report = ForgottenReport(
        steps=(b, a), split=split, labels=labels, pred_before=pred_b, pred_after=pred_a,
        p_true_before=prob_b[take, labels], p_true_after=prob_a[take, labels], examples=[],
        saliency=None, class_names=list(study.data.class_names),
        groups=None if getattr(rows, "groups", None) is None else rows.groups.numpy(),
        group_names=getattr(study.data, "group_names", None))
    frame = report.to_frame()
    order = frame.assign(first=frame["kind"] != "forgotten").sort_values(
        ["first", "p_true_drop"], ascending=[True, False], kind="stable")
    report.examples = [int(r) for r in order["row"][:n_examples]]
    if saliency and report.examples:
        if split == "test":
            inputs, labels_ = report.examples, None
        else:
            inputs, labels_ = rows.X[report.examples], labels[report.examples].tolist()
        report.saliency = study.saliency(b, a, method=method, inputs=inputs, labels=labels_,
                                         **method_options)
    return report
