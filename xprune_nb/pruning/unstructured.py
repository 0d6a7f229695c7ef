"""Unstructured pruning: zero individual weights with torch.nn.utils.prune masks.

Masks keep tensor shapes, so dense kernels run exactly as fast as before: the gain is in
compressibility and in what the masks reveal, not in speed (``Metrics.macs`` stays dense).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import prune

__all__ = ["alive_weights", "apply_weight_removal", "masked_layers", "ensure_masks",
           "refresh_masked_weights"]


def alive_weights(layers: dict[str, nn.Module]) -> dict[str, torch.Tensor]:
    """Boolean tensor per layer: True where the weight is not masked."""
    return {name: (m.weight_mask.bool().clone() if hasattr(m, "weight_mask")
                   else torch.ones_like(m.weight, dtype=torch.bool))
            for name, m in layers.items()}


def apply_weight_removal(layers: dict[str, nn.Module], removal: dict[str, torch.Tensor]) -> None:
    """Mask the weights at the flat indices ``removal[layer]`` (in place)."""
    for name, idx in removal.items():
        module = layers[name]
        keep = torch.ones(module.weight.numel(), dtype=module.weight.dtype,
                          device=module.weight.device)
        keep[idx.to(keep.device)] = 0
        keep = keep.reshape(module.weight.shape)
        if hasattr(module, "weight_mask"):
            module.weight_mask.mul_(keep)
            # the pre-forward hook recomputes the weight on the next call; do it now so that
            # metrics read before any forward see the new zeros
            module.weight = module.weight_orig * module.weight_mask
        else:
            prune.custom_from_mask(module, "weight", keep)


def masked_layers(model: nn.Module) -> list[str]:
    """Names of the layers carrying a torch.nn.utils.prune weight mask."""
    return [name for name, m in model.named_modules() if hasattr(m, "weight_mask")]


def ensure_masks(model: nn.Module, names: list[str]) -> None:
    """Give each named layer an (all-ones) mask so a state dict with masks can be loaded."""
    modules = dict(model.named_modules())
    for name in names:
        if not hasattr(modules[name], "weight_mask"):
            prune.identity(modules[name], "weight")


def refresh_masked_weights(model: nn.Module) -> None:
    """Recompute ``weight = weight_orig * weight_mask`` now (the pruning hook only does it at the
    next forward), e.g. after loading a state dict, so ``.weight`` is never stale."""
    for module in model.modules():
        if hasattr(module, "weight_mask") and hasattr(module, "weight_orig"):
            with torch.no_grad():
                module.weight = module.weight_orig * module.weight_mask
