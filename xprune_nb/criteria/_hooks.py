"""Shared machinery for criteria that look at layer outputs and their gradients."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..data.batch import take
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

    With ``backward``, each layer's statistic is taken as soon as its gradient arrives (a
    tensor hook during the backward pass) and added in place to a running total; no gradient is
    retained: peak memory is the model plus one batch's activations and gradients, as for a
    plain training step, not every layer's output gradient held until the end of the batch.
    """
    from torch import nn

    totals: dict[str, torch.Tensor | None] = {name: None for name in ctx.layers}
    is_conv = {name: isinstance(layer, nn.modules.conv._ConvNd)
               for name, layer in ctx.layers.items()}
    #: per layer, its output in this batch (its last call) until the output's gradient arrives
    waiting: dict[str, torch.Tensor] = {}

    def add(name: str, out: torch.Tensor, grad: torch.Tensor | None) -> None:
        a = unit_view(out.detach(), is_conv[name])
        g = None if grad is None else unit_view(grad.detach(), is_conv[name])
        if backward and g is None:      # the output does not reach the loss: no gradient
            g = torch.zeros_like(a)
        value = stat(a, g).double()
        if totals[name] is None:
            totals[name] = value
        else:
            totals[name] += value

    def on_grad(grad: torch.Tensor, name: str) -> None:
        out = waiting.pop(name, None)
        if out is not None:
            add(name, out, grad)

    def hook(module, inputs, output, name):
        waiting[name] = output

    handles = [layer.register_forward_hook(lambda m, i, o, n=name: hook(m, i, o, n))
               for name, layer in ctx.layers.items()]
    count = 0
    try:
        for x, y in ctx.batches():
            waiting.clear()
            with torch.set_grad_enabled(backward):
                logits = ctx.forward(ctx.model, x)
                if backward:
                    # hooked after the forward pass, so an output changed in place later
                    # (``ReLU(inplace=True)``) gets the gradient of its final value, as
                    # ``retain_grad`` would give; the hook holds the name, not the tensor
                    for name, out in waiting.items():
                        if out.requires_grad:
                            out.register_hook(lambda g, n=name: on_grad(g, n))
                    ctx.model.zero_grad(set_to_none=True)
                    objective(ctx, logits, y).backward()
            del logits
            # forward only: every output; with backward: the outputs no gradient reached
            for name, out in list(waiting.items()):
                add(name, out, None)
            waiting.clear()
            count += len(y)
    finally:
        for h in handles:
            h.remove()
        waiting.clear()
        if backward:
            ctx.model.zero_grad(set_to_none=True)
    return {name: (t / max(count, 1)).float() for name, t in totals.items() if t is not None}


def per_example_weight_stats(ctx: ScoringContext, stat: Callable[[str, torch.Tensor],
                              torch.Tensor]) -> dict[str, torch.Tensor]:
    """Mean over the reference examples of ``stat(layer, g_i)``, where ``g_i`` is the gradient
    of example i's loss w.r.t. the layer's (effective) weight.

    Per-example gradients matter: at a trained optimum the loss gradient summed over many
    examples nearly cancels, so a summed gradient scores weights by noise. They are computed
    with ``torch.func`` (vmap over examples); models that vmap cannot trace fall back to one
    backward pass per example.
    """
    names = {}
    for layer_name, layer in ctx.layers.items():
        param = "weight_orig" if hasattr(layer, "weight_orig") else "weight"
        names[layer_name] = f"{layer_name}.{param}" if layer_name else param
    params = {k: v.detach() for k, v in ctx.model.named_parameters()}
    buffers = {k: v.detach() for k, v in ctx.model.named_buffers()}
    totals = {layer: torch.zeros_like(params[full], dtype=torch.float64)
              for layer, full in names.items()}
    count = 0
    try:
        grads_of = _vmapped_grads(ctx, names, params, buffers)
        for x, y in ctx.batches():
            with _quiet_vmap():
                grads = grads_of(x, y)
            for layer, g in grads.items():
                totals[layer] += stat(layer, g).double().sum(0)
            count += len(y)
    except Exception:  # noqa: BLE001 - vmap cannot trace every model: loop over examples
        totals = {k: torch.zeros_like(v) for k, v in totals.items()}
        count = 0
        for x, y in ctx.batches():
            for i in range(len(y)):
                grads = _single_grads(ctx, names, params, take(x, slice(i, i + 1)),
                                      y[i:i + 1])
                for layer, g in grads.items():
                    totals[layer] += stat(layer, g[None]).double().sum(0)
            count += len(y)
    finally:
        ctx.model.zero_grad(set_to_none=True)
    return {layer: (t / max(count, 1)).float() for layer, t in totals.items()}


def _vmapped_grads(ctx, names, params, buffers):
    from torch.func import functional_call, grad, vmap

    scored = {full: params[full] for full in names.values()}
    fixed = {k: v for k, v in params.items() if k not in scored}

    def loss(trainable, x, y):
        out = functional_call(ctx.model, ({**fixed, **trainable}, buffers), (x[None],))
        logits = ctx.forward(_Given(out), x) if not torch.is_tensor(out) else out
        return F.cross_entropy(logits, y[None], reduction="sum")

    per_example = vmap(grad(loss), in_dims=(None, 0, 0))

    def grads_of(x, y):
        g = per_example(scored, x, y)
        return {layer: g[full] for layer, full in names.items()}
    return grads_of


def _single_grads(ctx, names, params, x, y):
    tensors = dict(ctx.model.named_parameters())
    wanted = [tensors[full] for full in names.values()]
    flags = [t.requires_grad for t in wanted]
    try:
        for t in wanted:
            t.requires_grad_(True)
        grads = torch.autograd.grad(objective(ctx, ctx.forward(ctx.model, x), y), wanted,
                                    allow_unused=True)
    finally:
        for t, f in zip(wanted, flags, strict=True):
            t.requires_grad_(f)
    return {layer: (g if g is not None else torch.zeros_like(t))
            for layer, g, t in zip(names, grads, wanted, strict=True)}


class _Given(torch.nn.Module):
    """Hands an already computed model output to ``ctx.forward`` to extract its logits."""

    def __init__(self, out) -> None:
        super().__init__()
        self.out = out

    def forward(self, x):
        return self.out


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


def per_example_head_gates(ctx: ScoringContext, *, target: str = "loss") -> dict:
    """Per reference example, the derivative of the loss (``target="loss"``) or of the true
    class's logit (``target="logit"``) w.r.t. a gate on each attention head's output, at gate 1
    (Michel et al. 2019); every attention style the head kinds support, removed heads included.
    Returns {module name: (examples, heads) tensor}."""
    from ..models.mechanisms.attention.gates import per_example_head_gates as gates

    return gates(ctx, target=target)


@contextlib.contextmanager
def _quiet_vmap():
    """vmap falls back to a loop for some attention kernels and warns about the speed; the
    result is exact, so the warning would only alarm users."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="There is a performance drop")
        yield
