"""Attention-head relevance: how much each head contributes to the explained class."""

from __future__ import annotations

import torch

from ._hooks import per_example_head_gates
from .base import Criterion, ScoringContext

__all__ = ["AttentionCriterion"]


class AttentionCriterion(Criterion):
    """Relevance of each attention head for the true class of the reference examples.

    A gate g on the head's output (g = 1 in the model) is treated as an input feature and
    explained with gradient x input: the head's relevance for example i is
    ``g * d f_y(x_i) / d g`` at g = 1, where ``f_y`` is the logit of the example's true class —
    the first-order estimate of how much that class's logit drops when the head is removed. The
    score is the mean absolute relevance over the reference set (``signed=True``: the mean
    signed relevance); per class it is the mean over that class's examples (``Study.why``).
    This is the head-importance of Michel et al. (NeurIPS 2019) with the explained class's
    logit instead of the loss, which makes it class-specific (``classes=[...]``).

    Works on the heads of ``nn.MultiheadAttention`` modules (also inside
    ``nn.TransformerEncoderLayer``). Cost: one forward+backward pass per reference example
    (vectorised with ``torch.func.vmap``).

    ``relevance="attention"`` scores a head instead by its share of the gradient-weighted
    attention relevance that ``Study.saliency(method="attention_relevance")`` shows (Chefer,
    Gur & Wolf, ICCV 2021): per example, ``sum_ij (dA_h ⊙ A_h)^+`` over the head's attention
    probabilities ``A_h`` and their gradient for the explained class's logit (the signed sum
    with ``signed=True``). It reads any attention whose probabilities
    :mod:`xprune_nb.explain.attention` can capture, one batched backward pass per batch.

    Examples
    --------
    >>> study.score("attention", granularity="head", classes=[3])   # doctest: +SKIP
    """

    name = "attention"
    granularities = ("head",)
    options = {"signed": False, "relevance": "gate"}
    choices = {"signed": (False, True), "relevance": ("gate", "attention")}
    class_aware = True
    reference = ("Michel, Levy, Neubig, Are Sixteen Heads Really Better than One?, NeurIPS "
                 "2019; gradient x input (Shrikumar et al. 2016) on head gates")

    def _relevance(self, ctx: ScoringContext) -> dict[str, torch.Tensor]:
        key = (id(ctx.model), id(ctx.inputs))
        if getattr(self, "_cache_key", None) != key:
            self._cache = (per_example_head_gates(ctx, target="logit")
                           if self.params["relevance"] == "gate"
                           else _attention_relevance(ctx, signed=self.params["signed"]))
            self._cache_key = key
        return self._cache

    def head_scores(self, ctx: ScoringContext) -> dict[str, torch.Tensor]:
        rel = self._relevance(ctx)
        if self.params["signed"]:
            return {k: v.mean(0).float() for k, v in rel.items()}
        return {k: v.abs().mean(0).float() for k, v in rel.items()}

    def per_class_head_scores(self, ctx: ScoringContext) -> dict[str, torch.Tensor]:
        rel = self._relevance(ctx)
        out = {}
        for name, values in rel.items():
            v = values if self.params["signed"] else values.abs()
            table = torch.full((ctx.num_classes, v.shape[1]), float("nan"), dtype=torch.float64)
            for c in range(ctx.num_classes):
                sel = ctx.targets == c
                if sel.any():
                    table[c] = v[sel].mean(0)
            out[name] = table.float()
        return out


def _attention_relevance(ctx: ScoringContext, *, signed: bool) -> dict[str, torch.Tensor]:
    """Per example and head, the head's term of Chefer et al.'s relevance update."""
    from ..explain.attention import capture_attention

    parts: dict[str, list[torch.Tensor]] = {name: [] for name in ctx.layers}
    for x, y in ctx.batches():
        record = capture_attention(ctx.model, x, ctx.forward, call="Study.score",
                                   param="criterion")
        chosen = record.logits.gather(1, y.view(-1, 1).long()).sum()
        grads = torch.autograd.grad(chosen, record.attentions, allow_unused=True)
        seen = {}
        for name, a, g in zip(record.names, record.attentions, grads):
            term = torch.zeros_like(a) if g is None else (g * a).detach().double()
            seen[name] = (term if signed else term.clamp(min=0)).sum((2, 3))
        for name, module in ctx.layers.items():
            heads = getattr(module, "num_heads", None) or 1
            parts[name].append(seen.get(name, torch.zeros(len(y), heads, dtype=torch.float64)))
    return {name: torch.cat(v) for name, v in parts.items()}
