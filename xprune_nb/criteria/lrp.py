"""LRP criterion: a unit matters as much as the relevance that flows through it.

Layer-wise relevance propagation (Bach et al. 2015) redistributes the model's output for the true
class backwards, layer by layer, conserving the total. Yeom et al. (2021) prune the units that
receive the least relevance over a small reference set; unlike gradients, relevance is bounded by
the output it explains, which keeps rankings stable with few reference examples.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..core.errors import ConfigError
from ..models.mechanisms.lrp import RULES, LRPRunner
from ._relevance import UnitAccumulator, UnitRelevanceMixin, unit_sums
from .base import Criterion, ScoringContext

__all__ = ["LRPCriterion"]


class LRPCriterion(UnitRelevanceMixin, Criterion):
    """Layer-wise relevance of each unit, averaged over the reference set.

    For every reference example the relevance of its true class's logit is propagated back with
    zennit; a unit's relevance is the relevance at its output (summed over spatial positions for
    a conv channel). Scores are the mean over examples of that relevance, in absolute value
    unless ``signed=True`` (Yeom et al. sum it signed). ``per_class_channel_scores`` gives the
    same mean per class. For ``weight`` granularity each weight gets the relevance of its
    connection, ``a_i w_ij R_j / z_j`` under the epsilon rule and its analogue under the others,
    summed over the reference set.

    Works on any model zennit can trace: ``nn.Flatten``, pooling, BatchNorm (merged into the
    preceding layer by a canonizer) and residual additions in the user's own ``forward`` (split
    in proportion to the summands). The model is never modified: LRP runs on a private copy.

    Options
    -------
    rule : {"epsilon", "zplus", "alphabeta", "gamma"}, default "epsilon"
        Rule on every Linear/Conv layer. ``zplus`` is alpha=1, beta=0 (Yeom et al.'s toy
        experiment); ``alphabeta`` uses ``alpha`` and beta = alpha - 1.
    signed : bool, default False
        Average signed relevance instead of its absolute value.
    epsilon : float, default 1e-6
        Epsilon of the epsilon rule and stabiliser of the others.
    gamma : float, default 0.25
    alpha : float, default 2.0

    Cost: one forward and one modified backward per batch; the backward re-runs each layer's
    forward once per rule term (1 for epsilon, 2 for z+, 4 for alpha-beta, 5 for gamma), so
    epsilon costs about two forward+backward equivalents.

    References
    ----------
    Yeom, Seegerer, Lapuschkin, Binder, Wiedemann, Müller, Samek. Pruning by Explaining: A Novel
    Criterion for Deep Neural Network Pruning. Pattern Recognition 115, 107899, 2021.
    Bach et al. On Pixel-Wise Explanations for Non-Linear Classifier Decisions by Layer-Wise
    Relevance Propagation. PLoS ONE 10(7), 2015.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from xprune_nb.criteria import create, ScoringContext
    >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    >>> ctx = ScoringContext(net, "channel", {"0": net[0]}, torch.randn(6, 4),
    ...                      torch.tensor([0, 1, 2, 0, 1, 2]), None, 3, lambda m, x: m(x))
    >>> scores = create("lrp", rule="zplus").score(ctx)
    >>> scores["0"].shape
    torch.Size([8])
    """

    name = "lrp"
    granularities = ("weight", "channel", "block", "recurrent")
    options = {"rule": "epsilon", "signed": False, "epsilon": 1e-6, "gamma": 0.25, "alpha": 2.0}
    choices = {"rule": RULES, "signed": (False, True)}
    class_aware = True
    reference = ("Yeom et al., Pruning by Explaining: A Novel Criterion for Deep Neural Network "
                 "Pruning, Pattern Recognition 2021")

    def __init__(self, **options) -> None:
        super().__init__(**options)
        call = "Study.score('lrp')"
        # infinite or NaN values pass a plain range check but turn every relevance into 0
        # or NaN: the scores would look valid and mean nothing
        for key, low, allowed in (("epsilon", 0.0, "a number > 0 and finite"),
                                  ("gamma", 0.0, "a number >= 0 and finite"),
                                  ("alpha", 1.0, "a number >= 1 and finite")):
            value = self.params[key]
            ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
                  and math.isfinite(value))
            if not ok or value < low or (key == "epsilon" and value == 0):
                raise ConfigError.bad_value(call, key, allowed, value)

    def _runner(self, ctx: ScoringContext) -> LRPRunner:
        p = self.params
        return LRPRunner(ctx.model, ctx.forward, rule=p["rule"], epsilon=float(p["epsilon"]),
                         gamma=float(p["gamma"]), alpha=float(p["alpha"]),
                         call="Study.score('lrp')")

    def _accumulate(self, ctx: ScoringContext) -> UnitAccumulator:
        acc = UnitAccumulator(ctx.num_classes, signed=bool(self.params["signed"]))
        runner = self._runner(ctx)
        names = list(ctx.layers)
        with runner.registered():
            for x, y in ctx.batches():
                out = runner.run(x, y, layers=names)
                for name in names:
                    calls = out.layer_relevance.get(name) or []
                    if not calls:
                        continue
                    is_conv = isinstance(ctx.layers[name], nn.modules.conv._ConvNd)
                    acc.add(name, sum(unit_sums(r, is_conv) for r in calls), y)
                acc.count(y)
        return acc

    def block_scores(self, ctx: ScoringContext) -> dict[str, torch.Tensor]:
        """Relevance flowing into each block's residual branch (``criteria/_blocks.py``)."""
        from ._blocks import block_relevance

        return block_relevance(ctx, self._runner(ctx), signed=bool(self.params["signed"]))

    def recurrent_scores(self, ctx: ScoringContext) -> dict[str, torch.Tensor]:
        """Relevance at each recurrent hidden unit's outputs (``criteria/_recurrent.py``).

        Relevance is propagated with the LRP rules from the logits through the layers after
        the recurrent module, down to its outputs (summed over time steps, directions and final
        states); zennit has no LSTM/GRU rule, so it is not propagated through the recurrence
        itself.
        """
        from ._recurrent import unit_relevance

        return unit_relevance(ctx, self._runner(ctx), signed=bool(self.params["signed"]))

    def weight_scores(self, ctx: ScoringContext) -> dict[str, torch.Tensor]:
        runner = self._runner(ctx)
        names = list(ctx.layers)
        totals: dict[str, torch.Tensor] = {}
        count = 0
        with runner.registered():
            for x, y in ctx.batches():
                out = runner.run(x, y, layers=names, weights=True)
                for name, w in out.weight_relevance.items():
                    w = w.double()
                    totals[name] = w if name not in totals else totals[name] + w
                count += len(y)
        signed = bool(self.params["signed"])
        return {name: ((t if signed else t.abs()) / max(count, 1)).float()
                for name, t in totals.items()}
