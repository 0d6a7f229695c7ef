"""The record of a study: one :class:`Step` per model-changing action, kept in a tree."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Step", "History", "compare_steps", "compare_study_steps", "NOT_MEASURED"]

#: the words every display shows for a number that is computed on first ask (DESIGN.md,
#: "Numbers that are not there"): a step's pending drift, a comparison's faithfulness curves
NOT_MEASURED = "not measured yet"

_TABLE_METRICS = ("accuracy", "val_accuracy", "params", "nonzero_params", "macs", "sparsity")

#: a step's fields that hold what running the model on data measured: on a big model they are
#: measured on first read ("accuracy" in ``Step.pending``, see :meth:`Step.measure_on_ask`)
_ON_ASK = frozenset({"metrics", "per_class_accuracy", "per_group_accuracy",
                     "val_per_group_accuracy"})


@dataclass(repr=False)
class Step:
    """One action on the model and its result.

    Attributes
    ----------
    index : int
        Position in the history (0 is the original model).
    kind : str
        ``"original"``, ``"prune"`` or ``"retrain"``.
    parent : int | None
        The step this one was applied to (steps form a tree: after ``goto``/``undo`` a new
        action branches off and nothing is lost).
    config : dict
        Every parameter of the action (for recipes and exported scripts).
    metrics : dict
        Accuracy, parameters, MACs, sparsity... of the model after the step.
    removed : dict[str, list[int]]
        Units removed in this step, per group (channel: indices in the parent's numbering;
        weight: flat weight indices).
    structure : list[dict]
        The structural removals from the original model to this step, in order; with
        ``masked`` and the saved weights this restores the exact model.
    calls : list[dict]
        The public calls that made this step, as recipe steps (``StepConfig.to_dict()``:
        ``{"score": {...}}``, ``{"prune": {...}}``, ``{"retrain": {...}}``, ``{"dynamic":
        {...}}``), so a recipe or an exported script replays exactly these calls.
    per_group_accuracy, val_per_group_accuracy : dict[str, float]
        Test / validation accuracy of each sensitive group (empty without groups).
    pending : list[str]
        Measurements left for the first ask on a big model. ``"accuracy"``: the step's
        accuracy, loss and per-class / per-group accuracy; reading ``metrics`` (or a per-class
        or per-group field) of a step of a study measures them then, with a progress bar.
        ``"drift"``: filled in by :meth:`Study.drift`. Displays (the history table's HTML, the
        panel, ``repr``) never measure: they say "not measured yet".
    """

    index: int
    kind: str
    parent: int | None
    config: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    removed: dict[str, list[int]] = field(default_factory=dict)
    structure: list[dict[str, list[int]]] = field(default_factory=list)
    masked: list[str] = field(default_factory=list)
    drift: dict = field(default_factory=dict)
    per_class_accuracy: list[float] = field(default_factory=list)
    stopped: bool = False
    seconds: float = 0.0
    note: str = ""
    calls: list[dict] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    per_group_accuracy: dict[str, float] = field(default_factory=dict)
    val_per_group_accuracy: dict[str, float] = field(default_factory=dict)

    def __getattribute__(self, name: str):
        if name in _ON_ASK:   # a big model's accuracy: measured when first read
            state = object.__getattribute__(self, "__dict__")
            measure = state.get("_on_ask")
            if measure is not None and "accuracy" in state.get("pending", ()):
                measure(self)
        return object.__getattribute__(self, name)

    def __getstate__(self) -> dict:
        # the measurer points at its study: a copy or a pickle carries the numbers only
        state = dict(self.__dict__)
        state.pop("_on_ask", None)
        return state

    def measure_on_ask(self, measure) -> None:
        """Have ``measure(step)`` fill the pending accuracy when ``metrics`` (or a per-class or
        per-group field) is first read; it must clear ``"accuracy"`` from ``pending`` and write
        the fields through :meth:`known` (``None`` detaches)."""
        self.__dict__["_on_ask"] = measure

    def known(self, name: str = "metrics"):
        """A measured field as it stands, without measuring what is pending (for displays).

        Examples
        --------
        >>> step = Step(1, "prune", 0, metrics={"params": 10}, pending=["accuracy"])
        >>> step.measure_on_ask(lambda s: s.known().update(accuracy=0.5)
        ...                     or s.pending.remove("accuracy"))
        >>> step.known(), step.pending
        ({'params': 10}, ['accuracy'])
        >>> step.metrics, step.pending
        ({'params': 10, 'accuracy': 0.5}, [])
        """
        if name not in _ON_ASK:
            raise AttributeError(f"Step.known: {name!r} is not a measured field")
        return self.__dict__[name]

    def __repr__(self) -> str:   # a display: it never measures
        shown = {k: v for k, v in self.known().items() if k in _TABLE_METRICS}
        if "accuracy" in self.pending:
            shown["accuracy"] = NOT_MEASURED
        return f"Step({self.index}, {self.label!r}, parent={self.parent}, {shown})"

    @property
    def label(self) -> str:
        c = self.config
        if self.kind == "prune":
            steps = c.get("steps", 1) or 1
            # each round of an iterative prune states its own fraction (of the units alive then)
            frac = c.get("fraction", c.get("amount", 0)) if steps > 1 else c.get("amount", 0)
            label = (f"prune {c.get('criterion', '?')}/{c.get('granularity', '?')} "
                     f"{100 * frac:.0f}%")
            if c.get("layer_amounts"):   # per-group amounts (e.g. auto_prune's allocation)
                label += f" + {len(c['layer_amounts'])} per-group amounts"
            return label + (f" (round {c.get('round', '?')}/{steps})" if steps > 1 else "")
        if self.kind == "dynamic":
            return f"dynamic k={c.get('k')} keep={c.get('keep')} conf={c.get('confidence')}"
        if self.kind == "retrain":
            return f"retrain {c.get('epochs', '?')} ep" + (" (stopped)" if self.stopped else "")
        return self.kind

    def row(self, measure: bool = True) -> dict[str, Any]:
        """The step as one table row; ``measure=False`` (a display) leaves a pending accuracy
        NaN, with ``not_measured_yet`` naming it."""
        metrics = self.metrics if measure else self.known()
        by_group = self.per_group_accuracy if measure else self.known("per_group_accuracy")
        row = {"step": self.index, "parent": self.parent, "action": self.label}
        row.update({k: metrics.get(k, float("nan") if k in ("accuracy", "val_accuracy")
                                   else None) for k in _TABLE_METRICS})
        if by_group:   # MetricFrame.by_group, then group_min and the gap
            row.update({f"accuracy[{g}]": a for g, a in by_group.items()})
            row["worst_group_accuracy"] = metrics.get("worst_group_accuracy")
            row["group_accuracy_gap"] = metrics.get("group_accuracy_gap")
        if "exit_share" in metrics:   # dynamic: mean MACs above, plus these
            row["macs_longest"] = metrics.get("macs_longest")
            row["exit_share"] = metrics.get("exit_share")
        if self.drift:
            # the probe's drift against the original (see explain/glossary.py)
            row["saliency_rank_correlation"] = self.drift.get("saliency_spearman")
            if self.drift.get("saliency_reason"):   # why probe inputs are missing from it
                row["saliency_reason"] = self.drift["saliency_reason"]
        elif "drift" in self.pending:
            row["saliency_rank_correlation"] = float("nan")
        if self.pending:   # the reason next to the NaN: computed on first ask
            row["not_measured_yet"] = ", ".join(self.pending)
        return row

    def to_dict(self) -> dict:
        """Plain data (JSON- and weights_only-safe); a pending accuracy stays pending."""
        return {
            "index": self.index, "kind": self.kind, "parent": self.parent,
            "config": self.config, "metrics": self.known(), "removed": self.removed,
            "structure": self.structure, "masked": self.masked, "drift": self.drift,
            "per_class_accuracy": self.known("per_class_accuracy"), "stopped": self.stopped,
            "seconds": self.seconds, "note": self.note, "calls": self.calls,
            "pending": self.pending, "per_group_accuracy": self.known("per_group_accuracy"),
            "val_per_group_accuracy": self.known("val_per_group_accuracy"),
        }

    @classmethod
    def from_dict(cls, d: dict) -> Step:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})

    def _repr_html_(self) -> str:
        import pandas as pd

        return (f"<b>Step {self.index}</b>: {self.label}"
                + shown_frame(pd.DataFrame([self.row(measure=False)])).to_html(
                    index=False, na_rep="n/a", float_format=lambda x: f"{x:.4g}")
                + how_to_measure(self.pending))


class History(list):
    """The list of :class:`Step` records, with a table view.

    Examples
    --------
    >>> h = History([Step(0, "original", None, metrics={"accuracy": 0.9})])
    >>> h.to_frame()["accuracy"].tolist()
    [0.9]
    """

    current: int = 0

    def to_frame(self, measure: bool = True):
        """One row per step: action, parent, accuracy, parameters, MACs, sparsity, drift; with
        sensitive groups also ``accuracy[<group>]`` per group, ``worst_group_accuracy`` and
        ``group_accuracy_gap`` (best minus worst group).

        A big model's steps measure their pending accuracy here (``measure=False``: NaN, with
        ``not_measured_yet`` naming it, as the notebook display shows it)."""
        import pandas as pd

        frame = pd.DataFrame([s.row(measure) for s in self])
        if len(frame):
            frame["current"] = frame["step"] == self.current
        return frame.set_index("step") if len(frame) else frame

    def plot(self, ax=None, measure: bool = True):
        """Test accuracy against non-zero parameters, one point per step, parent → child
        segments (a branching history stays a tree); the current step is ringed. The one
        history plot: the panel and the report both draw it.

        A big model's steps measure their pending accuracy first; ``measure=False`` (the panel)
        leaves them out and says how many are not measured yet."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(5.5, 3.6))
        shown = [s for s in self if measure or "accuracy" not in s.pending]
        metrics = {s.index: s.metrics if measure else s.known() for s in shown}
        size = {i: m.get("nonzero_params", m.get("params")) for i, m in metrics.items()}
        acc = {i: m.get("accuracy") for i, m in metrics.items()}
        for s in shown:
            if s.parent in size:
                ax.plot([size[s.parent], size[s.index]], [acc[s.parent], acc[s.index]],
                        color="#bbb", lw=1, zorder=1)
        colors = {"original": "#333", "prune": "#c44e52", "retrain": "#4c72b0",
                  "dynamic": "#55a868"}
        for kind, color in colors.items():
            idx = [s.index for s in shown if s.kind == kind]
            if idx:
                ax.scatter([size[i] for i in idx], [acc[i] for i in idx], color=color,
                           label=kind, zorder=2, s=25)
        if self.current in size:
            ax.scatter([size[self.current]], [acc[self.current]], s=140, facecolors="none",
                       edgecolors="#f0a000", lw=2, zorder=3, label="current")
        for i in size:
            ax.annotate(str(i), (size[i], acc[i]), textcoords="offset points", xytext=(4, 4),
                        fontsize=8)
        ax.set_xlabel("non-zero parameters")
        ax.set_ylabel("test accuracy")
        left_out = len(self) - len(shown)
        ax.set_title("accuracy vs size along the history" + (
            f"\n({left_out} step(s) {NOT_MEASURED}: Measure)" if left_out else ""))
        if shown:
            ax.legend(fontsize=8, loc="lower right")
        return ax

    def _repr_html_(self) -> str:   # a display: shows "not measured yet", never measures
        pending = sorted({p for s in self for p in s.pending})
        return ("<b>History</b>" + shown_frame(self.to_frame(measure=False)).to_html(
            float_format=lambda x: f"{x:.4g}", na_rep="n/a") + how_to_measure(pending))


