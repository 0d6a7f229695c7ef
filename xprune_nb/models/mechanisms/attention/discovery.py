"""Finding attention heads in a model, whatever code style its attention is written in.

A :class:`HeadGroup` describes one attention module: how many heads it has and, through
:func:`head_slices`, which rows and columns of which parameters belong to each head. Four styles
are recognised:

``sdpa``
    :class:`~xprune_nb.models.mechanisms.attention.sdpa.SDPAttention`
    (``q_proj``/``k_proj``/``v_proj`` rows, ``out_proj`` columns).
``mha``
    ``nn.MultiheadAttention``; :func:`~xprune_nb.models.mechanisms.attention.surgery.remove_heads`
    first swaps it for an exact :class:`SDPAttention`, since its inner width is tied to the model
    width.
``hf``
    Hugging Face style: separate ``query``/``key``/``value`` (or ``q_proj``/``k_proj``/``v_proj``,
    ``q_lin``/...) ``Linear`` layers, a head-count attribute (``num_attention_heads``,
    ``num_heads`` or ``n_heads``; Llama style: a ``head_dim`` that divides the query width)
    and an output projection in the module (``o_proj``, ``out_proj``, ``proj``, ``dense``,
    ``out_lin``) or next to it (BERT's ``output.dense``).
``fused_qkv``
    timm style: one ``qkv`` ``Linear`` laid out as (q|k|v, head, head_dim), ``num_heads`` and a
    ``proj`` output layer.
``levit``
    LeViT attention (key width different from the value width, one learned attention bias
    table per head): ``queries_keys_values`` Linear+BatchNorm rows laid out per head as
    (key_dim q | key_dim k | attention_ratio*key_dim v), ``attention_biases`` rows and the
    ``projection`` Linear+BatchNorm columns.

Everything else that looks like attention is reported with the reason it cannot lose heads.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .sdpa import SDPAttention

__all__ = ["HeadGroup", "find_heads", "head_slices", "head_count", "HEAD_COUNT_ATTRS"]

#: Attributes that hold a module's head count, in the order they are looked for.
HEAD_COUNT_ATTRS = ("num_attention_heads", "num_heads", "n_heads")
_HEAD_SIZE_ATTRS = ("attention_head_size", "head_dim", "head_size")
_QKV_NAMES = (("query", "key", "value"), ("q_proj", "k_proj", "v_proj"),
              ("q_lin", "k_lin", "v_lin"), ("q", "k", "v"))
_OUT_NAMES = ("o_proj", "out_proj", "proj", "dense", "out_lin", "o", "out")


@dataclass(frozen=True)
class HeadGroup:
    """The heads of one attention module.

    Attributes
    ----------
    name : str
        Module name of the attention module (the key of a removal plan).
    kind : str
        ``"sdpa"``, ``"mha"``, ``"hf"``, ``"fused_qkv"`` or ``"levit"``.
    num_heads : int
    head_dim : int
        Query/key width of one head.
    value_dim : int
        Value width of one head (the output projection reads ``num_heads * value_dim``).
    out_proj : str
        Module name of the ``Linear`` layer that reads the concatenated heads.
    """

    name: str
    kind: str
    num_heads: int
    head_dim: int
    value_dim: int
    out_proj: str


def _linear(module: nn.Module, name: str) -> nn.Linear | None:
    child = getattr(module, name, None)
    return child if isinstance(child, nn.Linear) else None


def _count_attr(module: nn.Module) -> int | None:
    for attr in HEAD_COUNT_ATTRS:
        value = getattr(module, attr, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def head_count(module: nn.Module) -> int | None:
    """The head count of an attention module of any supported style (None if it has none).

    Examples
    --------
    >>> from torch import nn
    >>> head_count(nn.MultiheadAttention(8, 2))
    2
    """
    return _count_attr(module)


def _hf_out(model_modules: dict[str, nn.Module], name: str, module: nn.Module,
            width: int) -> str | None:
    """Name of the Linear reading the heads: a child of the module, or BERT's sibling."""
    names = {id(m): n for n, m in model_modules.items()}
    for attr in _OUT_NAMES:
        out = _linear(module, attr)
        if out is not None and out.in_features == width:
            return names[id(out)]
    parent = model_modules.get(name.rpartition(".")[0]) if "." in name else None
    output = getattr(parent, "output", None) if parent is not None else None
    dense = _linear(output, "dense") if output is not None else None
    if dense is not None and dense.in_features == width:
        return names[id(dense)]
    return None


