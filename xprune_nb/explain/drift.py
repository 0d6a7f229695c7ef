"""Drift along the history: how a model's accuracy and explanations moved away from the original,
measured on a fixed probe set after every step. Pure torch and NumPy, so it costs milliseconds."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..models.mechanisms.model_tools import call_model, logits_of
from .compare import pair_reasons, rank_correlation, topk_iou
from .numbers import finite_mean, missing_note
from .saliency import gradient_saliency

__all__ = ["probe_drift", "probe_saliency", "DriftReport"]


def probe_saliency(model: nn.Module, probe_x: torch.Tensor, probe_y: torch.Tensor, *,
                   forward: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None,
                   chunk: int | None = None) -> tuple[torch.Tensor | None, torch.Tensor]:
    """(saliency, logits) of ``model`` on the probe, ``chunk`` inputs at a time (bounded
    memory). For token inputs (integer ids, or a dict / ``BatchEncoding`` with ``input_ids``
    and an ``attention_mask``) the saliency is per token: the L2 norm of the gradient of the
    true class's logit with respect to the token's embedding (padding 0); ``None`` when no
    ``nn.Embedding`` reads the ids.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> sal, logits = probe_saliency(nn.Linear(4, 3), torch.randn(5, 4), torch.zeros(5), chunk=2)
    >>> tuple(sal.shape), tuple(logits.shape)
    ((5, 4), (5, 3))
    """
    y = torch.as_tensor(probe_y).long()
    x = probe_x if isinstance(probe_x, Mapping) else torch.as_tensor(probe_x)
    step = chunk or max(len(y), 1)
    if isinstance(x, Mapping) or not x.is_floating_point():
        from ..core.errors import ConfigError
        from ..data.batch import take
        from .tokens import token_attribution

        fwd = forward or (lambda m, v: logits_of(call_model(m, v)))
        parts = [take(x, slice(i, i + step)) for i in range(0, len(y), step)]
        with torch.no_grad():
            logits = torch.cat([fwd(model, p).detach().cpu() for p in parts])
        try:
            sal = [torch.as_tensor(token_attribution(model, p, y[i * step:(i + 1) * step],
                                                     "saliency", forward=fwd,
                                                     call="study.drift")[0])
                   for i, p in enumerate(parts)]
        except ConfigError:   # no nn.Embedding reads the ids: no token saliency
            return None, logits
        return torch.cat(sal), logits
    sal, logits = [], []
    for i in range(0, len(x), step):
        s, lo = gradient_saliency(model, x[i:i + step].float(), y[i:i + step], forward)
        sal.append(s.cpu())
        logits.append(lo.cpu())
    return torch.cat(sal), torch.cat(logits)


def probe_drift(model_original: nn.Module, model: nn.Module, probe_x: torch.Tensor,
                probe_y: torch.Tensor, *,
                forward: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None,
                top_k: float = 0.1, num_classes: int | None = None,
                reference: tuple | None = None, same_as_reference: bool = False,
                chunk: int | None = None) -> dict:
    """Accuracy and saliency drift of ``model`` relative to ``model_original`` on a probe set.

    Saliency is the absolute gradient of the true class's logit (``captum.attr.Saliency``'s
    definition, computed directly). Returns ``accuracy``, ``agreement`` (same prediction as the
    original), ``saliency_spearman`` and ``saliency_topk_iou`` (means over the probe inputs
    whose maps rank something), ``saliency_reason`` (why probe inputs were left out of those
    means or why they are NaN; '' when none was) and ``accuracy_per_class`` (a list; NaN for
    classes absent from the probe set).
    ``reference`` is the original's :func:`probe_saliency` when already known (a study computes
    it once); ``same_as_reference`` says ``model`` has the original's weights (no second pass);
    ``chunk`` bounds how many probe inputs go through the model at once.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(4, 3))
    >>> d = probe_drift(net, net, torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2]))
    >>> d["saliency_spearman"], d["agreement"]
    (1.0, 1.0)
    """
    y = torch.as_tensor(probe_y).long()
    sal_o, logits_o = reference or probe_saliency(model_original, probe_x, y, forward=forward,
                                                  chunk=chunk)
    if same_as_reference:
        sal_m, logits_m = sal_o, logits_o
    else:
        sal_m, logits_m = probe_saliency(model, probe_x, y, forward=forward, chunk=chunk)
    pred = logits_m.argmax(dim=1)
    k = num_classes or int(max(logits_m.shape[1], int(y.max()) + 1))
    correct = (pred == y).double()
    counts = torch.bincount(y, minlength=k).double()
    per_class = torch.zeros(k, dtype=torch.float64).index_add_(0, y, correct) / counts.clamp(min=1)
    per_class[counts == 0] = float("nan")
    if sal_o is None or sal_m is None:
        spearman = iou = float("nan")
        reason = ("integer inputs that no nn.Embedding reads have no input gradient"
                  if _is_tokens(probe_x) else "no saliency map")
    else:
        rho, over, reasons = _compare_maps(sal_o, sal_m, _valid(probe_x, sal_o), top_k)
        # a map that ranks nothing (a model whose saliency vanished) is left out of the mean,
        # and the reason says so; NaN only when no probe input has a ranking
        spearman, iou = finite_mean(rho), finite_mean(over)
        reason = missing_note(list(np.where(np.isfinite(rho) & np.isfinite(over), 0.0,
                                            np.nan)), reasons).replace(" inputs n/a",
                                                                       " probe inputs n/a")
    return {
        "accuracy": float(correct.mean()),
        "agreement": float((pred == logits_o.argmax(dim=1)).double().mean()),
        "saliency_spearman": spearman,
        "saliency_topk_iou": iou,
        "saliency_reason": reason,
        "accuracy_per_class": per_class.tolist(),
    }


def _is_tokens(x) -> bool:
    return isinstance(x, Mapping) or not torch.as_tensor(x).is_floating_point()


def _valid(probe_x, maps) -> np.ndarray | None:
    """Real tokens of a padded token probe (``attention_mask != 0``); None otherwise."""
    if isinstance(probe_x, Mapping) and "attention_mask" in probe_x:
        mask = torch.as_tensor(probe_x["attention_mask"]).cpu().numpy() != 0
        return mask if mask.shape == tuple(maps.shape) else None
    return None


def _compare_maps(a, b, valid, top_k: float):
    """Rank correlation, top-k overlap and per-input reasons, over each input's real tokens
    only when ``valid`` (a padding mask) is given."""
    if valid is None:
        return (rank_correlation(a, b), topk_iou(a, b, top_k),
                pair_reasons(a, b, absolute=True))
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    rho, over, reasons = [], [], []
    for ra, rb, v in zip(a, b, valid):
        if not v.any():
            rho.append(np.nan)
            over.append(np.nan)
            reasons.append("no real tokens (all padding)")
            continue
        rho.append(rank_correlation(ra[v][None], rb[v][None])[0])
        over.append(topk_iou(ra[v][None], rb[v][None], top_k)[0])
        reasons.append(pair_reasons(ra[v][None], rb[v][None], absolute=True)[0])
    return np.array(rho), np.array(over), reasons


@dataclass
class DriftReport:
    """The drift table across the history (one row per step) with a plot.

    Build it with :meth:`from_records` from dicts holding the step's own fields (``step``,
    ``label``, ``sparsity``, ...) and the output of :func:`probe_drift`.
    """

    frame: object

    @classmethod
    def from_records(cls, records: Sequence[Mapping],
                     class_names: Sequence[str] | None = None) -> DriftReport:
        """One row per record; ``accuracy_per_class`` becomes ``acc[<class>]`` columns.

        Examples
        --------
        >>> r = DriftReport.from_records([{"step": 0, "accuracy": 0.9,
        ...                                "accuracy_per_class": [1.0, 0.8]}])
        >>> list(r.to_frame().columns)
        ['step', 'accuracy', 'acc[0]', 'acc[1]']
        """
        import pandas as pd

        rows = []
        for rec in records:
            row = {k: v for k, v in rec.items() if k != "accuracy_per_class"}
            for i, acc in enumerate(rec.get("accuracy_per_class") or []):
                name = class_names[i] if class_names is not None and i < len(class_names) else i
                row[f"acc[{name}]"] = acc
            rows.append(row)
        return cls(pd.DataFrame(rows))

    def to_frame(self):
        return self.frame.copy()

    def plot(self, ax=None, x: str | None = None):
        """Accuracy, agreement and saliency similarity vs ``x`` (default: the sparsity or
        fraction pruned when recorded, else the step)."""
        from .plots import plot_drift

        return plot_drift(self.frame, ax=ax, x=x)

    def __repr__(self) -> str:
        return f"DriftReport(steps={len(self.frame)})"

    def _repr_html_(self) -> str:
        from .plots import html_report

        return html_report("Drift on the probe set", {"steps": len(self.frame)}, self.frame,
                           max_rows=50)
