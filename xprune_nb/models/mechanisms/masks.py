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


def masked_params(module: nn.Module) -> list[str]:
    """Names of the parameters of ``module`` that carry a torch.nn.utils.prune mask."""
    return [name[:-5] for name, _ in module.named_buffers(recurse=False)
            if name.endswith("_mask") and hasattr(module, name[:-5] + "_orig")]


def masked_layers(model: nn.Module) -> list[str]:
    """Every masked parameter: ``"layer"`` for a layer's ``weight``, ``"module:param"`` for
    another parameter (e.g. ``"attn:in_proj_weight"`` when attention heads are masked)."""
    out = []
    for name, module in model.named_modules():
        for param in masked_params(module):
            out.append(name if param == "weight" else f"{name}:{param}")
    return out


def ensure_masks(model: nn.Module, entries: list[str]) -> None:
    """Give each listed parameter an (all-ones) mask so a state dict with masks can be loaded."""
    modules = dict(model.named_modules())
    for entry in entries:
        name, _, param = entry.partition(":")
        module = modules[name]
        param = param or "weight"
        if param not in masked_params(module):
            prune.identity(module, param)


def refresh_masked_weights(model: nn.Module) -> None:
    """Recompute ``param = param_orig * param_mask`` now (the pruning hook only does it at the
    next forward), e.g. after loading a state dict, so masked tensors are never stale."""
    for module in model.modules():
        for param in masked_params(module):
            with torch.no_grad():
                setattr(module, param,
                        getattr(module, param + "_orig") * getattr(module, param + "_mask"))
