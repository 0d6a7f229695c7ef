"""A bias-aware criterion: units whose relevance depends on the sensitive group go first.

XTranPrune (Ghadiri, Pagnucco & Song, MICCAI 2024) prunes the nodes of a vision transformer that
an explanation method finds most relevant to a *sensitive-attribute* model (trained to predict
the skin type) while a performance mask keeps the nodes most relevant to the target task.
FairPrune (Wu et al., MICCAI 2022) compares each parameter's importance between a privileged
and an unprivileged group and removes those important mostly to the privileged one. This
criterion does the same with the study's one model and its group labels: it measures each
unit's relevance for the target task separately on the reference examples of every group (each
group's mean, so a 10 % minority weighs as much as the majority) and lowers the importance of
the units whose relevance is tied to one group. See docs/criteria.md for what differs.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from ..core.errors import ConfigError
from ..data.batch import take
from .base import Criterion, ScoringContext

__all__ = ["GroupRelevanceCriterion"]

#: Relevance measures a group's relevance can be taken from (registered criteria).
BASES = ("lrp", "taylor", "gradient", "activation")


class GroupRelevanceCriterion(Criterion):
    """Group-balanced task relevance, lowered for units relied on mostly by one group.

    For every sensitive group ``g`` the ``base`` criterion (LRP by default, through its own
    zennit machinery) scores the units on that group's reference examples only: ``R_g(u)`` is
    the mean over the group's examples, so each group is normalised by its own size. Then, with
    ``p_g(u) = R_g(u) / sum_h R_h(u)`` the share of unit ``u``'s relevance that comes from group
    ``g`` (``1/G`` when all groups rely on it alike)::

        task(u)       = mean_g R_g(u)                          (every group counts the same)
        dependence(u) = (p_t(u) - 1/G)+ * G / (G - 1)          in [0, 1]
        importance(u) = task(u) * (1 - strength * dependence(u))

    ``target="majority"`` (default) takes ``t`` = the largest group of the reference sample:
    units relied on mostly by the majority are pruned first, units the minority relies on are
    kept (FairPrune's direction; it narrows the accuracy gap instead of widening it).
    ``target="any"`` takes for each unit the group it depends on most (``max_g p_g``): units tied
    to any one group go first, XTranPrune's "remove what encodes the sensitive attribute"
    (use it when group-specific units are a shortcut, not features a group needs). A group name
    targets that group. ``strength=0`` leaves the group-balanced relevance alone.

    Options
    -------
    base : {"lrp", "taylor", "gradient", "activation"}, default "lrp"
        The relevance measured per group (the registered criterion of that name, defaults).
    target : "majority", "any" or a group name, default "majority"
    strength : float in [0, 1], default 0.5
        How much of a fully group-specific unit's relevance is discounted (1: all of it; in our
        benchmark that removed so much of what the majority needs that it became the worst
        group, docs/benchmarks.md).

    Needs a study with sensitive groups (``Study(..., groups=...)``); every group must have
    examples in the reference sample (raise ``samples=`` otherwise).

    References
    ----------
    Ghadiri, Pagnucco, Song. XTranPrune: eXplainability-aware Transformer Pruning for Bias
    Mitigation in Dermatological Disease Classification. MICCAI 2024.
    Wu, Zeng, Xu, Shi, Hu. FairPrune: Achieving Fairness Through Pruning for Dermatological
    Disease Diagnosis. MICCAI 2022.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from xprune_nb.criteria import create, ScoringContext
    >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> ctx = ScoringContext(net, "channel", {"0": net[0]}, torch.randn(8, 4),
    ...                      torch.tensor([0, 1] * 4), None, 2, lambda m, x: m(x),
    ...                      groups=torch.tensor([0, 0, 0, 0, 0, 0, 1, 1]),
    ...                      group_names=["majority", "minority"])
    >>> create("group_relevance").score(ctx)["0"].shape
    torch.Size([8])
    """

    name = "group_relevance"
    granularities = ("weight", "channel")
    options = {"base": "lrp", "target": "majority", "strength": 0.5}
    choices = {"base": BASES}
    needs_groups = True
    reference = ("Ghadiri et al., XTranPrune: eXplainability-aware Transformer Pruning for Bias "
                 "Mitigation, MICCAI 2024; Wu et al., FairPrune, MICCAI 2022")

    def __init__(self, **options) -> None:
        super().__init__(**options)
        call = f"Study.score({self.name!r})"
        value = self.params["strength"]
        if (not isinstance(value, (int, float)) or isinstance(value, bool)
                or not math.isfinite(value) or not 0 <= value <= 1):
            raise ConfigError.bad_value(call, "strength", "a number in [0, 1]", value)
        if not isinstance(self.params["target"], str) or not self.params["target"]:
            raise ConfigError.bad_value(call, "target", '"majority", "any" or a group name',
                                        self.params["target"])

    def channel_scores(self, ctx: ScoringContext) -> dict[str, torch.Tensor]:
        return self._combine(ctx, self._per_group(ctx))

    def weight_scores(self, ctx: ScoringContext) -> dict[str, torch.Tensor]:
        return self._combine(ctx, self._per_group(ctx))

    def _per_group(self, ctx: ScoringContext) -> list[dict[str, torch.Tensor]]:
        """The base criterion's scores on each group's reference examples, in group order."""
        from . import get

        call = f"Study.score({self.name!r})"
        if ctx.groups is None or not ctx.group_names:
            raise ConfigError(f"{call}: criterion {self.name!r} needs the sensitive groups of "
                              "the reference examples; this study has none (give Study(..., "
                              "groups=...), see docs/groups.md).")
        groups = torch.as_tensor(ctx.groups).long().cpu()
        counts = torch.bincount(groups, minlength=len(ctx.group_names))
        empty = [ctx.group_names[g] for g in range(len(ctx.group_names)) if counts[g] == 0]
        if empty:
            raise ConfigError(f"{call}: group(s) {empty} have no examples among the "
                              f"{len(groups)} reference examples; raise samples= (or drop "
                              "classes=) so every group is measured.")
        base = get(self.params["base"], call)()
        rows = [torch.nonzero(groups == g).flatten() for g in range(len(ctx.group_names))]
        total = sum((len(r) + ctx.batch_size - 1) // ctx.batch_size for r in rows)
        done = 0
        found = []
        for idx in rows:
            def progress(i, _n, d=done):   # one bar over all groups' batches
                ctx.progress(d + i, total)

            sub = dataclasses.replace(ctx, inputs=take(ctx.inputs, idx),
                                      targets=ctx.targets[idx.to(ctx.targets.device)],
                                      groups=groups[idx],
                                      progress=progress if ctx.progress is not None else None)
            found.append(base.score(sub))
            done += (len(idx) + ctx.batch_size - 1) // ctx.batch_size
        return found

    def _target(self, ctx: ScoringContext) -> int | None:
        """The group index dependence is measured toward; ``None``: each unit's own most."""
        target = self.params["target"]
        if target == "any":
            return None
        if target == "majority":
            counts = torch.bincount(torch.as_tensor(ctx.groups).long().cpu(),
                                    minlength=len(ctx.group_names))
            return int(counts.argmax())
        if target not in ctx.group_names:
            raise ConfigError.bad_value(f"Study.score({self.name!r})", "target",
                                        f'"majority", "any" or one of {ctx.group_names}', target)
        return ctx.group_names.index(target)

    def _combine(self, ctx: ScoringContext, per_group: list[dict[str, torch.Tensor]]
                 ) -> dict[str, torch.Tensor]:
        count = len(per_group)
        target = self._target(ctx)
        strength = float(self.params["strength"])
        out = {}
        for name in per_group[0]:
            r = torch.stack([found[name].double().abs() for found in per_group])
            task = r.mean(dim=0)
            total = r.sum(dim=0)
            # a unit no group relies on has no share to speak of: no dependence
            share = torch.where(total > 0, r / total.clamp(min=1e-300),
                                torch.full_like(r, 1.0 / count))
            tied = share.max(dim=0).values if target is None else share[target]
            dependence = ((tied - 1.0 / count).clamp(min=0) * count / max(count - 1, 1))
            out[name] = (task * (1.0 - strength * dependence)).float()
        return out
