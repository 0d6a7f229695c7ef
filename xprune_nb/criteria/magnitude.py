"""Magnitude criterion: units with small weights matter little (Han et al. 2015; Li et al. 2017)."""

from __future__ import annotations

import torch

from .base import Criterion, ScoringContext


class MagnitudeCriterion(Criterion):
    """Norm of each unit's weights (``p=1`` as in Li et al., ICLR 2017, or ``p=2``).

    For ``weight`` granularity each weight's absolute value (Han et al., NeurIPS 2015); for
    ``head`` the norm of the head's query, key and value rows and of its columns of the output
    projection; for ``recurrent`` the norm of every weight a hidden unit owns in all gates,
    layers and directions and in the layers reading it. Needs no data: the cheapest criterion
    and the usual baseline.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from xprune_nb.criteria.base import ScoringContext
    >>> layer = nn.Linear(2, 2)
    >>> with torch.no_grad():
    ...     _ = layer.weight.copy_(torch.tensor([[1.0, -1.0], [0.5, 0.0]]))
    >>> ctx = ScoringContext(layer, "channel", {"fc": layer}, torch.zeros(1, 2),
    ...                      torch.zeros(1, dtype=torch.long), None, 2, lambda m, x: m(x))
    >>> MagnitudeCriterion(p=1).score(ctx)["fc"].tolist()
    [2.0, 0.5]
    """

    name = "magnitude"
    granularities = ("weight", "channel", "head", "block", "recurrent")
    options = {"p": 1}
    choices = {"p": (1, 2)}
    needs_data = False
    read_only = True   # norms of the weights: nothing runs, nothing can change
    reference = "Li et al., Pruning Filters for Efficient ConvNets, ICLR 2017"

    def channel_scores(self, ctx: ScoringContext) -> dict[str, torch.Tensor]:
        p = self.params["p"]
        return {name: layer.weight.detach().flatten(1).norm(p=p, dim=1)
                if not isinstance(layer, torch.nn.Linear)
                else layer.weight.detach().norm(p=p, dim=1)
                for name, layer in ctx.layers.items()}

    def weight_scores(self, ctx: ScoringContext) -> dict[str, torch.Tensor]:
        return {name: layer.weight.detach().abs().clone() for name, layer in ctx.layers.items()}

    def block_scores(self, ctx: ScoringContext) -> dict[str, torch.Tensor]:
        from ._blocks import block_magnitudes

        return block_magnitudes(ctx)

    def head_scores(self, ctx: ScoringContext) -> dict[str, torch.Tensor]:
        # the norm of each head's query/key/value rows and output-projection columns
        from ..models.mechanisms.attention.gates import head_norms

        return head_norms(ctx, p=self.params["p"])

    def recurrent_scores(self, ctx: ScoringContext) -> dict[str, torch.Tensor]:
        # the norm of each hidden unit's rows in every gate, its recurrent and next-layer
        # columns, and its input columns in the layers that read the module
        from ._recurrent import recurrent_magnitudes

        return recurrent_magnitudes(ctx, p=self.params["p"])
