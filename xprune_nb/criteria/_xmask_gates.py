"""Gates for the ``xmask`` criterion: one leaf tensor of gates per scored layer, head group or
block, multiplied into the FROZEN model by forward hooks while a context is open.

Each context manager yields ``{name: gate}`` (float leaf tensors that require grad, ones when
the context opens). ``xmask`` copies a class's mask into them, runs the class's examples and reads
``d loss / d gate``; no hook, attribute or parameter of the model outlives the context.

- channels: the layer's output channels are scaled (Conv: dim 1, Linear and others: last dim);
- heads: :func:`xprune_nb.models.mechanisms.attention.surgery.head_gates`, the per-head gate of
  every attention style the head kind supports (``nn.MultiheadAttention``, ``SDPAttention``, Hugging
  Face, fused qkv, LeViT);
- blocks: ``y = x + g * (block(x) - x)`` on each residual block / transformer layer, as
  :mod:`xprune_nb.criteria._blocks` does for the Taylor and gradient block scores.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from ..data.batch import take
from .base import ScoringContext

__all__ = ["gates_for"]


def _channel_dim(layer: nn.Module, output: torch.Tensor) -> int:
    """The dimension that indexes a layer's output units (Conv: channels, else the last)."""
    return 1 if isinstance(layer, nn.modules.conv._ConvNd) and output.dim() > 2 else -1


def _scaled(output: torch.Tensor, gate: torch.Tensor, dim: int) -> torch.Tensor:
    shape = [1] * output.dim()
    shape[dim] = gate.numel()
    return output * gate.to(output.dtype).reshape(shape)


@contextlib.contextmanager
def channel_gates(ctx: ScoringContext) -> Iterator[dict[str, torch.Tensor]]:
    """One gate per output unit of every layer in ``ctx.layers``."""
    sizes: dict[str, int] = {}
    handles = []

    def probe(name):
        def hook(module, _inputs, output):
            if torch.is_tensor(output):
                sizes[name] = int(output.shape[_channel_dim(module, output)])
        return hook

    try:
        # the unit count is read from a real output (ConvTranspose, LazyLinear and custom layers
        # do not all say it in their weight's first dimension)
        handles = [layer.register_forward_hook(probe(n)) for n, layer in ctx.layers.items()]
        with torch.no_grad():
            ctx.forward(ctx.model, take(ctx.inputs, slice(0, 1)))
    finally:
        for h in handles:
            h.remove()
    gates = {n: torch.ones(sizes[n], requires_grad=True) for n in ctx.layers if n in sizes}
    handles = []

    def make(name):
        def hook(module, _inputs, output):
            if not torch.is_tensor(output):
                return None
            return _scaled(output, gates[name], _channel_dim(module, output))
        return hook

    try:
        for name in gates:
            handles.append(ctx.layers[name].register_forward_hook(make(name)))
        yield gates
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def head_gates(ctx: ScoringContext) -> Iterator[dict[str, torch.Tensor]]:
    """One gate per head of every attention module in ``ctx.layers`` (the surgery's gates)."""
    from ..models.mechanisms.attention import find_heads
    from ..models.mechanisms.attention.surgery import head_gates as surgery_gates

    wanted = set(ctx.layers)
    groups = [g for g in find_heads(ctx.model)[0] if g.name in wanted]
    with surgery_gates(ctx.model, groups) as gates:
        yield gates


@contextlib.contextmanager
def block_gates(ctx: ScoringContext) -> Iterator[dict[str, torch.Tensor]]:
    """One gate per block the block kind found (``ctx.units.detail["blocks"]``)."""
    from ._blocks import _gated, blocks_of

    blocks = blocks_of(ctx)
    # a (1,) gate broadcasts over the batch in _gated's per-example reshape
    gates = {b.name: torch.ones(1, requires_grad=True) for b in blocks}
    with _gated(ctx.model, blocks, gates):
        yield gates


def gates_for(kind: str):
    """The gate context manager for a granularity (``channel``, ``head`` or ``block``)."""
    return {"channel": channel_gates, "head": head_gates, "block": block_gates}[kind]
