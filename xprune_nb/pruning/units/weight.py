"""Weights: unstructured pruning with ``torch.nn.utils.prune`` masks.

Masked weights are exact zeros, but dense kernels multiply them all the same: masks save no time
(see ``docs/concepts.md``); they show how many weights a model can lose.
"""

from __future__ import annotations

import torch
from torch import nn

from ...models.mechanisms.masks import alive_weights, apply_weight_removal
from ...models.mechanisms.model_tools import prunable_layers, tied_parameters
from .base import ModelEnv, UnitKind, Units

__all__ = ["WeightUnits"]


class WeightUnits(UnitKind):
    """Every weight of every Conv/Linear layer that runs (the output layer only when asked)."""

    name = "weight"
    noun = "weights"
    score_as = "weight"

    def find(self, model: nn.Module, env: ModelEnv, *, prune_output: bool = False) -> Units:
        # layers whose forward() never runs (e.g. nn.MultiheadAttention.out_proj, read
        # functionally) would ignore a mask's pre-forward hook, so they are not maskable
        layers, skipped = {}, {}
        tied = {n.rpartition(".")[0]: group for group in tied_parameters(model) for n in group}
        for name, module in prunable_layers(model).items():
            if name in tied:
                # a mask re-parametrises one layer's weight and would untie it from the other
                skipped[name] = ("shares its weight with " + ", ".join(
                    repr(n) for n in tied[name] if not n.startswith(name + ".")) + " (tied)")
            elif name not in env.executed:
                skipped[name] = "its forward() never runs (weights read functionally)"
            elif name in env.output_layers and not prune_output:
                skipped[name] = "output layer (pass prune_output=True to include it)"
            else:
                layers[name] = module
        return Units(self.name, groups={n: (n,) for n in layers}, layers=layers,
                     sizes={n: m.weight.numel() for n, m in layers.items()}, skipped=skipped)

    def alive(self, model: nn.Module, units: Units) -> dict[str, torch.Tensor]:
        return alive_weights(units.layers)

    def apply(self, model: nn.Module, units: Units, removal: dict[str, torch.Tensor],
              env: ModelEnv) -> None:
        apply_weight_removal(units.layers, removal)
        return None
