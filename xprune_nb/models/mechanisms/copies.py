"""Copies of a model: for the explainers that must not touch it (pruning masks baked in), and
shape-only copies on the meta device for trials that only need to know whether it runs."""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["detached_copy", "meta_copy", "needs_detached_copy"]


def needs_detached_copy(model: nn.Module) -> bool:
    """Whether ``model`` holds what an explainer must not see or touch: pruning masks (a
    masked ``weight`` recomputed from ``weight_orig``), parametrizations, or a tensor attribute
    that is part of an autograd graph. A model without any of these can be explained as it is
    by an explainer that only runs it and takes input gradients (no copy of its weights).

    Examples
    --------
    >>> from torch import nn
    >>> from torch.nn.utils import prune
    >>> plain = needs_detached_copy(nn.Linear(3, 2))
    >>> masked = needs_detached_copy(prune.random_unstructured(nn.Linear(3, 2), "weight", 0.5))
    >>> plain, masked
    (False, True)
    """
    from torch.nn.utils import parametrize, prune

    for module in model.modules():
        if parametrize.is_parametrized(module) or any(
                isinstance(h, prune.BasePruningMethod) for h in module._forward_pre_hooks.values()):
            return True
        if any(isinstance(v, torch.Tensor) and v.grad_fn is not None
               for v in vars(module).values()):
            return True
    return False


def detached_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` in eval mode with pruning masks and parametrizations baked in.

    torch's pruning reparametrisation keeps the masked ``weight`` as a non-leaf tensor that
    ``copy.deepcopy`` refuses to copy, and zennit's rules modify ``weight`` parameters, which a
    masked module recomputes from ``weight_orig``; baking the masks on the copy solves both.
    """
    from torch.nn.utils import parametrize, prune

    memo: dict[int, object] = {}
    for module in model.modules():
        for value in vars(module).values():
            if isinstance(value, torch.Tensor) and value.grad_fn is not None:
                memo[id(value)] = value.detach().clone()
    clone = copy.deepcopy(model, memo)
    for module in clone.modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, prune.BasePruningMethod):
                prune.remove(module, hook._tensor_name)
        if parametrize.is_parametrized(module):
            for name in list(module.parametrizations):
                parametrize.remove_parametrizations(module, name, leave_parametrized=True)
    return clone.eval()


def meta_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model``'s structure with every parameter, buffer and tensor attribute on
    the ``meta`` device: shapes without data. Changing it costs no memory and running it no
    arithmetic, so a trial that only asks "does it still run, with which output shape" (the
    channel safety trial) costs milliseconds instead of a copy of the weights and a forward
    pass. Tied parameters stay tied (one meta tensor per original tensor).

    Examples
    --------
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    >>> shell = meta_copy(net)
    >>> shell[0].weight.device.type, shell(torch.zeros(5, 3, device="meta")).shape
    ('meta', torch.Size([5, 2]))
    >>> net[0].weight.device.type          # the model itself is untouched
    'cpu'
    """
    memo: dict[int, object] = {}
    for module in model.modules():
        for p in module._parameters.values():
            if p is not None and id(p) not in memo:
                memo[id(p)] = nn.Parameter(p.detach().to("meta"), requires_grad=p.requires_grad)
        for b in module._buffers.values():
            if b is not None and id(b) not in memo:
                memo[id(b)] = b.detach().to("meta")
        for v in vars(module).values():   # e.g. a masked weight, recomputed from weight_orig
            if isinstance(v, torch.Tensor) and id(v) not in memo:
                memo[id(v)] = v.detach().to("meta")
    return copy.deepcopy(model, memo)
