"""``SDPAttention``: a drop-in ``nn.MultiheadAttention`` whose heads can be removed for real.

``nn.MultiheadAttention`` ties its inner width (``num_heads * head_dim``) to the model width
``embed_dim`` and keeps q/k/v in one fused ``in_proj_weight``, so a head cannot be dropped without
replacing the module. :class:`SDPAttention` has the same forward signature and return values, but
separate ``q_proj``/``k_proj``/``v_proj``/``out_proj`` ``Linear`` layers whose inner width may
shrink below ``embed_dim``; the attention itself runs in ``F.scaled_dot_product_attention``.

:func:`convert_mha` swaps every ``nn.MultiheadAttention`` of a model (also inside
``nn.TransformerEncoderLayer``) for an exact copy; outputs agree to float rounding.

Examples
--------
>>> import torch
>>> mha = torch.nn.MultiheadAttention(8, 2, batch_first=True).eval()
>>> sdpa = SDPAttention.from_mha(mha).eval()
>>> x = torch.randn(3, 5, 8)
>>> torch.allclose(mha(x, x, x)[0], sdpa(x, x, x)[0], atol=1e-5)
True
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ....core.errors import ModelError

__all__ = ["SDPAttention", "convert_mha"]


class SDPAttention(nn.Module):
    """Multi-head attention with separate projections and a shrinkable inner width.

    Parameters
    ----------
    embed_dim : int, default 32
        Width of the query input and of the output.
    num_heads : int, default 4
    head_dim : int or None
        Width of one head; ``embed_dim // num_heads`` when None.
    dropout : float, default 0.0
        Dropout on the attention weights (training only), as in ``nn.MultiheadAttention``.
    bias : bool, default True
    batch_first : bool, default False
        Inputs and outputs are ``(batch, seq, feature)`` when True, ``(seq, batch, feature)``
        otherwise (as in ``nn.MultiheadAttention``).
    kdim, vdim : int or None
        Widths of the key and value inputs (``embed_dim`` when None).

    Attributes
    ----------
    head_ids : tuple of int
        Which heads of the original module the remaining heads are, in order (a 3-D
        ``attn_mask`` written for the original head count is sliced with it).

    Examples
    --------
    >>> import torch
    >>> attn = SDPAttention(16, 4, batch_first=True)
    >>> out, weights = attn(torch.zeros(2, 3, 16), torch.zeros(2, 3, 16), torch.zeros(2, 3, 16))
    >>> out.shape, weights.shape
    (torch.Size([2, 3, 16]), torch.Size([2, 3, 3]))
    """

    # TransformerEncoderLayer / TransformerEncoder read these before choosing their fused fast
    # path; ``in_proj_bias = None`` makes them take the regular path, which calls self_attn.
    in_proj_weight = None
    in_proj_bias = None
    _qkv_same_embed_dim = False

    def __init__(self, embed_dim: int = 32, num_heads: int = 4, head_dim: int | None = None,
                 dropout: float = 0.0, bias: bool = True, batch_first: bool = False,
                 kdim: int | None = None, vdim: int | None = None) -> None:
        super().__init__()
        if num_heads < 1 or embed_dim < 1:
            raise ModelError(f"SDPAttention(num_heads={num_heads}, embed_dim={embed_dim}): "
                             "both must be positive")
        if head_dim is None:
            if embed_dim % num_heads:
                raise ModelError(f"SDPAttention(embed_dim={embed_dim}, num_heads={num_heads}): "
                                 "embed_dim must be divisible by num_heads, or give head_dim")
            head_dim = embed_dim // num_heads
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, head_dim
        self.kdim, self.vdim = kdim or embed_dim, vdim or embed_dim
        self.dropout, self.batch_first = dropout, batch_first
        self.head_ids: tuple[int, ...] = tuple(range(num_heads))
        inner = num_heads * head_dim
        self.q_proj = nn.Linear(embed_dim, inner, bias=bias)
        self.k_proj = nn.Linear(self.kdim, inner, bias=bias)
        self.v_proj = nn.Linear(self.vdim, inner, bias=bias)
        self.out_proj = nn.Linear(inner, embed_dim, bias=bias)

    @classmethod
    def from_mha(cls, mha: nn.MultiheadAttention) -> SDPAttention:
        """An :class:`SDPAttention` computing exactly what ``mha`` computes (weights copied).

        Raises
        ------
        ModelError
            ``mha`` uses ``add_bias_kv`` or ``add_zero_attn``, which have no counterpart here.
        """
        if mha.bias_k is not None or mha.add_zero_attn:
            raise ModelError("SDPAttention.from_mha(mha=...): add_bias_kv / add_zero_attn are "
                             "not supported; the module's heads cannot be removed")
        bias = mha.in_proj_bias is not None
        new = cls(mha.embed_dim, mha.num_heads, dropout=mha.dropout, bias=bias,
                  batch_first=mha.batch_first, kdim=mha.kdim, vdim=mha.vdim)
        e = mha.embed_dim
        with torch.no_grad():
            if mha._qkv_same_embed_dim:
                weights = mha.in_proj_weight.split(e)
            else:
                weights = (mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight)
            for proj, w, part in zip((new.q_proj, new.k_proj, new.v_proj), weights, range(3)):
                proj.weight.copy_(w)
                if bias:
                    proj.bias.copy_(mha.in_proj_bias[part * e:(part + 1) * e])
            new.out_proj.weight.copy_(mha.out_proj.weight)
            if bias:
                new.out_proj.bias.copy_(mha.out_proj.bias)
        new.train(mha.training)
        return new.to(mha.out_proj.weight.device, mha.out_proj.weight.dtype)

    def extra_repr(self) -> str:
        return (f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, "
                f"head_dim={self.head_dim}, batch_first={self.batch_first}")

    def _heads(self, x: torch.Tensor, proj: nn.Linear) -> torch.Tensor:
        # (N, S, E) -> (N, H, S, head_dim)
        n, s = x.shape[:2]
        return proj(x).view(n, s, -1, self.head_dim).transpose(1, 2)

    def _mask(self, attn_mask, key_padding_mask, n: int, length: int, src: int,
              dtype: torch.dtype) -> torch.Tensor | None:
        """One additive float mask broadcastable to (N, H, L, S), MHA's conventions."""
        def additive(mask):
            if mask.dtype == torch.bool:   # MHA: True means "may not attend"
                return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(
                    mask, float("-inf"))
            return mask.to(dtype)
        merged = None
        if attn_mask is not None:
            merged = additive(attn_mask)
            if merged.dim() == 3:
                heads = merged.shape[0] // n
                merged = merged.view(n, heads, length, src)
                if heads != self.num_heads:   # written for the original heads: keep ours
                    merged = merged[:, list(self.head_ids)]
        if key_padding_mask is not None:
            pad = additive(key_padding_mask).view(n, 1, 1, src)
            merged = pad if merged is None else merged + pad
        return merged

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                key_padding_mask: torch.Tensor | None = None, need_weights: bool = True,
                attn_mask: torch.Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Same arguments and return values as ``nn.MultiheadAttention.forward``."""
        unbatched = query.dim() == 2
        if unbatched:
            query, key, value = (t.unsqueeze(1) for t in (query, key, value))
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        elif self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        # internally (S, N, E) -> (N, S, E)
        query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        n, length, src = query.shape[0], query.shape[1], key.shape[1]
        q, k, v = (self._heads(query, self.q_proj), self._heads(key, self.k_proj),
                   self._heads(value, self.v_proj))
        if is_causal and attn_mask is None:
            attn_mask = torch.ones(length, src, dtype=torch.bool, device=q.device).triu(1)
        mask = self._mask(attn_mask, key_padding_mask, n, length, src, q.dtype)
        dropout = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)
            if mask is not None:
                scores = scores + mask
            weights = scores.softmax(dim=-1)
            out = F.dropout(weights, dropout, training=self.training) @ v
            if average_attn_weights:
                weights = weights.mean(dim=1)
            if unbatched:
                weights = weights.squeeze(0)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        out = self.out_proj(out.transpose(1, 2).reshape(n, length, -1))   # (N, L, E)
        if unbatched:
            return out.squeeze(0), weights
        return (out if self.batch_first else out.transpose(0, 1)), weights


def convert_mha(model: nn.Module) -> list[str]:
    """Replace, in place, every ``nn.MultiheadAttention`` of ``model`` by :class:`SDPAttention`.

    Each replacement computes what the original computed (weights copied). A
    ``nn.TransformerEncoder`` above a replaced layer stops converting padded batches to nested
    tensors, which only its fused fast path could read.

    Returns
    -------
    list of str
        The names of the replaced modules.

    Raises
    ------
    ModelError
        One of the modules uses ``add_bias_kv`` / ``add_zero_attn`` (nothing is replaced then).

    Examples
    --------
    >>> from torch import nn
    >>> layer = nn.TransformerEncoderLayer(16, 4, 32, batch_first=True)
    >>> convert_mha(layer)
    ['self_attn']
    """
    targets = [(name, module) for name, module in model.named_modules()
               if isinstance(module, nn.MultiheadAttention)]
    if targets and targets[0][0] == "":
        raise ModelError("convert_mha(model=...): the model itself is an "
                         "nn.MultiheadAttention; use SDPAttention.from_mha(model)")
    replacements = {}
    for name, module in targets:   # build every replacement first: all or nothing
        try:
            replacements[name] = SDPAttention.from_mha(module)
        except ModelError as exc:
            raise ModelError(f"convert_mha: cannot replace {name!r}: {exc}") from None
    for name, new in replacements.items():
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, new)
    if replacements:
        for module in model.modules():
            if isinstance(module, nn.TransformerEncoder):
                module.use_nested_tensor = False
    return list(replacements)
