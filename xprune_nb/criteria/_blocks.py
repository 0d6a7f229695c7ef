"""Scores of whole blocks (residual blocks, transformer layers) for the ``block`` unit kind.

A block ``y = block(x)`` is gated per example, ``y_g = x + g * (y - x)``: at g = 1 the model is
unchanged, at g = 0 the block is skipped (for a residual block ``x + f(x)`` the gate scales
exactly the residual branch ``f``). One backward pass gives every example's ``dL/dg``, so
Taylor and gradient scores of blocks cost one forward and one backward per batch. LRP reads the
relevance that flows into the residual branch, and ``skip`` measures the accuracy lost when the
block is skipped.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from .base import ScoringContext

__all__ = ["blocks_of", "per_example_block_gates", "block_magnitudes", "block_skip_drops",
           "block_relevance"]


def blocks_of(ctx: ScoringContext) -> list:
    """The ``Block`` records the block unit kind found (``ctx.units.detail["blocks"]``)."""
    return list(ctx.units.detail["blocks"])


def _input(block, args, kwargs) -> torch.Tensor:
    return args[block.input_key] if isinstance(block.input_key, int) else kwargs[block.input_key]


@contextlib.contextmanager
def _gated(model, blocks, gates: dict) -> Iterator[None]:
    """Hooks that mix each block's output with its input by a per-example gate."""
    modules = dict(model.named_modules())
    handles = []

    def make(block):
        def hook(_module, args, kwargs, output):
            x = _input(block, args, kwargs)
            y = output[0] if isinstance(output, tuple) else output
            g = gates[block.name].to(y.dtype).reshape(-1, *([1] * (y.dim() - 1)))
            mixed = x + g * (y - x)
            return (mixed, *output[1:]) if isinstance(output, tuple) else mixed
        return hook

    try:
        for block in blocks:
            handles.append(modules[block.name].register_forward_hook(make(block),
                                                                     with_kwargs=True))
        yield
    finally:
        for handle in handles:
            handle.remove()


def per_example_block_gates(ctx: ScoringContext, *, target: str = "loss") -> dict:
    """``{block: (examples,) dL_i/dg}`` at g = 1 (``target="logit"``: of the true logit)."""
    blocks = blocks_of(ctx)
    out = {b.name: [] for b in blocks}
    for x, y in ctx.batches():
        gates = {b.name: torch.ones(len(y), requires_grad=True) for b in blocks}
        with _gated(ctx.model, blocks, gates), torch.enable_grad():
            logits = ctx.forward(ctx.model, x)
            objective = (logits.gather(1, y[:, None]).sum() if target == "logit"
                         else F.cross_entropy(logits, y, reduction="sum"))
            grads = torch.autograd.grad(objective, [gates[b.name] for b in blocks],
                                        allow_unused=True)
        for block, g in zip(blocks, grads):
            out[block.name].append(torch.zeros(len(y)) if g is None else g.detach())
    ctx.model.zero_grad(set_to_none=True)
    return {k: torch.cat(v).double() for k, v in out.items()}


def block_magnitudes(ctx: ScoringContext) -> dict[str, torch.Tensor]:
    """Root-mean-square of each block's parameters."""
    from ..models.mechanisms.blocks import block_magnitude

    return {k: torch.tensor(v) for k, v in block_magnitude(ctx.model, blocks_of(ctx)).items()}


def block_skip_drops(ctx: ScoringContext) -> dict[str, torch.Tensor]:
    """Accuracy lost on the reference set when each block alone is skipped."""
    from ..models.mechanisms.blocks import skip_drop

    drops = skip_drop(ctx.model, blocks_of(ctx), ctx.inputs, ctx.targets, ctx.forward,
                      batch_size=ctx.batch_size)
    return {k: torch.tensor(v, dtype=torch.float64) for k, v in drops.items()}


def block_relevance(ctx: ScoringContext, runner, *, signed: bool = False
                    ) -> dict[str, torch.Tensor]:
    """LRP relevance that flows into each block's branch, averaged over the reference set.

    With relevance ``R_y`` at the block's output and a proportional split of the residual sum
    ``y = x + (y - x)``, the branch receives ``R_y * (y - x) / y`` (summed over positions).
    """
    blocks = blocks_of(ctx)
    names = [b.name for b in blocks]
    modules = runner.modules
    totals = {n: 0.0 for n in names}
    count = 0
    captured: dict[str, tuple] = {}

    def make(block):
        def hook(_m, args, kwargs, output):
            out = output[0] if isinstance(output, tuple) else output
            captured[block.name] = (_input(block, args, kwargs), out)
        return hook

    with runner.registered():
        for x, y in ctx.batches():
            captured.clear()
            handles = [modules[b.name].register_forward_hook(make(b), with_kwargs=True)
                       for b in blocks]
            try:
                rel = runner.relevance_at(x, y, lambda: [captured[n][1] for n in names])
            finally:
                for h in handles:
                    h.remove()
            for name, r in zip(names, rel):
                inp, out = captured[name]
                stab = out + 1e-9 * torch.where(out >= 0, 1.0, -1.0)
                share = (r * (out - inp).detach() / stab.detach()).flatten(1).sum(1)
                totals[name] += float(share.sum() if signed else share.abs().sum())
            count += len(y)
    return {n: torch.tensor(v / max(count, 1), dtype=torch.float64) for n, v in totals.items()}
