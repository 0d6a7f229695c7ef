"""Attention held fixed and layer norms passing relevance through, for the flow's LRP pass
(see :mod:`.flow`): softmax outputs are constants, so relevance flows through the values only
(Ali et al. 2022)."""

from __future__ import annotations

import math

import torch
from torch import nn

from ...models.mechanisms.lrp import LRPRunner, import_zennit

__all__ = ["FixedAttention", "composite_for", "to_module_attention"]


class FixedAttention(torch.overrides.TorchFunctionMode):
    """Softmax outputs are constants (relevance flows through the values only), and
    ``scaled_dot_product_attention`` is computed explicitly with such weights."""

    _SOFTMAX = (torch.softmax, torch.Tensor.softmax, torch.nn.functional.softmax)

    def __torch_function__(self, func, types_, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self._SOFTMAX:
            return func(*args, **kwargs).detach()
        if func is torch.nn.functional.scaled_dot_product_attention:
            return _sdpa_fixed(*args, **kwargs)
        return func(*args, **kwargs)


def _sdpa_fixed(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                enable_gqa=False):
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = (q @ k.transpose(-2, -1)) * scale
    if is_causal:
        causal = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device)
        scores = scores.masked_fill(causal.triu(1), float("-inf"))
    if attn_mask is not None:
        scores = (scores.masked_fill(~attn_mask, float("-inf"))
                  if attn_mask.dtype == torch.bool else scores + attn_mask)
    return scores.softmax(dim=-1).detach() @ v


def composite_for(runner: LRPRunner):
    """The runner's rules, plus layer norms passing relevance through unchanged."""
    zennit = import_zennit()
    composite = runner.composite
    layer_map = [(nn.LayerNorm, zennit.rules.Pass()), *composite.layer_map]
    return zennit.composites.LayerMapComposite(layer_map=layer_map,
                                               canonizers=composite.canonizers)


def to_module_attention(model: nn.Module) -> None:
    """``nn.MultiheadAttention`` runs its projections functionally (no module hooks, no rules);
    on the private copy it is replaced by the package's equivalent module-based attention."""
    if any(isinstance(m, nn.MultiheadAttention) for m in model.modules()):
        from ...models.mechanisms.attention.sdpa import convert_mha

        convert_mha(model)
