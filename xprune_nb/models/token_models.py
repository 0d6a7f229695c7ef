"""Zoo architectures that read a digit as a sequence of tokens: a Vision Transformer over 2x2
patches (:class:`DigitsViT`, on the prunable
:class:`~xprune_nb.models.mechanisms.attention.SDPAttention`) and an LSTM over the image rows
(:class:`DigitsLSTM`).

They follow the habits of :mod:`xprune_nb.models` (own activation instances, classifier called
``head``, every constructor argument has a default) and are re-exported there.

Examples
--------
>>> import torch
>>> DigitsViT()(torch.zeros(2, 1, 8, 8)).shape, DigitsLSTM()(torch.zeros(2, 1, 8, 8)).shape
(torch.Size([2, 10]), torch.Size([2, 10]))
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ViTBlock", "DigitsViT", "DigitsLSTM"]


class ViTBlock(nn.Module):
    """Pre-norm ViT block on :class:`~xprune_nb.models.mechanisms.attention.SDPAttention`.

    The attention has separate q/k/v/out projections, so its heads can be removed for real, and
    the block maps tokens to tokens of the same shape, so it can be removed whole.

    Parameters
    ----------
    dim : int, default 32
    heads : int, default 4
    mlp_dim : int, default 64

    Examples
    --------
    >>> import torch
    >>> ViTBlock()(torch.zeros(2, 16, 32)).shape
    torch.Size([2, 16, 32])
    """

    def __init__(self, dim: int = 32, heads: int = 4, mlp_dim: int = 64) -> None:
        super().__init__()
        from .mechanisms.attention.sdpa import SDPAttention  # lazy: models stay import-light

        self.norm1 = nn.LayerNorm(dim)
        self.attn = SDPAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, mlp_dim)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(mlp_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.fc2(self.relu(self.fc1(self.norm2(x))))


class DigitsViT(nn.Module):
    """A small Vision Transformer over the 8x8 digits: 2x2 patches are 16 tokens.

    Each 2x2 patch (4 pixels) is embedded by a linear layer, learned positions are added,
    ``depth`` :class:`ViTBlock` layers mix the tokens, and the mean token (after a final
    LayerNorm) feeds a linear head.

    Parameters
    ----------
    num_classes : int, default 10
    dim : int, default 32
    heads : int, default 4
    mlp_dim : int, default 64
    depth : int, default 4
    patch : int, default 2
        Patch side in pixels (must divide 8).

    Examples
    --------
    >>> import torch
    >>> DigitsViT()(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 10])
    """

    def __init__(self, num_classes: int = 10, dim: int = 32, heads: int = 4,
                 mlp_dim: int = 64, depth: int = 4, patch: int = 2) -> None:
        super().__init__()
        self.patch = patch
        tokens = (8 // patch) ** 2
        self.embed = nn.Linear(patch * patch, dim)
        self.pos = nn.Parameter(torch.zeros(1, tokens, dim))
        self.blocks = nn.ModuleList([ViTBlock(dim, heads, mlp_dim) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.pos, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, p = x.shape[0], self.patch
        side = 8 // p
        # (N, 1, 8, 8) -> (N, side*side patches, p*p pixels), row-major patch order
        patches = x.reshape(n, side, p, side, p).permute(0, 1, 3, 2, 4).reshape(n, -1, p * p)
        tokens = self.embed(patches) + self.pos
        for block in self.blocks:
            tokens = block(tokens)
        return self.head(self.norm(tokens).mean(dim=1))


class DigitsLSTM(nn.Module):
    """A small recurrent classifier: the 8 rows of a digit image are read as a sequence.

    An ``nn.LSTM`` (8 pixels per step) runs over the rows; its output at the last step feeds a
    linear head. Its hidden units can be removed with
    :func:`xprune_nb.models.mechanisms.recurrent.remove_hidden_units`.

    Parameters
    ----------
    num_classes : int, default 10
    hidden : int, default 32
    layers : int, default 1

    Examples
    --------
    >>> import torch
    >>> DigitsLSTM()(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 10])
    """

    def __init__(self, num_classes: int = 10, hidden: int = 32, layers: int = 1) -> None:
        super().__init__()
        self.rnn = nn.LSTM(8, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(torch.flatten(x, 1, 2))   # (N, 8 rows, 8 pixels)
        return self.head(out[:, -1])
