"""What a model's weights say without running it: parameter counts, sparsity, stored size.

A step of a big model records these at once and its accuracy on first ask
(:func:`xprune_nb.measure.step.measure_step`); :mod:`xprune_nb.measure.metrics` re-exports
them.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["count_params", "param_stats", "size_bytes", "size_metrics", "layer_sparsity",
           "weight_sparsity"]


def _effective_params(model: nn.Module):
    """(qualified name, effective tensor) for every parameter, masks applied."""
    for mod_name, module in model.named_modules():
        for p_name, p in module.named_parameters(recurse=False):
            if p_name.endswith("_orig") and hasattr(module, p_name[:-5] + "_mask"):
                p_name = p_name[:-5]
                p = getattr(module, p_name)
            yield (f"{mod_name}.{p_name}" if mod_name else p_name), p


def count_params(model: nn.Module) -> tuple[int, int]:
    """(total, non-zero) parameter counts; masked weights count as zero.

    Examples
    --------
    >>> from torch import nn
    >>> count_params(nn.Linear(3, 2))
    (8, 8)
    """
    total, nonzero, _ = param_stats(model)
    return total, nonzero


def param_stats(model: nn.Module) -> tuple[int, int, dict[str, dict]]:
    """``(total, non-zero, per-layer)``: :func:`count_params` and :func:`layer_sparsity` in
    one sweep over the weights (a step's measurement needs both; each sweep reads every
    weight, 340 MB on a ViT-B).

    Examples
    --------
    >>> from torch import nn
    >>> total, nonzero, layers = param_stats(nn.Linear(3, 2))
    >>> total, nonzero, layers["weight"]["sparsity"]
    (8, 8, 0.0)
    """
    total = nonzero = 0
    layers: dict[str, dict] = {}
    for name, p in _effective_params(model):
        nz = int(torch.count_nonzero(p.detach()))   # no boolean copy of the tensor
        total += p.numel()
        nonzero += nz
        if p.dim() >= 2:
            layers[name] = {"shape": tuple(p.shape), "params": p.numel(), "nonzero": nz,
                            "sparsity": 1.0 - nz / max(p.numel(), 1)}
    return total, nonzero, layers


def size_bytes(model: nn.Module) -> int:
    """Bytes of the model's parameters and buffers, stored densely (masks not counted)."""
    n = sum(p.numel() * p.element_size() for _, p in _effective_params(model))
    n += sum(b.numel() * b.element_size() for name, b in model.named_buffers()
             if not name.endswith("_mask"))
    return int(n)


def size_metrics(model: nn.Module, macs: int) -> dict:
    """What a model's weights say without running it: parameters, non-zero parameters, MACs
    (given), stored bytes and the sparsity of its weight tensors (one sweep over the weights).

    A big model's step records these at once and its accuracy on first ask
    (:func:`xprune_nb.measure.step.measure_step`).

    Examples
    --------
    >>> from torch import nn
    >>> size_metrics(nn.Linear(3, 2), macs=6)
    {'params': 8, 'nonzero_params': 8, 'macs': 6, 'size_bytes': 32, 'sparsity': 0.0}
    """
    total, nonzero, layers = param_stats(model)
    return {"params": total, "nonzero_params": nonzero, "macs": int(macs),
            "size_bytes": size_bytes(model), "sparsity": weight_sparsity(layers)}


def weight_sparsity(layers: dict[str, dict]) -> float:
    """Fraction of zeros over the weight tensors of :func:`param_stats`' per-layer table.

    Examples
    --------
    >>> weight_sparsity({"a": {"params": 6, "nonzero": 3}, "b": {"params": 2, "nonzero": 2}})
    0.375
    """
    weights = sum(v["params"] for v in layers.values())
    zeros = sum(v["params"] - v["nonzero"] for v in layers.values())
    return zeros / max(weights, 1)


def layer_sparsity(model: nn.Module) -> dict[str, dict]:
    """Per parameter tensor: shape, count, non-zero count and sparsity (fraction of zeros)."""
    return param_stats(model)[2]
