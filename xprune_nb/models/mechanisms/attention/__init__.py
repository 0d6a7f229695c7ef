"""Attention heads: a prunable drop-in for ``nn.MultiheadAttention``, head discovery across
attention styles, real head removal from plain-data plans, and per-head gates and magnitudes.

Examples
--------
>>> import torch
>>> from torch import nn
>>> from xprune_nb.models.mechanisms.attention import find_heads, remove_heads
>>> model = nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 4, 32, batch_first=True), 2)
>>> [g.name for g in find_heads(model)[0]]
['layers.0.self_attn', 'layers.1.self_attn']
>>> remove_heads(model, {"layers.0.self_attn": [1, 2]})
{'layers.0.self_attn': [1, 2]}
>>> model.eval()(torch.zeros(1, 3, 16)).shape
torch.Size([1, 3, 16])
"""

from .discovery import HeadGroup, find_heads, head_count, head_slices
from .sdpa import SDPAttention, convert_mha
from .surgery import check_head_plan, head_gates, head_magnitude, output_columns, remove_heads

__all__ = ["SDPAttention", "convert_mha", "HeadGroup", "find_heads", "head_count", "head_slices",
           "check_head_plan", "remove_heads", "head_magnitude", "head_gates", "output_columns"]