def how_to_measure(pending) -> str:
    """The caption under a display with numbers "not measured yet": how to get them.

    Examples
    --------
    >>> how_to_measure([])
    ''
    >>> "study.drift()" in how_to_measure(["drift"])
    True
    """
    ways = []
    if "accuracy" in pending:
        ways.append("the accuracy is measured when you read it (<code>step.metrics</code>, "
                    "<code>study.history.to_frame()</code>) or press <i>Measure</i> in the panel")
    if "drift" in pending:
        ways.append("the drift by <code>study.drift()</code>")
    if not ways:
        return ""
    return (f"<p style='font-size:smaller'><i>{NOT_MEASURED}</i> (a big model measures on "
            f"first ask): {'; '.join(ways)}.</p>")


def shown_frame(frame):
    """``frame`` (a :meth:`History.to_frame`) for a display: a number a step has not measured
    yet reads "not measured yet" instead of NaN (DESIGN.md, "Numbers that are not there")."""
    if "not_measured_yet" not in frame.columns:
        return frame
    frame = frame.copy()
    later = {"accuracy": ("accuracy", "val_accuracy", "worst_group_accuracy",
                          "group_accuracy_gap"), "drift": ("saliency_rank_correlation",)}
    for what, columns in later.items():
        rows = frame["not_measured_yet"].fillna("").str.contains(what)
        for column in (c for c in columns if c in frame.columns):
            values = frame[column].map(lambda v: v if isinstance(v, str) or v != v
                                       else f"{v:.4g}")
            frame[column] = values.where(~rows, NOT_MEASURED)
    return frame


