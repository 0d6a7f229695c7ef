"""Token models before vs after pruning: attributions per token, shown as highlighted text.

:func:`compare_token_saliency` and :func:`compare_token_shapley` explain the same token ids under
two models for the same target classes (:mod:`xprune_nb.explain.tokens` does the attribution)
and report the drift numbers every comparison reports (rank correlation, top-k overlap,
deletion/insertion AUC over tokens, completeness or efficiency). ``compare_saliency`` and
``compare_shapley`` route integer inputs here, so ``Study.saliency`` / ``Study.shapley`` on a
token model give a :class:`TokenComparison`.

Examples
--------
>>> import torch
>>> from torch import nn
>>> net = nn.Sequential(nn.Embedding(10, 4), nn.Flatten(), nn.Linear(12, 2))
>>> comp = compare_token_saliency(net, net, torch.tensor([[1, 2, 3]]),
...                               method="integrated_gradients", vocab=list("abcdefghij"))
>>> comp.tokens, float(comp.spearman[0])
([['b', 'c', 'd']], 1.0)
>>> "<span" in comp._repr_html_()
True
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..core.errors import ConfigError
from ..models.mechanisms.model_tools import eval_mode, logits_of
from .compare import PerInputDrift, pair_reasons, rank_correlation, topk_iou
from .token_perturb import token_deletion_insertion, token_shapley
from .tokens import _baseline, token_attribution, token_inputs

__all__ = ["TokenComparison", "compare_token_saliency", "compare_token_shapley",
           "highlight_html", "decode"]

Forward = Callable[[nn.Module, torch.Tensor], torch.Tensor]


def decode(ids: np.ndarray, vocab=None, call: str = "study.saliency") -> list[list[str]]:
    """Token strings of each row: ``vocab`` is a list (index = id), a mapping id -> string or
    a callable(list of ids) -> list of strings (e.g. a tokenizer's ``convert_ids_to_tokens``)."""
    rows = np.asarray(ids).tolist()
    if vocab is None:
        return [[str(t) for t in row] for row in rows]
    try:
        if callable(vocab):
            return [[str(t) for t in vocab(row)] for row in rows]
        if isinstance(vocab, Mapping):
            return [[str(vocab.get(t, t)) for t in row] for row in rows]
        return [[str(vocab[t]) for t in row] for row in rows]
    except (IndexError, KeyError, TypeError) as exc:
        raise ConfigError.bad_value(call, "vocab", "a list indexed by token id, a dict or a "
                                    "callable(ids) -> strings", type(vocab).__name__) from exc


def _span(token: str, value: float, scale: float) -> str:
    alpha = min(abs(value) / scale, 1.0) if scale > 0 else 0.0
    # red: pushes towards the explained class; blue: against it
    rgb = "220,50,47" if value >= 0 else "38,139,210"
    return (f"<span title='{value:+.4g}' style='background:rgba({rgb},{alpha:.2f});"
            f"padding:1px 2px;margin:1px;border-radius:3px'>{html.escape(token)}</span>")


def highlight_html(tokens: Sequence[str], values, scale: float | None = None) -> str:
    """One line of text with each token's background shaded by its attribution.

    Examples
    --------
    >>> highlight_html(["<b>", "ok"], [1.0, -0.5]).count("&lt;b&gt;")
    1
    """
    values = np.asarray(values, dtype=np.float64)
    scale = float(np.abs(values).max()) if scale is None else scale
    return " ".join(_span(t, float(v), scale) for t, v in zip(tokens, values))


@dataclass
class TokenComparison(PerInputDrift):
    """Attributions of the same token ids under two models, one score per token position.

    Attributes
    ----------
    method : str
    ids : ndarray (N, L) of int
    tokens : list of list of str
    targets, pred_before, pred_after : ndarray of int
    before, after : ndarray (N, L)
    spearman, topk_iou : ndarray (N,)
    deletion_before, deletion_after, insertion_before, insertion_after : ndarray (N,)
    completeness_before, completeness_after : ndarray or None
        Signed: integrated gradients ``sum - (f(x) - f(baseline))``; Shapley: the efficiency
        gap ``sum - (f(x) - f(baseline))``.
    """

    method: str
    ids: np.ndarray
    tokens: list[list[str]]
    targets: np.ndarray
    before: np.ndarray
    after: np.ndarray
    pred_before: np.ndarray
    pred_after: np.ndarray
    spearman: np.ndarray
    topk_iou: np.ndarray
    deletion_before: np.ndarray
    deletion_after: np.ndarray
    insertion_before: np.ndarray
    insertion_after: np.ndarray
    completeness_before: np.ndarray | None = None
    completeness_after: np.ndarray | None = None
    class_names: list[str] | None = None
    steps: tuple = (0, -1)
    top_k: float = 0.1
    options: dict = field(default_factory=dict)
    #: (N, L) bool: real tokens (``attention_mask != 0``); padding is left out of every drift
    #: number and every display. None: every position is a token.
    valid: np.ndarray | None = None

    def shown(self, i: int) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Row ``i``'s real tokens and their scores before and after (padding left out)."""
        keep = (np.ones(len(self.tokens[i]), dtype=bool) if self.valid is None
                else np.asarray(self.valid[i], dtype=bool))
        return ([t for t, k in zip(self.tokens[i], keep) if k],
                np.asarray(self.before[i])[keep], np.asarray(self.after[i])[keep])

    def reasons(self) -> list[str]:
        """Per input, why a drift number is NaN, judged on its real tokens only."""
        if self.valid is None:
            return super().reasons()
        out = []
        for i in range(len(self.tokens)):
            _, before, after = self.shown(i)
            if not len(before):
                out.append("no real tokens (all padding)")
                continue
            signed = pair_reasons(before[None], after[None])[0]
            out.append(signed or pair_reasons(before[None], after[None], absolute=True)[0])
        return out

    def with_vocab(self, vocab) -> TokenComparison:
        """The same comparison with token strings from ``vocab`` (see :func:`decode`)."""
        from dataclasses import replace

        return replace(self, tokens=decode(self.ids, vocab))

    def _leading_columns(self) -> dict:
        return {"text": [" ".join(self.shown(i)[0]) for i in range(len(self.tokens))]}

    def plot(self, ax=None, max_inputs: int = 6):
        """Highlighted tokens drawn with matplotlib: per input a line before and a line after
        (red: for the target class, blue: against; one colour scale per input). Returns the
        figure."""
        import matplotlib.pyplot as plt

        rows = min(max_inputs, len(self.ids))
        fig = ax.figure if ax is not None else plt.figure(figsize=(9, 0.9 * rows + 0.4))
        ax = ax if ax is not None else fig.add_subplot(1, 1, 1)
        ax.set_axis_off()
        line = 1.0 / (2 * rows + 1)
        for i in range(rows):
            shown, before, after = self.shown(i)
            scale = max(np.abs(before).max(initial=0), np.abs(after).max(initial=0), 1e-12)
            for k, (name, vals, pred) in enumerate((("before", before, self.pred_before[i]),
                                                    ("after", after, self.pred_after[i]))):
                y = 1 - line * (2 * i + k + 1)
                ax.text(0, y, f"#{i} {name} (target {self.label(self.targets[i])}, pred "
                        f"{self.label(pred)}):", fontsize=8, va="center",
                        transform=ax.transAxes)
                x = 0.32
                for tok, v in zip(shown, vals):
                    color = (0.86, 0.2, 0.18) if v >= 0 else (0.15, 0.55, 0.82)
                    ax.text(x, y, tok, fontsize=9, va="center", transform=ax.transAxes,
                            bbox={"facecolor": color, "alpha": min(abs(v) / scale, 1.0),
                                  "edgecolor": "none", "pad": 1.5})
                    x += 0.012 * (len(tok) + 2)
        ax.set_title(f"{self.method}: step {self.steps[0]} vs {self.steps[1]}", fontsize=9)
        return fig

    def __repr__(self) -> str:
        return (f"TokenComparison(method={self.method!r}, inputs={len(self.ids)}, "
                f"steps={self.steps}, agreement={self.agreement:.3f}, "
                f"{self._summary_text('saliency_rank_correlation')})")

    def _repr_html_(self) -> str:
        from .plots import html_report

        lines, reasons = [], self.reasons()
        for i in range(min(len(self.ids), 20)):
            shown, before, after = self.shown(i)
            scale = max(float(np.abs(before).max(initial=0)),
                        float(np.abs(after).max(initial=0)))
            lines.append(
                f"<tr><td>#{i} target {html.escape(self.label(self.targets[i]))}</td><td>"
                f"before (pred {html.escape(self.label(self.pred_before[i]))}): "
                f"{highlight_html(shown, before, scale)}<br>"
                f"after (pred {html.escape(self.label(self.pred_after[i]))}): "
                f"{highlight_html(shown, after, scale)}"
                + (f"<br><i>n/a: {html.escape(reasons[i])}</i>" if reasons[i] else "")
                + "</td></tr>")
        title = (f"Token attributions ({self.method}), step {self.steps[0]} vs {self.steps[1]},"
                 f" {len(self.ids)} inputs (red: for the target class, blue: against)")
        return (html_report(title, self.summary(), notes=self.not_available())
                + "<table>" + "".join(lines) + "</table>"
                + self.to_frame().drop(columns=["text"]).to_html(
                    float_format=lambda v: f"{v:.4g}", na_rep="n/a"))


def _call_forward(model: nn.Module, x) -> torch.Tensor:
    """Logits of ``model`` on ids, or on a dict of named inputs given as keywords."""
    return logits_of(model(**x) if isinstance(x, Mapping) else model(x))


def _predict(model_b, model_a, x, labels, forward, call):
    tokens = token_inputs(x, call)
    fed = tokens.feed(tokens.ids)
    with torch.no_grad(), eval_mode(model_b), eval_mode(model_a):
        pred_b, pred_a = forward(model_b, fed).argmax(1), forward(model_a, fed).argmax(1)
    targets = pred_b if labels is None else torch.as_tensor(np.asarray(labels)).long().view(-1)
    if len(targets) != len(tokens.ids):
        raise ConfigError.bad_value(call, "labels", f"{len(tokens.ids)} labels", len(targets))
    return pred_b, pred_a, targets


def _per_row(fn, before, after, valid, *args) -> np.ndarray:
    """A drift number per input over its real tokens only (padding left out)."""
    return np.array([fn(b[v][None], a[v][None], *args)[0] if v.any() else np.nan
                     for b, a, v in zip(before, after, valid)], dtype=np.float64)


def _build(method, x, targets, before, after, pred_b, pred_a, model_b, model_a, forward,
           baseline, top_k, vocab, call, **extra) -> TokenComparison:
    tokens = token_inputs(x, call)
    ids, valid = tokens.ids, tokens.valid.numpy()
    before = np.asarray(before, dtype=np.float64)
    after = np.asarray(after, dtype=np.float64)
    del_b, ins_b = token_deletion_insertion(model_b, x, before, targets, forward=forward,
                                            baseline_token=baseline)
    del_a, ins_a = token_deletion_insertion(model_a, x, after, targets, forward=forward,
                                            baseline_token=baseline)
    return TokenComparison(
        method=method, ids=ids.numpy(), tokens=decode(ids.numpy(), vocab, call),
        targets=targets.numpy(), before=before, after=after, pred_before=pred_b.numpy(),
        pred_after=pred_a.numpy(), spearman=_per_row(rank_correlation, before, after, valid),
        topk_iou=_per_row(topk_iou, before, after, valid, top_k), deletion_before=del_b,
        deletion_after=del_a, insertion_before=ins_b, insertion_after=ins_a, top_k=top_k,
        valid=None if valid.all() else valid, **extra)


def compare_token_saliency(model_before: nn.Module, model_after: nn.Module, ids, *,
                           labels=None, method: str = "integrated_gradients",
                           forward: Forward | None = None,
                           class_names: Sequence[str] | None = None, steps: tuple = (0, -1),
                           top_k: float = 0.1, vocab=None, **method_options) -> TokenComparison:
    """Token attributions of two models for the same ids and targets (labels, else the first
    model's predictions). Methods: ``saliency``, ``integrated_gradients`` (default when
    called directly), ``attention_relevance``, ``attention_rollout``; ``baseline_token`` is the
    id that deletion/insertion start from (default: the model's padding id) and, when given,
    integrated gradients too (default: a zero word embedding, see
    :mod:`xprune_nb.explain.tokens`)."""
    call = "study.saliency"
    forward = forward or _call_forward
    x = ids if isinstance(ids, Mapping) else torch.as_tensor(ids)
    token_inputs(x, call)   # checked before any model runs
    baseline = _baseline(method_options, call)
    pred_b, pred_a, targets = _predict(model_before, model_after, x, labels, forward, call)
    before, comp_b = token_attribution(model_before, x, targets, method, forward=forward,
                                       call=call, **method_options)
    after, comp_a = token_attribution(model_after, x, targets, method, forward=forward,
                                      call=call, **method_options)
    return _build(method, x, targets, before, after, pred_b, pred_a, model_before, model_after,
                  forward, baseline, top_k, vocab, call, completeness_before=comp_b,
                  completeness_after=comp_a,
                  class_names=list(class_names) if class_names is not None else None,
                  steps=tuple(steps), options=dict(method_options))


def compare_token_shapley(model_before: nn.Module, model_after: nn.Module, ids, *,
                          labels=None, explainer: str = "auto", output: str = "logits",
                          forward: Forward | None = None, baseline_token: int | None = None,
                          class_names: Sequence[str] | None = None, seed: int = 0,
                          steps: tuple = (0, -1), permutations: int = 16, top_k: float = 0.1,
                          vocab=None) -> TokenComparison:
    """Shapley values of token positions (against ``baseline_token``) under two models, for
    each row's target class; ``completeness_*`` holds each row's signed efficiency gap for
    that class (0 up to rounding: both estimators are efficient by construction)."""
    call = "study.shapley"
    forward = forward or _call_forward
    x = ids if isinstance(ids, Mapping) else torch.as_tensor(
        np.asarray(ids) if not isinstance(ids, torch.Tensor) else ids)
    token_inputs(x, call)   # checked before any model runs
    pred_b, pred_a, targets = _predict(model_before, model_after, x, labels, forward, call)
    common = dict(forward=forward, baseline_token=baseline_token, explainer=explainer,
                  permutations=permutations, seed=seed, output=output, call=call)
    phi_b, base_b, fx_b, used = token_shapley(model_before, x, **common)
    phi_a, base_a, fx_a, _ = token_shapley(model_after, x, **common)
    rows = np.arange(len(targets))
    t = targets.numpy()
    before, after = phi_b[rows, :, t], phi_a[rows, :, t]
    # signed, for the explained class, as every completeness column is
    gap_b = (phi_b.sum(1) - (fx_b - base_b))[rows, t]
    gap_a = (phi_a.sum(1) - (fx_a - base_a))[rows, t]
    return _build(f"shapley ({used})", x, targets, before, after, pred_b, pred_a, model_before,
                  model_after, forward, baseline_token, top_k, vocab, call,
                  completeness_before=gap_b, completeness_after=gap_a,
                  class_names=list(class_names) if class_names is not None else None,
                  steps=tuple(steps), options={"output": output, "permutations": permutations,
                                               "baseline_token": baseline_token})
