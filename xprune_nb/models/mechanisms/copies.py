"""Copies of a model for the explainers that must not touch it (pruning masks baked in)."""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["detached_copy", "needs_detached_copy"]


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
