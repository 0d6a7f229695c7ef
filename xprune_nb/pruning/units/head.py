"""Attention heads of ``nn.MultiheadAttention``, by masks.

Masking a head's rows of the query, key and value projections makes its values zero, so it
contributes nothing: exactly as if removed, but the module keeps its shapes, so there is no
speed-up (``nn.MultiheadAttention`` ties its inner width to the model's width).
"""

from __future__ import annotations

import torch
from torch import nn

from ..._model import eval_mode
from ..heads import alive_heads, apply_head_removal, attention_modules
from .base import ModelEnv, UnitKind, Units

__all__ = ["HeadUnits"]


class HeadUnits(UnitKind):
    """The heads of every ``nn.MultiheadAttention`` that runs (masked)."""

    name = "head"
    noun = "attention heads"
    score_as = "head"

    def find(self, model: nn.Module, env: ModelEnv, *, prune_output: bool = False) -> Units:
        seen: set[str] = set()
        names = {m: n for n, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)}
        handles = [m.register_forward_hook(lambda mod, *a: seen.add(names[mod])) for m in names]
        try:
            with torch.no_grad(), eval_mode(model):
                env.forward(model, env.example)
        finally:
            for h in handles:
                h.remove()
        layers, skipped = attention_modules(model, seen)
        return Units(self.name, groups={n: (n,) for n in layers}, layers=layers,
                     sizes={n: m.num_heads for n, m in layers.items()}, skipped=skipped)

    def nothing_found(self, units: Units, call: str) -> str:
        return (f"{call}: the model has no nn.MultiheadAttention whose heads can be masked"
                + (f" ({units.skipped})" if units.skipped else "") + ". Hand-written "
                "attention is not supported at head granularity; prune its MLP units with "
                "granularity='channel' or its weights with granularity='weight'.")

    def alive(self, model: nn.Module, units: Units) -> dict[str, torch.Tensor]:
        return alive_heads(units.layers)

    def apply(self, model: nn.Module, units: Units, removal: dict[str, torch.Tensor],
              env: ModelEnv) -> None:
        apply_head_removal(units.layers, removal)
        return None
