"""Activation criterion: units that rarely fire matter little."""

from __future__ import annotations

import torch

from ..models.mechanisms.model_tools import weight_tensor
from ._hooks import input_feature_norms, output_unit_stats
from .base import Criterion, ScoringContext


class ActivationCriterion(Criterion):
    """Mean absolute activation of each unit over the reference set (Hu et al. 2016 use the
    related "average percentage of zeros"). For ``weight`` granularity, ``|w| · ||x_j||₂``:
    each weight's magnitude times the norm of the input feature it multiplies (Wanda, Sun et
    al., ICLR 2024).

    Examples
    --------
    >>> study.score("activation", samples=256)  # doctest: +SKIP
    """

    name = "activation"
    reference = ("Hu et al., Network Trimming, 2016; Sun et al., A Simple and Effective Pruning "
                 "Approach for Large Language Models (Wanda), ICLR 2024")

    def channel_scores(self, ctx: ScoringContext) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            return output_unit_stats(
                ctx, lambda a, g: a.abs().mean(dim=1).sum(dim=0), backward=False)

    def weight_scores(self, ctx: ScoringContext) -> dict[str, torch.Tensor]:
        norms = input_feature_norms(ctx)
        out = {}
        for name, layer in ctx.layers.items():
            w = weight_tensor(layer).detach().abs()
            n = norms[name]
            if w.dim() > 2:   # conv: weight (out, in/groups, *k); broadcast over kernel positions
                groups = getattr(layer, "groups", 1)
                per_group = w.shape[1]
                n = n.reshape(groups, per_group)
                out_per_group = w.shape[0] // groups
                n = n.repeat_interleave(out_per_group, dim=0)
                n = n.reshape(w.shape[0], per_group, *([1] * (w.dim() - 2)))
            out[name] = w * n
        return out
