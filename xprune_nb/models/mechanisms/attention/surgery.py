"""Removing attention heads for real, and the per-head numbers criteria need.

:func:`remove_heads` takes a plan of plain data, ``{module name: [head indices]}``, so a recorded
plan replays on a fresh copy of the original model and gives the same shapes. It shrinks the
q/k/v rows and the output projection's columns of each listed head and updates the module's head
count, so parameters, MACs and latency all fall. ``nn.MultiheadAttention`` modules named in a plan
are first swapped for an exact :class:`~xprune_nb.models.mechanisms.attention.sdpa.SDPAttention`.

torch-pruning's own head pruning (``num_heads`` / ``prune_num_heads``) picks heads by its own
importance; here the heads come from the study's criteria, so the surgery is done directly with
``index_select`` on the tensors :func:`~xprune_nb.models.mechanisms.attention.discovery.head_slices`
lists, which is exact for every supported style.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence

import torch
from torch import nn

from ....core.errors import PruneError
from .discovery import HEAD_COUNT_ATTRS, HeadGroup, find_heads, head_slices
from .sdpa import SDPAttention

__all__ = ["remove_heads", "check_head_plan", "head_magnitude", "head_gates", "output_columns"]


def check_head_plan(model: nn.Module, plan: Mapping[str, Sequence[int]],
                    call: str = "remove_heads") -> dict[str, HeadGroup]:
    """Validate ``plan`` against ``model``; return the head group of every planned module.

    Raises
    ------
    PruneError
        A name that is not a prunable attention module (with the reason), a head index out of
        range or repeated, or a plan that would remove every head of a layer.
    """
    if not isinstance(plan, Mapping):
        raise PruneError(f"{call}(plan=...): expected a dict {{module name: [head indices]}}, "
                         f"got {type(plan).__name__}")
    groups, skipped = find_heads(model)
    by_name = {g.name: g for g in groups}
    out = {}
    for name, heads in plan.items():
        if name not in by_name:
            why = skipped.get(name, "not an attention module of this model")
            raise PruneError(f"{call}(plan=...): cannot remove heads of {name!r}: {why}")
        group = by_name[name]
        try:
            idx = [int(h) for h in heads]
        except (TypeError, ValueError):
            raise PruneError(f"{call}(plan=...): heads of {name!r} must be integers, "
                             f"got {heads!r}") from None
        if any(h < 0 or h >= group.num_heads for h in idx) or len(set(idx)) != len(idx):
            raise PruneError(f"{call}(plan=...): heads of {name!r} must be distinct indices in "
                             f"[0, {group.num_heads}), got {idx}")
        if len(idx) >= group.num_heads:
            raise PruneError(f"{call}(plan=...): would remove every head of {name!r} "
                             f"({group.num_heads} heads); keep at least one (or remove the "
                             "whole block instead)")
        out[name] = group
    return out


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, attr, new)


def _slice(module: nn.Module, tensor_name: str, dim: int, index: torch.Tensor) -> None:
    """Keep ``index`` along ``dim`` of a parameter or buffer (pruning masks kept in step)."""
    if tensor_name + "_orig" in module._parameters:   # torch.nn.utils.prune masks the tensor
        orig = module._parameters[tensor_name + "_orig"]
        mask = module._buffers[tensor_name + "_mask"]
        new = nn.Parameter(orig.detach().index_select(dim, index.to(orig.device)),
                           requires_grad=orig.requires_grad)
        module._parameters[tensor_name + "_orig"] = new
        module._buffers[tensor_name + "_mask"] = mask.index_select(dim, index.to(mask.device))
        setattr(module, tensor_name, new * module._buffers[tensor_name + "_mask"])
        return
    if tensor_name in module._parameters:
        old = module._parameters[tensor_name]
        module._parameters[tensor_name] = nn.Parameter(
            old.detach().index_select(dim, index.to(old.device)),
            requires_grad=old.requires_grad)
    else:
        old = module._buffers[tensor_name]
        module._buffers[tensor_name] = old.index_select(dim, index.to(old.device))


def _shrink(model: nn.Module, group: HeadGroup, keep: list[int]) -> None:
    module = model.get_submodule(group.name) if group.name else model
    for owner, tensor_name, dim, idx in head_slices(model, group):
        # sorted: surviving rows keep their original order (q|k|v blocks of a fused layer)
        _slice(owner, tensor_name, dim, idx[keep].flatten().sort().values)
        if isinstance(owner, nn.Linear):
            owner.out_features, owner.in_features = owner.weight.shape
        elif isinstance(owner, nn.modules.batchnorm._BatchNorm):
            owner.num_features = owner.weight.shape[0]
    heads = len(keep)
    if group.kind == "sdpa":
        module.num_heads = heads
        module.head_ids = tuple(module.head_ids[i] for i in keep)
    elif group.kind == "levit":
        module.num_attention_heads = heads
        module.out_dim_keys_values = heads * (2 * group.head_dim + group.value_dim)
        module.out_dim_projection = heads * group.value_dim
        module.attention_bias_cache = {}   # cached per-device slices of the old bias table
    else:
        for attr in HEAD_COUNT_ATTRS:
            if isinstance(getattr(module, attr, None), int):
                setattr(module, attr, heads)
        if isinstance(getattr(module, "all_head_size", None), int):
            module.all_head_size = heads * group.value_dim


def remove_heads(model: nn.Module, plan: Mapping[str, Sequence[int]]) -> dict[str, list[int]]:
    """Remove, in place, the heads ``plan[name]`` of each attention module ``name``.

    Head indices refer to the model as it is before the call. The plan is checked in full
    before anything changes.

    Parameters
    ----------
    model : nn.Module
    plan : dict
        Module name -> head indices to remove (plain data: it replays on a fresh copy of the
        same model).

    Returns
    -------
    dict
        The plan as applied (sorted indices), for recording.

    Raises
    ------
    PruneError
        See :func:`check_head_plan`; the model is unchanged then.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> layer = nn.TransformerEncoderLayer(16, 4, 32, batch_first=True).eval()
    >>> remove_heads(layer, {"self_attn": [0, 3]})
    {'self_attn': [0, 3]}
    >>> layer.self_attn.num_heads, layer.self_attn.q_proj.weight.shape
    (2, torch.Size([8, 16]))
    >>> layer(torch.zeros(2, 5, 16)).shape
    torch.Size([2, 5, 16])
    """
    groups = check_head_plan(model, plan)
    applied = {name: sorted(int(h) for h in plan[name]) for name in groups}
    for name, group in groups.items():
        if not applied[name]:
            continue
        if group.kind == "mha":   # its inner width is tied to embed_dim: swap for SDPAttention
            _replace(model, name, SDPAttention.from_mha(model.get_submodule(name)))
            group = HeadGroup(name, "sdpa", group.num_heads, group.head_dim, group.value_dim,
                              f"{name}.out_proj")
            for module in model.modules():
                if isinstance(module, nn.TransformerEncoder):
                    module.use_nested_tensor = False
        removed = set(applied[name])
        _shrink(model, group, [h for h in range(group.num_heads) if h not in removed])
    return applied


def head_magnitude(model: nn.Module, groups: Sequence[HeadGroup] | None = None,
                   p: float = 2.0) -> dict[str, torch.Tensor]:
    """``p``-norm of each head's weights (its q/k/v rows and output-projection columns).

    Examples
    --------
    >>> from torch import nn
    >>> scores = head_magnitude(nn.TransformerEncoderLayer(16, 4, 32))
    >>> scores["self_attn"].shape
    torch.Size([4])
    """
    groups = find_heads(model)[0] if groups is None else groups
    out = {}
    for group in groups:
        parts = []
        for owner, tensor_name, dim, idx in head_slices(model, group):
            if isinstance(owner, nn.modules.batchnorm._BatchNorm):
                continue   # running statistics are not weights
            t = getattr(owner, tensor_name).detach().double().movedim(dim, 0)
            parts.append(t[idx.flatten().to(t.device)].reshape(group.num_heads, -1).cpu())
        out[group.name] = torch.cat(parts, dim=1).norm(p=p, dim=1).float()
    return out


def output_columns(model: nn.Module, group: HeadGroup) -> tuple[str, torch.Tensor]:
    """``(qualified parameter name, (heads, value_dim) column indices)`` of the output
    projection's weight: scaling head h's columns by g gates the head's output by g, for every
    attention style (criteria get per-example gate derivatives as the sum over these columns of
    weight x gradient, through ``torch.func.functional_call``).

    Examples
    --------
    >>> from torch import nn
    >>> name, cols = output_columns(nn.MultiheadAttention(8, 2), find_heads(
    ...     nn.MultiheadAttention(8, 2))[0][0])
    >>> name, cols.shape
    ('out_proj.weight', torch.Size([2, 4]))
    """
    owner, tensor_name, _dim, idx = head_slices(model, group)[-1]
    names = {m: n for n, m in model.named_modules()}
    base = tensor_name + "_orig" if tensor_name + "_orig" in owner._parameters else tensor_name
    prefix = names[owner]
    return (f"{prefix}.{base}" if prefix else base), idx


def _gate_linear_input(gate: torch.Tensor):
    def hook(_module, args):
        x = args[0]
        shaped = x.reshape(*x.shape[:-1], gate.numel(), -1) * gate.to(x.dtype).unsqueeze(-1)
        return (shaped.reshape(x.shape), *args[1:])
    return hook


def _gate_mha_values(module: nn.MultiheadAttention, gate: torch.Tensor):
    """nn.MultiheadAttention calls its out_proj functionally, so gate the value rows instead:
    a head's output is linear in its values (attention weights sum to one)."""
    e, d = module.embed_dim, module.head_dim
    fused = module._qkv_same_embed_dim
    names = ["in_proj_weight" if fused else "v_proj_weight"]
    if module.in_proj_bias is not None:
        names.append("in_proj_bias")
    saved = {}

    def factor(tensor: torch.Tensor) -> torch.Tensor:
        per_row = gate.to(tensor.device, tensor.dtype).repeat_interleave(d)
        if tensor.shape[0] == 3 * e and not (not fused and tensor.dim() == 2):
            per_row = torch.cat([torch.ones(2 * e, dtype=tensor.dtype,
                                            device=tensor.device), per_row])
        return per_row.unsqueeze(-1) if tensor.dim() == 2 else per_row

    def pre(_module, _args):
        for name in names:
            saved[name] = module._parameters[name]
            module._parameters[name] = saved[name] * factor(saved[name])

    def post(_module, _args, _out):
        module._parameters.update(saved)
        saved.clear()

    post.restore = lambda: post(None, None, None)   # also after a forward that raised
    return pre, post


