"""Attention maps and rollout of two models on the same inputs, and how far they moved apart.

:func:`compare_attention` records every layer's per-head attention of both models
(:mod:`xprune_nb.models.mechanisms.attention.maps`), rolls it out, and reports the drift numbers
every comparison reports, computed on the rollout maps (rank correlation, top-k overlap,
deletion/insertion AUC, prediction agreement), plus, per layer, how much the heads' mean
attention changed. Layers are matched by module name and heads by their original index, so a
model that lost heads or whole blocks is compared with what is left.

Examples
--------
>>> import torch
>>> from xprune_nb.models import DigitsViT
>>> model = DigitsViT(depth=2).eval()
>>> comp = compare_attention(model, model, torch.rand(2, 1, 8, 8))
>>> float(comp.spearman.mean()), comp.layer_frame()["attention_change"].tolist()
(1.0, [0.0, 0.0])
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..core.errors import ConfigError
from ..models.mechanisms.attention.maps import (
    capture_attention,
    rollout,
    to_input_space,
    token_scores,
)
from ..models.mechanisms.model_tools import call_model, eval_mode, logits_of
from .compare import (
    PerInputDrift,
    deletion_insertion_auc,
    rank_correlation,
    topk_iou,
)

__all__ = ["AttentionComparison", "compare_attention", "attention_maps"]

Forward = Callable[[nn.Module, torch.Tensor], torch.Tensor]


@dataclass
class AttentionComparison(PerInputDrift):
    """Per-head attention and rollout of two models on the same inputs.

    Attributes
    ----------
    inputs, targets, pred_before, pred_after : ndarray
    maps_before, maps_after : dict of str -> ndarray (N, heads, T, T)
        Attention probabilities per layer (module name), rows = queries.
    heads_before, heads_after : dict of str -> tuple of int
        Original index of each remaining head.
    active_before, active_after : dict of str -> ndarray of bool
        False for masked heads (they attend uniformly but contribute nothing).
    rollout_before, rollout_after : ndarray (N, T, T)
    scores_before, scores_after : ndarray shaped like the inputs
        The rollout's token scores mapped onto the inputs (what the drift numbers compare).
    spearman, topk_iou, deletion_*, insertion_* : ndarray (N,)
    """

    inputs: np.ndarray
    targets: np.ndarray
    pred_before: np.ndarray
    pred_after: np.ndarray
    maps_before: dict
    maps_after: dict
    heads_before: dict
    heads_after: dict
    active_before: dict
    active_after: dict
    rollout_before: np.ndarray
    rollout_after: np.ndarray
    scores_before: np.ndarray
    scores_after: np.ndarray
    spearman: np.ndarray
    topk_iou: np.ndarray
    deletion_before: np.ndarray
    deletion_after: np.ndarray
    insertion_before: np.ndarray
    insertion_after: np.ndarray
    class_names: list[str] | None = None
    steps: tuple = (0, -1)
    top_k: float = 0.1
    options: dict = field(default_factory=dict)

    def _maps(self):
        return self.scores_before, self.scores_after

    def layer_frame(self):
        """One row per attention layer: heads before and after, and ``attention_change``: the
        mean total-variation distance between the two models' head-mean attention rows (0 = the
        same, 1 = disjoint; NaN when the layer is gone)."""
        import pandas as pd

        rows = []
        for name, a in self.maps_before.items():
            b = self.maps_after.get(name)
            change = float("nan")
            if b is not None and b.shape[2:] == a.shape[2:]:
                mean_a = a[:, self.active_before[name]].mean(1) if self.active_before[
                    name].any() else a.mean(1)
                mean_b = b[:, self.active_after[name]].mean(1) if self.active_after[
                    name].any() else b.mean(1)
                change = float(0.5 * np.abs(mean_a - mean_b).sum(-1).mean())
            rows.append({"layer": name, "heads_before": int(self.active_before[name].sum()),
                         "heads_after": (int(self.active_after[name].sum())
                                         if b is not None else 0),
                         "attention_change": change})
        return pd.DataFrame(rows)

    def summary(self, measure: bool = True) -> dict[str, float]:
        out = super().summary(measure)
        changes = self.layer_frame()["attention_change"].to_numpy(dtype=float)
        out["attention_change"] = (float(np.nanmean(changes)) if np.isfinite(changes).any()
                                   else float("nan"))
        return out

    def plot(self, ax=None, index: int = 0):
        """For input ``index``: a row per model with the rollout (over the image for image
        inputs) and each layer's head-mean attention matrix (rows = queries). Returns the
        figure."""
        from .attention_plots import plot_attention

        return plot_attention(self, ax=ax, index=index)

    def plot_heads(self, index: int = 0, which: str = "before"):
        """Every head's attention matrix for input ``index``, one row per layer."""
        from .attention_plots import plot_heads

        return plot_heads(self, index=index, which=which)

    def __repr__(self) -> str:
        return (f"AttentionComparison(inputs={len(self.targets)}, steps={self.steps}, "
                f"layers={len(self.maps_before)}->{len(self.maps_after)}, "
                f"{self._summary_text('saliency_rank_correlation', 'agreement')})")

    def _repr_html_(self) -> str:
        from .plots import html_report

        title = (f"Attention rollout comparison, step {self.steps[0]} vs {self.steps[1]}, "
                 f"{len(self.targets)} inputs")
        return (html_report(title, self.summary(), self.to_frame(), notes=self.not_available())
                + self.layer_frame().to_html(float_format=lambda v: f"{v:.4g}"))


