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
    :mod:`xprune_nb.models.mechanisms.attention.maps` can capture, one batched backward pass per
    batch.

    ``relevance="evidence"`` (grounding-aware) keeps only the part of that relevance that
    flows to key tokens inside the evidence: per example, ``sum_ij (dA_h ⊙ A_h)^+ w_j`` where
    ``w_j`` is the share of key token ``j``'s patch inside the example's box (class tokens: 0).
    Heads that carry the class's relevance onto the evidence score high; heads whose relevance
    goes to distractors or background score low and go first. It needs image inputs on a
    square (or ``n x n`` + class token) patch grid and data with evidence boxes
    (``digits_boxes``); same cost as ``relevance="attention"``.

    Examples
    --------
    >>> study.score("attention", granularity="head", classes=[3])   # doctest: +SKIP
    """

    name = "attention"
    granularities = ("head",)
    options = {"signed": False, "relevance": "gate"}
    choices = {"signed": (False, True), "relevance": ("gate", "attention", "evidence")}
    class_aware = True
    reference = ("Michel, Levy, Neubig, Are Sixteen Heads Really Better than One?, NeurIPS "
                 "2019; gradient x input (Shrikumar et al. 2016) on head gates")

    @property
    def wants_evidence(self) -> bool:
        """Whether scoring needs the reference examples' evidence masks (``ctx.evidence``)."""
        return self.params["relevance"] == "evidence"

    def _relevance(self, ctx: ScoringContext) -> dict[str, torch.Tensor]:
        if self.wants_evidence and ctx.evidence is None:
            from ..core.errors import ConfigError

            raise ConfigError.bad_value("Study.score", "relevance", "'evidence' only with the "
                                        "reference examples' evidence masks (data with boxes)",
                                        "no evidence")
        key = (id(ctx.model), id(ctx.inputs))
        if getattr(self, "_cache_key", None) != key:
            self._cache = (per_example_head_gates(ctx, target="logit")
                           if self.params["relevance"] == "gate"
                           else _attention_relevance(ctx, signed=self.params["signed"],
                                                     evidence=self.wants_evidence))
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


def _key_weights(evidence: torch.Tensor, x: torch.Tensor, tokens: int) -> torch.Tensor:
    """Per example, the share of each key token's patch inside the evidence mask ``(N, T)``."""
    from ..core.errors import ConfigError
    from ..models.mechanisms.attention.maps import _grid

    call = "Study.score(criterion='attention', relevance='evidence')"
    if x.dim() != 4:
        raise ConfigError.bad_value(call, "inputs", "images (N, C, H, W)", tuple(x.shape))
    gh, gw, extra = _grid(tokens, x.shape[1:], None, call)
    h, w = x.shape[2:]
    share = torch.nn.functional.avg_pool2d(evidence.double().unsqueeze(1),
                                           (h // gh, w // gw)).flatten(1)
    return torch.cat([torch.zeros(len(x), extra, dtype=torch.float64), share], 1)


def _attention_relevance(ctx: ScoringContext, *, signed: bool,
                         evidence: bool = False) -> dict[str, torch.Tensor]:
    """Per example and head, the head's term of Chefer et al.'s relevance update (with
    ``evidence``: only the part that reaches key tokens inside the example's evidence)."""
    from ..models.mechanisms.attention.maps import capture_attention

    parts: dict[str, list[torch.Tensor]] = {name: [] for name in ctx.layers}
    start = 0
    for x, y in ctx.batches():
        record = capture_attention(ctx.model, x, ctx.forward, call="Study.score",
                                   param="criterion")
        chosen = record.logits.gather(1, y.view(-1, 1).long()).sum()
        grads = torch.autograd.grad(chosen, record.attentions, allow_unused=True)
        seen = {}
        for name, a, g in zip(record.names, record.attentions, grads):
            term = torch.zeros_like(a) if g is None else (g * a).detach().double()
            term = term if signed else term.clamp(min=0)
            if evidence:     # (N, heads, query, key) weighted by each key's share in the box
                keys = _key_weights(ctx.evidence[start:start + len(x)], x, a.shape[-1])
                term = term * keys[:, None, None, :]
            seen[name] = term.sum((2, 3))
        start += len(x)
        for name, module in ctx.layers.items():
            heads = getattr(module, "num_heads", None) or 1
            parts[name].append(seen.get(name, torch.zeros(len(y), heads, dtype=torch.float64)))
    return {name: torch.cat(v) for name, v in parts.items()}