def _classify(model_modules: dict[str, nn.Module], name: str, module: nn.Module
              ) -> HeadGroup | str | None:
    """A HeadGroup, a reason the attention-like module can't lose heads, or None (no attention)."""
    if isinstance(module, nn.MultiheadAttention):
        if module.bias_k is not None or module.add_zero_attn:
            return "nn.MultiheadAttention with add_bias_kv / add_zero_attn is not supported"
        return HeadGroup(name, "mha", module.num_heads, module.head_dim, module.head_dim,
                         f"{name}.out_proj" if name else "out_proj")
    prefix = f"{name}." if name else ""
    if isinstance(module, SDPAttention):
        return HeadGroup(name, "sdpa", module.num_heads, module.head_dim, module.head_dim,
                         prefix + "out_proj")
    if hasattr(module, "attention_biases") and hasattr(module, "key_dim"):
        if not hasattr(module, "queries_keys_values"):
            return ("LeViT subsampling attention: its queries come from a strided subsample "
                    "with their own per-head layout; only LevitAttention is supported")
        heads = module.num_attention_heads
        return HeadGroup(name, "levit", heads, module.key_dim,
                         module.attention_ratio * module.key_dim, prefix + "projection.linear")
    heads = _count_attr(module)
    if heads and type(getattr(module, "c_attn", None)).__name__ == "Conv1D":
        return "GPT-2 style fused Conv1D c_attn is not supported (its layers can be removed)"
    qkv = _linear(module, "qkv")
    if qkv is not None and heads:
        out = _linear(module, "proj") or _linear(module, "out_proj")
        if out is None or qkv.out_features % (3 * heads):
            return "fused qkv layer without a matching proj/out_proj output layer"
        width = qkv.out_features // (3 * heads)
        attr = "proj" if _linear(module, "proj") is out else "out_proj"
        if out.in_features != heads * width:
            return "fused qkv output width does not match its output projection"
        return HeadGroup(name, "fused_qkv", heads, width, width, prefix + attr)
    for q_name, k_name, v_name in _QKV_NAMES:
        q, k, v = (_linear(module, n) for n in (q_name, k_name, v_name))
        if q is None or k is None or v is None:
            continue
        width = getattr(module, "head_dim", None)
        if not heads and isinstance(width, int) and width > 0 and q.out_features % width == 0:
            heads = q.out_features // width   # Llama style: the forward reshapes with -1 heads
        if not heads:
            return (f"separate {q_name}/{k_name}/{v_name} layers but no head-count attribute "
                    f"({', '.join(HEAD_COUNT_ATTRS)}) or head_dim")
        kv_heads = getattr(module, "num_key_value_heads", heads)
        if kv_heads != heads or k.out_features != q.out_features:
            return "grouped-query attention (fewer key/value heads than query heads)"
        if q.out_features % heads or v.out_features % heads:
            return "projection widths are not a multiple of the head count"
        width, vwidth = q.out_features // heads, v.out_features // heads
        out = _hf_out(model_modules, name, module, v.out_features)
        if out is None:
            return "no output projection reading the concatenated heads was found"
        return HeadGroup(name, "hf", heads, width, vwidth, out)
    return None


