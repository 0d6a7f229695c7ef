"""Drift metrics: how far two explanations (or two models' predictions) have moved apart.

The per-row metrics of two maps live in :mod:`xprune_nb.explain.map_metrics` (re-exported
here); this module adds the deletion/insertion curves (faithfulness, which cost forward passes)
and :class:`PerInputDrift`, what every before/after comparison of per-input maps shares,
including curves computed on first ask.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from ..core.history import NOT_MEASURED
from ..models.mechanisms.model_tools import eval_mode, logits_of
from .map_metrics import (  # noqa: F401  (_numpy: shared helper; the rest re-exported here)
    _numpy,
    feature_map,
    map_reasons,
    pair_reasons,
    prediction_agreement,
    rank_correlation,
    top_set,
    topk_iou,
)

__all__ = [
    "PerInputDrift",
    "Curve",
    "CURVE_COLUMNS",
    "feature_map",
    "map_reasons",
    "pair_reasons",
    "rank_correlation",
    "top_set",
    "topk_iou",
    "prediction_agreement",
    "deletion_insertion_auc",
]


#: input elements per forward pass of the deletion/insertion curves (27 images of 3x224x224)
_AUC_FORWARD_ELEMENTS = 1 << 22


def deletion_insertion_auc(
    model: nn.Module, inputs, maps, targets, *,
    forward: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None,
    steps: int = 20, baseline: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Deletion and insertion AUC of each explanation for its own model (Petsiuk et al. 2018).

    Features (pixels of an image, with all their channels) are ordered from the most to the
    least relevant according to ``maps``. *Deletion* replaces them with ``baseline`` in that
    order and tracks the softmax probability of the target class; a faithful map makes it fall
    fast, so **lower is better**. *Insertion* starts from the baseline and puts them back;
    **higher is better**. The AUC is the trapezoidal mean over the ``steps + 1`` fractions
    0, 1/steps, ..., 1. All variants of all inputs run batched, in forward passes of at most
    about four million input values (27 images of 224 px; tabular rows all at once). RISE uses a
    blurred image as the insertion baseline; a constant baseline keeps this meaningful for
    tabular data too. The order is by signed relevance (evidence for the target first); equal
    values keep their position order. A map that orders nothing (all zero, constant or with a
    non-finite entry, see :func:`map_reasons`) gets NaN, not the AUC of the pixel order.

    Returns
    -------
    deletion, insertion : ndarray of shape (n,)

    References
    ----------
    Petsiuk, Das, Saenko. RISE: Randomized Input Sampling for Explanation of Black-box Models.
    BMVC 2018.
    """
    forward = forward or (lambda m, x: logits_of(m(x)))
    x = torch.as_tensor(_numpy(inputs), dtype=torch.float32)
    t = torch.as_tensor(_numpy(targets)).long()
    n = x.shape[0]
    # non-finite entries are masked out of the ordering here and NaN'd below
    relevance = torch.nan_to_num(torch.as_tensor(feature_map(maps)))      # (n, features)
    image = x.dim() == 4
    feats = relevance.shape[1]
    order = torch.argsort(-relevance, dim=1, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(feats).expand(n, feats))
    fractions = torch.linspace(0, 1, steps + 1)
    cut = torch.round(fractions * feats).long()               # features changed at each step
    changed = rank.unsqueeze(1) < cut.view(1, -1, 1)          # (n, steps+1, features)
    if image:
        changed = changed.view(n, steps + 1, 1, *x.shape[2:])
    else:
        changed = changed.view(n, steps + 1, *x.shape[1:])
    xs = x.unsqueeze(1).expand(n, steps + 1, *x.shape[1:])
    base = torch.full_like(xs, baseline)
    deleted = torch.where(changed, base, xs)
    inserted = torch.where(changed, xs, base)
    batch = torch.cat([deleted, inserted]).reshape(-1, *x.shape[1:])
    # 2 x (steps + 1) variants per input: 336 images for 8 inputs, several GB of ResNet-50
    # activations in one pass; bounded chunks keep the peak near one batch of the model's
    rows = max(1, _AUC_FORWARD_ELEMENTS // max(1, batch[0].numel()))
    with torch.no_grad(), eval_mode(model):
        logits = torch.cat([forward(model, batch[i:i + rows]).double()
                            for i in range(0, len(batch), rows)])
        probs = torch.softmax(logits, dim=1)
    probs = probs.reshape(2, n, steps + 1, -1)
    idx = t.view(1, n, 1, 1).expand(2, n, steps + 1, 1)
    curve = probs.gather(3, idx).squeeze(3).numpy()
    width = np.diff(fractions.double().numpy())
    auc = ((curve[..., 1:] + curve[..., :-1]) / 2 * width).sum(axis=2)
    bad = np.array([bool(r) for r in map_reasons(maps)])
    auc[:, bad] = np.nan
    return auc[0], auc[1]


#: the faithfulness numbers of a comparison: attribute name -> column name
CURVE_COLUMNS = {"deletion_before": "deletion_auc_before", "deletion_after": "deletion_auc_after",
                 "insertion_before": "insertion_auc_before",
                 "insertion_after": "insertion_auc_after"}


def _deferred(column) -> bool:
    """Whether a frame column holds "not measured yet" instead of numbers."""
    return len(column) > 0 and isinstance(column.iloc[0], str) and column.iloc[0] == NOT_MEASURED


class Curve:
    """A faithfulness number of a comparison (one of :data:`CURVE_COLUMNS`), computed on first
    read.

    Used as the default of a dataclass field (Python's descriptor-typed fields): the
    constructor stores a given array; when none was given and the comparison holds a deferred
    computation (:meth:`PerInputDrift.defer_curves`), the first read runs it for all four
    numbers at once (:meth:`PerInputDrift.measure_curves`). Until then the comparison's
    displays show "not measured yet".
    """

    def __set_name__(self, owner, name: str) -> None:
        self.slot = "_curve_" + name

    def __get__(self, obj, owner=None):
        if obj is None:        # the dataclass default
            return None
        if obj.__dict__.get(self.slot) is None and obj.curves_pending:
            obj.measure_curves()
        return obj.__dict__.get(self.slot)

    def __set__(self, obj, value) -> None:
        obj.__dict__[self.slot] = value


class PerInputDrift:
    """What every before/after comparison of per-input maps shares (saliency, attention,
    tokens): the prediction agreement, class labels, and one row per input with the drift
    numbers under their glossary names (``explain/glossary.py``).

    Subclasses are dataclasses with ``targets``, ``pred_before``, ``pred_after``,
    ``spearman``, ``topk_iou``, ``deletion_before/after``, ``insertion_before/after`` and
    ``class_names``; ``completeness_before/after`` are used when present.

    The deletion and insertion curves cost ``2 x 21`` forward passes per input per model, more
    than the maps themselves for cheap methods; a comparison may hold them as a deferred
    computation (:meth:`defer_curves`, :class:`Curve` fields). Reading one of them,
    :meth:`to_frame`, :meth:`summary`, :meth:`plot` or :meth:`measure_curves` computes them
    then; the displays (``_repr_html_``, the panel) show "not measured yet" instead.
    """

    #: leading columns that are labels, not drift numbers
    _label_columns: tuple[str, ...] = ("target", "pred_before", "pred_after")

    @property
    def curves_pending(self) -> bool:
        """True while the deletion/insertion curves are deferred and not computed yet."""
        return self.__dict__.get("_curves_later") is not None

    def defer_curves(self, compute: Callable[[], tuple]) -> None:
        """Compute the deletion/insertion numbers on first ask: ``compute()`` returns
        ``(deletion_before, deletion_after, insertion_before, insertion_after)``."""
        self.__dict__["_curves_later"] = compute

    def measure_curves(self):
        """Compute the deferred deletion/insertion curves now (nothing if they are there).
        An interrupted or failed computation leaves them deferred. Returns ``self``.

        Examples
        --------
        >>> import xprune_nb as xp
        >>> study = xp.Study(xp.zoo.load("digits_cnn"), xp.datasets.load("digits"))
        >>> comp = study.saliency(0, 0, n=2)
        >>> comp.curves_pending, comp.measure_curves().curves_pending
        (True, False)
        """
        compute = self.__dict__.get("_curves_later")
        if compute is not None:
            values = compute()
            for name, value in zip(CURVE_COLUMNS, values):
                setattr(self, name, np.asarray(value, dtype=np.float64))
            self.__dict__["_curves_later"] = None
        return self

    def __getstate__(self) -> dict:
        # a pickled comparison carries numbers, not a computation bound to a live study
        self.measure_curves()
        state = dict(self.__dict__)
        state.pop("_curves_later", None)
        return state

    @property
    def agreement(self) -> float:
        """Fraction of inputs on which both models predict the same class."""
        return prediction_agreement(self.pred_before, self.pred_after)

    def label(self, index) -> str:
        index = int(index)
        if self.class_names and 0 <= index < len(self.class_names):
            return str(self.class_names[index])
        return str(index)

    def _leading_columns(self) -> dict:
        return {}

    def _maps(self):
        """The two maps the drift numbers compare (``before``/``after`` by default)."""
        return self.before, self.after

    def reasons(self) -> list[str]:
        """Per input, why a drift number of that row is NaN ('' where every number is there):
        a map that is all zero, constant or non-finite ranks nothing (:func:`map_reasons`)."""
        before, after = self._maps()
        signed, absolute = pair_reasons(before, after), pair_reasons(before, after,
                                                                     absolute=True)
        return [s or a for s, a in zip(signed, absolute)]

    def to_frame(self):
        """One row per input: target, both predictions, every drift number, and ``reason``
        (why a number of that row is NaN; empty where none is). Computes deferred curves."""
        return self._frame(measure=True)

    def _frame(self, measure: bool):
        """:meth:`to_frame`; with ``measure=False`` deferred curves stay deferred and their
        columns say "not measured yet" (for displays)."""
        import pandas as pd

        if measure or not self.curves_pending:
            curves = {col: getattr(self, name) for name, col in CURVE_COLUMNS.items()}
        else:
            curves = {col: [NOT_MEASURED] * len(self.targets) for col in CURVE_COLUMNS.values()}
        frame = pd.DataFrame({
            **self._leading_columns(),
            "target": [self.label(t) for t in self.targets],
            "pred_before": [self.label(p) for p in self.pred_before],
            "pred_after": [self.label(p) for p in self.pred_after],
            "saliency_rank_correlation": self.spearman, "saliency_topk_iou": self.topk_iou,
            **curves})
        for name in self._extra_columns():
            frame[name] = getattr(self, name)
        frame["reason"] = self.reasons()
        frame.index.name = "input"
        return frame

    def _extra_columns(self) -> list[str]:
        """Per-input numbers a method adds when it has them (completeness, conservation)."""
        names = ("completeness_before", "completeness_after", "conserved_share_before",
                 "conserved_share_after", "absorbed_share_before", "absorbed_share_after")
        return [n for n in names if getattr(self, n, None) is not None]

    def _numbers(self, measure: bool = True):
        """The drift-number columns; with ``measure=False`` the "not measured yet" ones stay
        as those words (no number to average)."""
        return self._frame(measure).drop(columns=[*self._leading_columns(),
                                                  *self._label_columns, "reason"])

    def summary(self, measure: bool = True) -> dict[str, float]:
        """Mean of every drift number over the inputs that have it, plus the prediction
        agreement; NaN where no input has it (:meth:`not_available` says why).

        ``measure=False`` (the displays) leaves deferred curves deferred: their entries are
        the words "not measured yet" instead of a number."""
        from .numbers import finite_mean

        out: dict = {"agreement": self.agreement}
        for k, v in self._numbers(measure).items():
            out[k] = NOT_MEASURED if _deferred(v) else finite_mean(v)
        return out

    def not_available(self, measure: bool = True) -> dict[str, str]:
        """For each drift number that some inputs lack: how many and why, e.g.
        ``{"saliency_rank_correlation": "1 of 8 inputs n/a (after: all-zero map)"}``. The
        summary's means leave those inputs out; this says so."""
        from .numbers import missing_note

        reasons = self.reasons()
        out = {}
        for k, v in self._numbers(measure).items():
            if _deferred(v):
                continue
            note = missing_note(list(v), reasons)
            if note:
                out[k] = note
        return out

    def _summary_text(self, *names: str) -> str:
        """``name=value`` for the repr, ``n/a: reason`` where the mean is missing (and "not
        measured yet" for deferred curves: a repr computes nothing)."""
        from .numbers import shown

        s, gone = self.summary(measure=False), self.not_available(measure=False)
        return ", ".join(f"{n}=" + (s[n] if isinstance(s[n], str) else shown(s[n], gone.get(n)))
                         for n in names)

    def _summary_html(self, title: str) -> str:
        from .plots import html_report

        # a display computes nothing: deferred curves say "not measured yet"
        return html_report(title, self.summary(measure=False), self._frame(measure=False),
                           notes=self.not_available(measure=False))