@contextlib.contextmanager
def head_gates(model: nn.Module, groups: Sequence[HeadGroup] | None = None,
               values: Mapping[str, torch.Tensor] | None = None
               ) -> Iterator[dict[str, torch.Tensor]]:
    """Multiply each head's output by a gate while the context is open.

    Yields ``{module name: gate}`` with gates of ones (or ``values``) that require grad: after
    a forward and ``backward`` on some objective, ``gate.grad`` is the derivative of the
    objective with respect to each head's contribution (the quantity Taylor and attention-head
    relevance scores are built from). A gate of 0 silences a head exactly as removing it does.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> layer = nn.TransformerEncoderLayer(16, 4, 32, batch_first=True).eval()
    >>> with head_gates(layer) as gates:
    ...     layer(torch.randn(2, 5, 16)).sum().backward()
    >>> gates["self_attn"].grad.shape
    torch.Size([4])
    """
    groups = find_heads(model)[0] if groups is None else groups
    values = values or {}
    gates, handles, restores = {}, [], []
    try:
        for group in groups:
            start = values.get(group.name, torch.ones(group.num_heads))
            gate = start.detach().clone().float().requires_grad_(True)
            gates[group.name] = gate
            module = model.get_submodule(group.name) if group.name else model
            if group.kind == "mha":
                pre, post = _gate_mha_values(module, gate)
                handles.append(module.register_forward_pre_hook(pre))
                handles.append(module.register_forward_hook(post))
                restores.append(post.restore)
            else:
                out = model.get_submodule(group.out_proj)
                handles.append(out.register_forward_pre_hook(_gate_linear_input(gate)))
        yield gates
    finally:
        for handle in handles:
            handle.remove()
        for restore in restores:   # a forward that raised never reached its post-hook
            restore()
