"""Attention-head pruning by masks (``mode="mask"``): no speed-up, shapes kept.

Real removal, which makes a model smaller and faster, is in
:mod:`xprune_nb.models.mechanisms.attention`; masks stay available for comparison (Michel et al.
2019 measure heads this way).

A head's output is its attention-weighted sum of value vectors; masking the head's rows of the
query, key and value projections (``in_proj_weight``/``in_proj_bias``) makes its values zero, so
the head contributes nothing to the output projection — exactly as if it were removed. The
module keeps its shapes: ``nn.MultiheadAttention`` ties its inner width to the model's width, so
dropping a head for real would mean replacing the module. Like weight masks, masked heads save
no time on dense kernels (Michel et al. 2019 measure what a head contributes the same way).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import prune

__all__ = ["attention_modules", "head_rows", "alive_heads", "apply_head_removal",
           "head_view", "mask_heads", "alive_in_groups"]


def attention_modules(model: nn.Module, executed: set[str] | None = None
                      ) -> tuple[dict[str, nn.MultiheadAttention], dict[str, str]]:
    """Maskable attention modules by name, and the ones that are not (with why)."""
    found, skipped = {}, {}
    for name, module in model.named_modules():
        if not isinstance(module, nn.MultiheadAttention):
            continue
        if executed is not None and name not in executed:
            skipped[name] = "never runs in the model's forward"
        elif not module._qkv_same_embed_dim:
            skipped[name] = "separate q/k/v projections (kdim/vdim) are not supported"
        elif module.num_heads < 2:
            skipped[name] = "has a single head"
        else:
            found[name] = module
    return found, skipped


def head_rows(module: nn.MultiheadAttention, head: int) -> torch.Tensor:
    """Rows of ``in_proj_weight`` (query, key and value) that belong to ``head``."""
    dim, width = module.embed_dim, module.head_dim
    start = head * width
    return torch.cat([torch.arange(start, start + width) + part * dim for part in range(3)])


def head_view(tensor: torch.Tensor, module: nn.MultiheadAttention) -> torch.Tensor:
    """``(3 * embed_dim, ...)`` in-projection rows as ``(3, heads, head_dim, ...)``."""
    return tensor.reshape(3, module.num_heads, module.head_dim, *tensor.shape[1:])


def alive_heads(modules: dict[str, nn.MultiheadAttention]) -> dict[str, torch.Tensor]:
    """Boolean (heads,) per module: True where the head is not masked."""
    out = {}
    for name, module in modules.items():
        if hasattr(module, "in_proj_weight_mask"):
            rows = head_view(module.in_proj_weight_mask, module)
            out[name] = rows.flatten(2).any(dim=2).any(dim=0)
        else:
            out[name] = torch.ones(module.num_heads, dtype=torch.bool)
    return out


def apply_head_removal(modules: dict[str, nn.MultiheadAttention],
                       removal: dict[str, torch.Tensor]) -> None:
    """Mask, in place, the heads ``removal[name]`` of each module."""
    for name, heads in removal.items():
        module = modules[name]
        for param in ("in_proj_weight", "in_proj_bias"):
            current = getattr(module, param)
            if current is None:
                continue
            keep = torch.ones_like(current)
            for head in heads.tolist():
                keep[head_rows(module, int(head))] = 0
            if hasattr(module, param + "_mask"):
                getattr(module, param + "_mask").mul_(keep)
                with torch.no_grad():
                    setattr(module, param, getattr(module, param + "_orig")
                            * getattr(module, param + "_mask"))
            else:
                prune.custom_from_mask(module, param, keep)


def mask_heads(model: nn.Module, group, heads) -> None:
    """Mask, in place, ``heads`` of any attention style found by
    :func:`xprune_nb.models.mechanisms.attention.find_heads` (``group`` is its ``HeadGroup``).

    ``nn.MultiheadAttention`` is masked as by :func:`apply_head_removal` (q/k/v rows); other
    styles lose every weight :func:`~xprune_nb.models.mechanisms.attention.head_slices` lists for
    the head (q/k/v rows and output-projection columns), so the head contributes nothing.
    """
    from ..models.mechanisms.attention import head_slices

    module = model.get_submodule(group.name) if group.name else model
    heads = [int(h) for h in heads]
    if group.kind == "mha":
        apply_head_removal({group.name: module}, {group.name: torch.tensor(heads)})
        return
    keep: dict[tuple[int, str], tuple[nn.Module, str, torch.Tensor]] = {}
    for owner, name, dim, idx in head_slices(model, group):
        if name not in owner._parameters and name + "_orig" not in owner._parameters:
            continue   # buffers (BatchNorm statistics) are not masked
        key = (id(owner), name)
        if key not in keep:
            keep[key] = (owner, name, torch.ones_like(getattr(owner, name)))
        keep[key][2].movedim(dim, 0)[idx[heads].flatten()] = 0   # a view: writes the mask
    for owner, name, mask in keep.values():
        if hasattr(owner, name + "_mask"):
            getattr(owner, name + "_mask").mul_(mask)
            with torch.no_grad():
                setattr(owner, name, getattr(owner, name + "_orig")
                        * getattr(owner, name + "_mask"))
        else:
            prune.custom_from_mask(owner, name, mask)


def alive_in_groups(model: nn.Module, groups) -> dict[str, torch.Tensor]:
    """Boolean (heads,) per group: True where some output-projection column of the head (or,
    for ``nn.MultiheadAttention``, some q/k/v row) is not masked."""
    from ..models.mechanisms.attention import head_slices

    out = {}
    for group in groups:
        module = model.get_submodule(group.name) if group.name else model
        if group.kind == "mha":
            out[group.name] = alive_heads({group.name: module})[group.name]
            continue
        owner, name, dim, idx = head_slices(model, group)[-1]
        mask = getattr(owner, name + "_mask", None)
        if mask is None:
            out[group.name] = torch.ones(group.num_heads, dtype=torch.bool)
        else:
            cols = mask.movedim(dim, 0)[idx.flatten()].reshape(group.num_heads, -1)
            out[group.name] = cols.bool().any(dim=1)
    return out