def find_heads(model: nn.Module, executed: set[str] | None = None, *, single: bool = False
               ) -> tuple[list[HeadGroup], dict[str, str]]:
    """Attention modules whose heads can be removed, and the others with the reason why not.

    Parameters
    ----------
    model : nn.Module
    executed : set of str, optional
        Names of the modules that run in the model's forward; attention modules outside it are
        reported as never running.
    single : bool, default False
        Also return modules left with a single head (they cannot be pruned further, but
        explanations still map them).

    Returns
    -------
    groups : list of HeadGroup
        In module order.
    skipped : dict
        Module name -> why its heads cannot be removed (e.g. a single head, which would reach
        zero).

    Examples
    --------
    >>> from torch import nn
    >>> groups, skipped = find_heads(nn.TransformerEncoderLayer(16, 4, 32))
    >>> [(g.name, g.kind, g.num_heads) for g in groups]
    [('self_attn', 'mha', 4)]
    """
    modules = dict(model.named_modules())
    groups, skipped = [], {}
    inside: set[str] = set()
    for name, module in modules.items():
        if any(name.startswith(p + ".") for p in inside):
            continue   # the q/k/v Linear layers of an attention module already found
        found = _classify(modules, name, module)
        if found is None:
            continue
        inside.add(name)
        if isinstance(found, str):
            skipped[name] = found
        elif executed is not None and name not in executed:
            skipped[name] = "never runs in the model's forward"
        elif found.num_heads < 2 and not single:
            skipped[name] = "has a single head (removing it would leave zero heads)"
        else:
            groups.append(found)
    return groups, skipped


def _rows(heads: int, width: int, offset: int = 0, stride: int | None = None) -> torch.Tensor:
    """(heads, width) indices: head h owns ``offset + h * stride + [0, width)``."""
    stride = width if stride is None else stride
    base = torch.arange(heads).unsqueeze(1) * stride + offset
    return base + torch.arange(width).unsqueeze(0)


def head_slices(model: nn.Module, group: HeadGroup
                ) -> list[tuple[nn.Module, str, int, torch.Tensor]]:
    """Where each head lives: ``(module, tensor name, dim, (heads, width) indices)`` entries.

    Removing a head removes, from every entry, the indices of its row along ``dim``. Biases of
    the q/k/v layers are included; the output projection's bias is not (it is shared).
    """
    module = model.get_submodule(group.name) if group.name else model
    out = model.get_submodule(group.out_proj)
    h, d, dv = group.num_heads, group.head_dim, group.value_dim
    entries = []

    def linear_rows(layer: nn.Linear, idx: torch.Tensor):
        entries.append((layer, "weight", 0, idx))
        if layer.bias is not None:
            entries.append((layer, "bias", 0, idx))

    if group.kind in ("sdpa", "hf"):
        names = next(n for n in _QKV_NAMES if all(_linear(module, x) for x in n)) \
            if group.kind == "hf" else ("q_proj", "k_proj", "v_proj")
        q, k, v = (getattr(module, n) for n in names)
        linear_rows(q, _rows(h, d))
        linear_rows(k, _rows(h, d))
        linear_rows(v, _rows(h, dv))
    elif group.kind == "fused_qkv":
        idx = torch.cat([_rows(h, d, offset=p * h * d) for p in range(3)], dim=1)
        linear_rows(module.qkv, idx)
    elif group.kind == "mha":
        e = module.embed_dim
        idx = torch.cat([_rows(h, d, offset=p * e) for p in range(3)], dim=1)
        if module._qkv_same_embed_dim:
            entries.append((module, "in_proj_weight", 0, idx))
        else:
            for part in ("q", "k", "v"):
                entries.append((module, f"{part}_proj_weight", 0, _rows(h, d)))
        if module.in_proj_bias is not None:
            entries.append((module, "in_proj_bias", 0, idx))
    elif group.kind == "levit":
        per_head = 2 * d + dv
        qkv = module.queries_keys_values
        linear_rows(qkv.linear, _rows(h, per_head))
        for buffer in ("weight", "bias", "running_mean", "running_var"):
            entries.append((qkv.batch_norm, buffer, 0, _rows(h, per_head)))
        entries.append((module, "attention_biases", 0, _rows(h, 1)))
    entries.append((out, "weight", 1, _rows(h, dv)))
    return entries
