"""Random criterion: the control every other criterion must beat."""

from __future__ import annotations

import torch

from .base import Criterion, ScoringContext


class RandomCriterion(Criterion):
    """Uniform random scores, drawn from the study's seed (same seed, same scores).

    Examples
    --------
    >>> from torch import nn
    >>> import torch
    >>> from xprune_nb.criteria.base import ScoringContext
    >>> layer = nn.Linear(3, 4)
    >>> ctx = ScoringContext(layer, "channel", {"fc": layer}, torch.zeros(1, 3),
    ...                      torch.zeros(1, dtype=torch.long), None, 4, lambda m, x: m(x))
    >>> RandomCriterion().score(ctx)["fc"].shape
    torch.Size([4])
    """

    name = "random"
    granularities = ("weight", "channel", "head", "block", "recurrent")
    needs_data = False
    reference = "the standard control (e.g. Blalock et al., What is the State of Neural " \
                "Network Pruning?, MLSys 2020)"

    def _draw(self, ctx: ScoringContext, shape_of) -> dict[str, torch.Tensor]:
        gen = torch.Generator().manual_seed(int(ctx.seed))
        return {name: torch.rand(shape_of(layer), generator=gen)
                for name, layer in ctx.layers.items()}

    def channel_scores(self, ctx: ScoringContext) -> dict[str, torch.Tensor]:
        return self._draw(ctx, lambda layer: (layer.weight.shape[0],))

    def weight_scores(self, ctx: ScoringContext) -> dict[str, torch.Tensor]:
        return self._draw(ctx, lambda layer: tuple(layer.weight.shape))

    def head_scores(self, ctx: ScoringContext) -> dict[str, torch.Tensor]:
        from ..models.mechanisms.attention.discovery import head_count

        return self._draw(ctx, lambda module: (head_count(module),))

    def block_scores(self, ctx: ScoringContext) -> dict[str, torch.Tensor]:
        return self._draw(ctx, lambda module: (1,))

    def recurrent_scores(self, ctx: ScoringContext) -> dict[str, torch.Tensor]:
        return self._draw(ctx, lambda module: (module.hidden_size,))
