"""Gradient-based criteria: how much the loss reacts to a unit (sensitivity, Taylor)."""

from __future__ import annotations

import torch

from ..models.mechanisms.model_tools import weight_tensor
from ._hooks import output_unit_stats, per_example_head_gates, per_example_weight_stats
from .base import Criterion, ScoringContext


class GradientCriterion(Criterion):
    """Gradient sensitivity: mean absolute gradient of the loss w.r.t. each unit's output.

    For ``weight`` granularity, the absolute gradient of each reference example's loss w.r.t.
    each weight, averaged over the examples (Mozer & Smolensky 1989; Yeom et al. 2021 use it as
    a baseline).

    Examples
    --------
    >>> import xprune_nb as xp   # doctest: +SKIP
    >>> study.score("gradient", samples=128)  # doctest: +SKIP
    """

    name = "gradient"
    reference = "Mozer & Smolensky, Skeletonization, NeurIPS 1989"

    granularities = ("weight", "channel", "block")

    def channel_scores(self, ctx: ScoringContext) -> dict[str, torch.Tensor]:
        return output_unit_stats(
            ctx, lambda a, g: g.abs().mean(dim=1).sum(dim=0), backward=True)

    def block_scores(self, ctx: ScoringContext) -> dict[str, torch.Tensor]:
        # the loss's derivative w.r.t. a gate on the block's residual branch, over the
        # reference set (Mozer & Smolensky's skeletonization relevance)
        from ._blocks import per_example_block_gates

        return {k: g.mean().abs() for k, g in per_example_block_gates(ctx).items()}

    def weight_scores(self, ctx: ScoringContext) -> dict[str, torch.Tensor]:
        return per_example_weight_stats(ctx, lambda layer, g: g.abs())


class TaylorCriterion(Criterion):
    """First-order Taylor estimate of the loss change when a unit is removed.

    Channels: per example, the absolute value of the mean over positions of activation ×
    gradient, averaged over the reference set (Molchanov et al., ICLR 2017). Weights:
    ``|w · dL_i/dw|`` averaged over the reference examples i (per-example gradients: summed
    over a trained model's data they nearly cancel). Recurrent hidden units: per example,
    ``|sum of h · dL_i/dh|`` over the unit's outputs (every time step and direction, and the
    final states), from one gate per unit (``criteria/_recurrent.py``).

    Examples
    --------
    >>> study.score("taylor", granularity="channel", samples=256)  # doctest: +SKIP
    """

    name = "taylor"
    granularities = ("weight", "channel", "head", "block", "recurrent")
    reference = ("Molchanov et al., Pruning Convolutional Neural Networks for Resource "
                 "Efficient Inference, ICLR 2017")

    def channel_scores(self, ctx: ScoringContext) -> dict[str, torch.Tensor]:
        return output_unit_stats(
            ctx, lambda a, g: (a * g).mean(dim=1).abs().sum(dim=0), backward=True)

    def weight_scores(self, ctx: ScoringContext) -> dict[str, torch.Tensor]:
        weights = {name: weight_tensor(layer).detach() for name, layer in ctx.layers.items()}
        return per_example_weight_stats(ctx, lambda layer, g: (weights[layer] * g).abs())

    def head_scores(self, ctx: ScoringContext) -> dict[str, torch.Tensor]:
        return {name: g.abs().mean(0).float()
                for name, g in per_example_head_gates(ctx, target="loss").items()}

    def block_scores(self, ctx: ScoringContext) -> dict[str, torch.Tensor]:
        # first-order Taylor estimate of the loss change from skipping the block, per example
        from ._blocks import per_example_block_gates

        return {k: g.abs().mean() for k, g in per_example_block_gates(ctx).items()}

    def recurrent_scores(self, ctx: ScoringContext) -> dict[str, torch.Tensor]:
        # per example, |sum over a hidden unit's outputs (time steps, directions, final
        # states) of h * dL/dh|: the first-order loss change of removing it, via unit gates
        from ._recurrent import per_example_unit_gates

        return {k: g.abs().mean(0).float() for k, g in per_example_unit_gates(ctx).items()}