def _record(model, x, forward, head_fusion, pool, token_grid, call, param, valid=None):
    rec = capture_attention(model, x, forward, grad=False, call=call, param=param)
    roll = rollout(rec.attentions, active=rec.active, head_fusion=head_fusion)
    scores = to_input_space(token_scores(roll, pool, valid=valid), x, token_grid=token_grid,
                            call=call)
    maps = {n: a.detach().numpy() for n, a in zip(rec.names, rec.attentions)}
    active = {n: a.numpy() for n, a in zip(rec.names, rec.active)}
    heads = dict(zip(rec.names, rec.head_ids))
    return maps, heads, active, roll.numpy(), scores.detach().numpy()


def compare_attention(model_before: nn.Module, model_after: nn.Module, inputs, *, labels=None,
                      forward: Forward | None = None, pool: str = "mean", token_grid=None,
                      head_fusion: str = "mean", class_names: Sequence[str] | None = None,
                      steps: tuple = (0, -1), top_k: float = 0.1,
                      baseline_token: int | None = None, progress=None,
                      call: str = "compare_attention",
                      model_param: str | None = "model_before") -> AttentionComparison:
    """Attention maps and rollout of two models on the same inputs (images or token ids),
    with drift numbers on the rollout (see the module docstring). ``progress(done, total)``
    is called after each of the four passes (maps and deletion curves of each model).
    ``call`` and ``model_param`` are the public call and parameter that messages name."""
    from ..models.mechanisms.attention.maps import POOLS

    def tick(done: int) -> None:
        if progress is not None:
            progress(done, 4)

    if pool not in POOLS:   # checked before any model runs, in the name of the user's call
        raise ConfigError.unknown_name(call, "pool", POOLS, pool)
    if head_fusion not in ("mean", "max", "min"):
        raise ConfigError.unknown_name(call, "head_fusion", ("mean", "max", "min"), head_fusion)
    if isinstance(top_k, bool) or not isinstance(top_k, (int, float)) or not 0 < top_k <= 1:
        raise ConfigError.bad_value(call, "top_k", "a fraction in (0, 1]", top_k)
    forward = forward or (lambda m, t: logits_of(call_model(m, t)))
    named, valid = None, None
    if isinstance(inputs, Mapping):   # a dict / BatchEncoding: ids, with their mask
        from .tokens import token_inputs

        named = token_inputs(inputs, call)
        inputs, valid = named.ids, named.valid
        forward = named.bind(forward)
    x = torch.as_tensor(np.asarray(inputs) if not isinstance(inputs, torch.Tensor) else inputs)
    tokens = not x.is_floating_point()
    if x.dim() < 2 or not len(x):
        raise ConfigError.bad_value(call, "inputs", "a non-empty batch (N, ...)", tuple(x.shape))
    x = x.long() if tokens else x.float()
    with torch.no_grad(), eval_mode(model_before), eval_mode(model_after):
        pred_b = forward(model_before, x).argmax(1)
        pred_a = forward(model_after, x).argmax(1)
    targets = pred_b if labels is None else torch.as_tensor(np.asarray(labels)).long().view(-1)
    if len(targets) != len(x):
        raise ConfigError.bad_value(call, "labels", f"{len(x)} labels", len(targets))
    common = (forward, head_fusion, pool, token_grid, call, model_param, valid)
    tick(0)
    maps_b, heads_b, act_b, roll_b, sc_b = _record(model_before, x, *common)
    tick(1)
    maps_a, heads_a, act_a, roll_a, sc_a = _record(model_after, x, *common)
    tick(2)
    if tokens:
        from .token_perturb import token_deletion_insertion

        given = named.feed(x) if named is not None else x   # ids with their mask
        raw = forward if named is None else (lambda m, t: logits_of(call_model(m, t)))
        del_b, ins_b = token_deletion_insertion(model_before, given, sc_b, targets,
                                                forward=raw, baseline_token=baseline_token)
        tick(3)
        del_a, ins_a = token_deletion_insertion(model_after, given, sc_a, targets,
                                                forward=raw, baseline_token=baseline_token)
    else:
        del_b, ins_b = deletion_insertion_auc(model_before, x, sc_b, targets, forward=forward)
        tick(3)
        del_a, ins_a = deletion_insertion_auc(model_after, x, sc_a, targets, forward=forward)
    tick(4)
    return AttentionComparison(
        inputs=x.numpy(), targets=targets.numpy(), pred_before=pred_b.numpy(),
        pred_after=pred_a.numpy(), maps_before=maps_b, maps_after=maps_a, heads_before=heads_b,
        heads_after=heads_a, active_before=act_b, active_after=act_a, rollout_before=roll_b,
        rollout_after=roll_a, scores_before=sc_b, scores_after=sc_a,
        spearman=rank_correlation(sc_b, sc_a), topk_iou=topk_iou(sc_b, sc_a, top_k),
        deletion_before=del_b, deletion_after=del_a, insertion_before=ins_b,
        insertion_after=ins_a,
        class_names=list(class_names) if class_names is not None else None,
        steps=tuple(steps), top_k=top_k,
        options={"pool": pool, "head_fusion": head_fusion, "token_grid": token_grid})


def attention_maps(study, before: int = 0, after: int = -1, *, inputs=None,
                   labels: Sequence[int] | None = None, n: int = 4, pool: str = "mean",
                   token_grid=None, head_fusion: str = "mean", progress=False,
                   stop=None) -> AttentionComparison:
    """Attention maps and rollout of two steps of a study on the same test rows (``inputs``:
    tensors, row indices of the test split, or ``None`` for ``n`` rows drawn stratified).
    ``progress`` follows the progress protocol (four passes), ``stop`` ends it between them.
    Explanations never change the study."""
    from ..core.progress import make_progress
    from .rows import pick_rows
    from .study import step_models

    call = "Study.attention_maps"
    tick = make_progress(progress, call, "attention maps", stop)
    (b, model_b), (a, model_a) = step_models(study, before, after, call)
    x, y = pick_rows(study.data, inputs, n, "test", seed=study.seed, call=call)
    return compare_attention(model_b, model_a, x, labels=y if labels is None else labels,
                             forward=study.forward, pool=pool, token_grid=token_grid,
                             head_fusion=head_fusion, class_names=study.data.class_names,
                             steps=(b, a), progress=tick, call=call, model_param=None)