def study_line(current: int, steps: int, metrics: dict, pending: list[str] = ()) -> str:
    """The one-line repr of a study (read in logs): its step and the step's accuracy and size; a
    number the step does not hold reads "n/a", never 0.

    Examples
    --------
    >>> study_line(2, 3, {"accuracy": 0.97501, "params": 547})
    'Study(step 2 of 3, accuracy=0.9750, params=547)'
    >>> study_line(0, 1, {})
    'Study(step 0 of 1, accuracy=n/a, params=n/a)'
    >>> study_line(1, 2, {"params": 9}, pending=["accuracy"])
    'Study(step 1 of 2, accuracy=not measured yet, params=9)'
    """
    acc = metrics.get("accuracy")
    shown = f"{acc:.4f}" if isinstance(acc, (int, float)) and acc == acc else "n/a"
    if "accuracy" in pending:
        shown = NOT_MEASURED
    params = "n/a" if metrics.get("params") is None else metrics["params"]
    return f"Study(step {current} of {steps}, accuracy={shown}, params={params})"


def compare_study_steps(study, a: int = 0, b: int = -1):
    """Metrics of two steps of ``study`` side by side, with the ratio b / a.

    Examples
    --------
    >>> import xprune_nb as xp
    >>> study = xp.Study(xp.zoo.load("toy_mlp"), xp.datasets.load("moons"))
    >>> list(study.compare(0, 0).columns)
    ['step 0', 'step 0', 'ratio']
    """
    t = study.timeline
    return compare_steps(t.history[t.index(a, "Study.compare")],
                         t.history[t.index(b, "Study.compare", "b")])


def compare_steps(a: Step, b: Step):
    """Metrics of two steps side by side, with the ratio b / a (a pandas DataFrame)."""
    import pandas as pd

    keys = [k for k in a.metrics if isinstance(a.metrics.get(k), (int, float))]
    # columns from a list, not a dict: comparing a step with itself keeps both columns
    frame = pd.DataFrame([[a.metrics[k], b.metrics.get(k)] for k in keys], index=keys,
                         columns=[f"step {a.index}", f"step {b.index}"], dtype=float)
    frame["ratio"] = frame.iloc[:, 1] / frame.iloc[:, 0].where(frame.iloc[:, 0] != 0)
    return frame
