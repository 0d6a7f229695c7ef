"""Shared machinery for criteria that look at layer outputs and their gradients."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .._model import weight_param
from .base import ScoringContext

UnitStat = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]


def unit_view(t: torch.Tensor, is_conv: bool) -> torch.Tensor:
    """Reshape a layer output to (batch, positions, units): channels of a conv, last dim of a
    linear layer (tokens or other leading dims become positions)."""
    if is_conv:
        return t.flatten(2).transpose(1, 2)
    return t.reshape(t.shape[0], -1, t.shape[-1])


def objective(ctx: ScoringContext, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The loss a gradient criterion differentiates: summed cross-entropy on the labels, so
    scores do not depend on the batch size."""
    return F.cross_entropy(logits, y, reduction="sum")


def output_unit_stats(ctx: ScoringContext, stat: UnitStat, *, backward: bool) -> dict:
    """Average ``stat(a, g)`` over the reference set for every layer in ``ctx.layers``.

    ``a`` and ``g`` are the layer output and its gradient as (batch, positions, units); ``stat``
    returns a (units,) tensor summed over the batch. Hooks are removed whatever happens.
    """
    from torch import nn

    captured: dict[str, torch.Tensor] = {}
    handles = []
    for name, layer in ctx.layers.items():
        def hook(module, inputs, output, name=name):
            if backward and output.requires_grad:
                output.retain_grad()
            captured[name] = output
        handles.append(layer.register_forward_hook(hook))
    totals = {name: None for name in ctx.layers}
    count = 0
    try:
        for x, y in ctx.batches():
            captured.clear()
            with torch.set_grad_enabled(backward):
                logits = ctx.forward(ctx.model, x)
                if backward:
                    ctx.model.zero_grad(set_to_none=True)
                    objective(ctx, logits, y).backward()
            for name, out in captured.items():
                is_conv = isinstance(ctx.layers[name], nn.modules.conv._ConvNd)
                a = unit_view(out.detach(), is_conv)
                g = unit_view(out.grad, is_conv) if backward and out.grad is not None else None
                if backward and g is None:
                    g = torch.zeros_like(a)
                value = stat(a, g).double()
                totals[name] = value if totals[name] is None else totals[name] + value
            count += len(x)
    finally:
        for h in handles:
            h.remove()
        captured.clear()
        if backward:
            ctx.model.zero_grad(set_to_none=True)
    return {name: (t / max(count, 1)).float() for name, t in totals.items() if t is not None}


def accumulated_weight_grads(ctx: ScoringContext) -> dict[str, torch.Tensor]:
    """Gradient of the summed loss over the whole reference set w.r.t. each layer's weight."""
    params = {name: weight_param(layer) for name, layer in ctx.layers.items()}
    sums = {name: torch.zeros_like(p, dtype=torch.float64) for name, p in params.items()}
    flags = {name: p.requires_grad for name, p in params.items()}
    try:
        for p in params.values():
            p.requires_grad_(True)
        for x, y in ctx.batches():
            ctx.model.zero_grad(set_to_none=True)
            objective(ctx, ctx.forward(ctx.model, x), y).backward()
            for name, p in params.items():
                if p.grad is not None:
                    sums[name] += p.grad.double()
    finally:
        ctx.model.zero_grad(set_to_none=True)
        for name, p in params.items():
            p.requires_grad_(flags[name])
    return {name: s.float() for name, s in sums.items()}


def input_feature_norms(ctx: ScoringContext) -> dict[str, torch.Tensor]:
    """L2 norm over the reference set of each input feature (channel) of each layer."""
    from torch import nn

    sq: dict[str, torch.Tensor] = {}
    handles = []
    for name, layer in ctx.layers.items():
        is_conv = isinstance(layer, nn.modules.conv._ConvNd)

        def hook(module, inputs, output, name=name, is_conv=is_conv):
            x = unit_view(inputs[0].detach(), is_conv)
            val = x.double().pow(2).sum(dim=(0, 1))
            sq[name] = val if name not in sq else sq[name] + val
        handles.append(layer.register_forward_hook(hook))
    try:
        with torch.no_grad():
            for x, _ in ctx.batches():
                ctx.forward(ctx.model, x)
    finally:
        for h in handles:
            h.remove()
    return {name: v.sqrt().float() for name, v in sq.items()}
