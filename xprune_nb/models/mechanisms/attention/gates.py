"""Per-example head-gate derivatives and head weight norms for every attention style.

Criteria score heads from the derivative of an objective with respect to a gate on each head's
output (Michel et al. 2019). Gating head h by g scales the output projection's columns of h by
g, so at g = 1 the derivative is the sum over those columns of weight x gradient; that holds for
``nn.MultiheadAttention``, ``SDPAttention``, Hugging Face, fused-qkv and LeViT attention alike
(:func:`~xprune_nb.models.mechanisms.attention.surgery.output_columns`). These functions take a
scoring context (anything with ``model``, ``layers``, ``forward`` and ``batches()``) so criteria can
call them directly.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .discovery import find_heads
from .surgery import head_magnitude, output_columns

__all__ = ["per_example_head_gates", "head_norms"]


class _Given(nn.Module):
    """Hands an already computed model output to ``forward`` to extract its logits."""

    def __init__(self, out) -> None:
        super().__init__()
        self.out = out

    def forward(self, *_args, **_kwargs):
        return self.out


def _groups(ctx) -> list:
    wanted = set(ctx.layers)
    return [g for g in find_heads(ctx.model)[0] if g.name in wanted]


def head_norms(ctx, p: float = 2.0) -> dict[str, torch.Tensor]:
    """``p``-norm of each head's weights, for the attention modules in ``ctx.layers``."""
    return head_magnitude(ctx.model, _groups(ctx), p=p)


def per_example_head_gates(ctx, *, target: str = "loss") -> dict[str, torch.Tensor]:
    """Per reference example, d(loss) or d(true-class logit) / d(gate) for each head, at g = 1.

    Returns
    -------
    dict
        Module name -> ``(examples, heads)`` float64 tensor.
    """
    from torch.func import functional_call, grad, vmap

    columns = {g.name: output_columns(ctx.model, g) for g in _groups(ctx)}
    params = {k: v.detach() for k, v in ctx.model.named_parameters()}
    buffers = {k: v.detach() for k, v in ctx.model.named_buffers()}
    scored = {name: params[name] for name, _ in columns.values()}
    fixed = {k: v for k, v in params.items() if k not in scored}

    def objective_of(trainable, x, y):
        # one example at a time (vmap); named token inputs go in as keywords
        args, kwargs = (((), {k: v[None] for k, v in x.items()}) if isinstance(x, Mapping)
                        else ((x[None],), {}))
        out = functional_call(ctx.model, ({**fixed, **trainable}, buffers), args, kwargs)
        logits = out if torch.is_tensor(out) else ctx.forward(_Given(out), x)
        if target == "logit":
            return logits[0].gather(0, y[None]).sum()
        return F.cross_entropy(logits, y[None], reduction="sum")

    per_example = vmap(grad(objective_of), in_dims=(None, 0, 0))
    gates: dict[str, list[torch.Tensor]] = {key: [] for key in columns}
    for x, y in ctx.batches():
        if isinstance(x, Mapping):
            # named token inputs: Hugging Face builds its attention mask with data-dependent
            # branches vmap cannot follow, so one example at a time (the same numbers)
            x = {str(k): v for k, v in x.items() if isinstance(v, torch.Tensor)}
            one = grad(objective_of)
            parts = [one(scored, {k: v[j] for k, v in x.items()}, y[j]) for j in range(len(y))]
            g = {k: torch.stack([p[k] for p in parts]) for k in scored}
        else:
            with _quiet_vmap():
                g = per_example(scored, x, y)
        for key, (pname, idx) in columns.items():
            weight = scored[pname]
            mask = _effective_mask(ctx.model, pname)
            value = weight * mask if mask is not None else weight
            prod = (value[None] * g[pname])[:, :, idx.flatten()]          # (examples, out, h*d)
            gates[key].append(prod.reshape(prod.shape[0], -1, *idx.shape).sum(dim=(1, 3))
                              .double())
    ctx.model.zero_grad(set_to_none=True)
    return {key: torch.cat(v) for key, v in gates.items()}


def _effective_mask(model: nn.Module, pname: str) -> torch.Tensor | None:
    """The pruning mask of a ``..._orig`` parameter (the forward multiplies it in)."""
    if not pname.endswith("_orig"):
        return None
    owner_name, _, attr = pname.rpartition(".")
    owner = model.get_submodule(owner_name) if owner_name else model
    return getattr(owner, attr[: -len("_orig")] + "_mask")


@contextlib.contextmanager
def _quiet_vmap():
    """vmap falls back to a loop for some attention kernels and warns about the speed; the
    result is exact, so the warning would only alarm users."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="There is a performance drop")
        yield
