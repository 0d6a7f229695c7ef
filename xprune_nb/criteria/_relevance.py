"""Shared machinery of the class-aware relevance criteria (lrp, conductance, shapley).

Each of them computes, in one pass over the reference set, the relevance of every unit for every
reference example; the class-agnostic score is its mean over all examples and the per-class
score its mean over the examples of each class. :class:`UnitRelevanceMixin` runs that pass once
and serves both ``channel_scores`` and ``per_class_channel_scores`` from it.
"""

from __future__ import annotations

import weakref

import torch

from .base import ScoringContext

__all__ = ["UnitAccumulator", "UnitRelevanceMixin", "unit_sums"]


def unit_sums(t: torch.Tensor, is_conv: bool) -> torch.Tensor:
    """(batch, units) totals of a layer-output-shaped tensor: conv channels summed over positions,
    linear units summed over any leading (token) dimensions."""
    if is_conv:
        return t.flatten(2).sum(dim=2)
    return t.reshape(t.shape[0], -1, t.shape[-1]).sum(dim=1)


class UnitAccumulator:
    """Running sums of per-example unit relevance, overall and per class (in float64)."""

    def __init__(self, num_classes: int, signed: bool) -> None:
        self.num_classes = num_classes
        self.signed = signed
        self.totals: dict[str, torch.Tensor] = {}
        self.by_class: dict[str, torch.Tensor] = {}
        self.counts = torch.zeros(num_classes, dtype=torch.float64)
        self.examples = 0

    def add(self, name: str, relevance: torch.Tensor, y: torch.Tensor) -> None:
        """Add a (batch, units) relevance block for layer ``name``; call :meth:`count` once per
        batch."""
        r = relevance.detach().double()
        if not self.signed:
            r = r.abs()
        if name not in self.totals:
            self.totals[name] = torch.zeros(r.shape[1], dtype=torch.float64)
            self.by_class[name] = torch.zeros(self.num_classes, r.shape[1], dtype=torch.float64)
        self.totals[name] += r.sum(dim=0)
        self.by_class[name].index_add_(0, y.long(), r)

    def count(self, y: torch.Tensor) -> None:
        self.examples += int(y.numel())
        self.counts += torch.bincount(y.long(), minlength=self.num_classes).double()

    def scores(self) -> dict[str, torch.Tensor]:
        """Mean relevance of each unit over all reference examples."""
        n = max(self.examples, 1)
        return {name: (t / n).float() for name, t in self.totals.items()}

    def per_class(self) -> dict[str, torch.Tensor]:
        """(classes, units) mean relevance per class; NaN rows for classes with no example."""
        counts = self.counts.unsqueeze(1)
        out = {}
        for name, t in self.by_class.items():
            mean = t / counts.clamp(min=1)
            mean[self.counts == 0] = float("nan")
            out[name] = mean.float()
        return out


class UnitRelevanceMixin:
    """Serves ``channel_scores`` and ``per_class_channel_scores`` from one pass.

    Subclasses implement ``_accumulate(ctx) -> UnitAccumulator``. The last result is kept for
    the same context and model objects only (both held weakly); a new context recomputes.
    """

    class_aware = True

    def _accumulate(self, ctx: ScoringContext) -> UnitAccumulator:
        raise NotImplementedError

    def _pass(self, ctx: ScoringContext) -> UnitAccumulator:
        cached = getattr(self, "_last_pass", None)
        if cached is not None and cached[0]() is ctx and cached[1]() is ctx.model:
            return cached[2]
        acc = self._accumulate(ctx)
        self._last_pass = (weakref.ref(ctx), weakref.ref(ctx.model), acc)
        return acc

    def channel_scores(self, ctx: ScoringContext) -> dict[str, torch.Tensor]:
        return self._pass(ctx).scores()

    def per_class_channel_scores(self, ctx: ScoringContext) -> dict[str, torch.Tensor]:
        return self._pass(ctx).per_class()
