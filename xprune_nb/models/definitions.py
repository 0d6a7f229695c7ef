"""Small architectures of the model zoo, as plain ``nn.Module`` classes.

Every constructor argument has a default, so a model can be rebuilt from its import path alone
(``xprune_nb.models.DigitsCNN()``), which is how saved studies and exported scripts recreate the
architecture before loading a plain state dict.

Three habits make these models usable by every explainer and pruner in the package:

* every activation is its own ``nn.ReLU()`` instance, never shared and never ``F.relu``: shap's
  DeepExplainer and captum's LRP attach per-module rules and hooks, and a reused module or a
  functional call breaks them;
* flattening is ``torch.flatten(x, 1)`` inside ``forward``: captum's LRP has no rule for
  ``nn.Flatten`` and fails on it;
* the final classifier is always called ``head``, so pruning code can leave the output layer
  (whose width is the number of classes) untouched by name.

Examples
--------
>>> import torch
>>> from xprune_nb.models import DigitsCNN
>>> DigitsCNN()(torch.zeros(2, 1, 8, 8)).shape
torch.Size([2, 10])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = [
    "DigitsCNN",
    "BasicBlock",
    "DigitsResNet",
    "DigitsConcat",
    "EncoderBlock",
    "DigitsTransformer",
    "ViTBlock",
    "DigitsViT",
    "DigitsLSTM",
    "MLP",
    "TabularMLP",
    "ToyMLP",
]


class DigitsCNN(nn.Module):
    """Two Conv-BN-ReLU-MaxPool blocks and a two-layer classifier, for 1x8x8 digits.

    Shapes: 1x8x8 -> 16x4x4 -> 32x2x2 -> 128 -> 64 -> ``num_classes``.

    Parameters
    ----------
    num_classes : int, default 10
    channels : tuple of two ints, default (16, 32)
        Output channels of the two convolution blocks.
    hidden : int, default 64
        Width of the hidden linear layer.

    Examples
    --------
    >>> import torch
    >>> DigitsCNN(num_classes=3)(torch.zeros(1, 1, 8, 8)).shape
    torch.Size([1, 3])
    """

    def __init__(
        self, num_classes: int = 10, channels: tuple[int, int] = (16, 32), hidden: int = 64
    ) -> None:
        super().__init__()
        c1, c2 = channels
        self.conv1 = nn.Conv2d(1, c1, kernel_size=3, padding=1)
        self.bn1 = nn.BatchNorm2d(c1)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(c1, c2, kernel_size=3, padding=1)
        self.bn2 = nn.BatchNorm2d(c2)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(c2 * 2 * 2, hidden)
        self.relu3 = nn.ReLU()
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu1(self.bn1(self.conv1(x))))
        x = self.pool2(self.relu2(self.bn2(self.conv2(x))))
        x = torch.flatten(x, 1)
        return self.head(self.relu3(self.fc1(x)))


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 Conv-BN layers and a residual add.

    The shortcut is the identity (``shortcut`` is ``None``) when the shape is kept, and a 1x1
    Conv-BN projection when the block changes the channel count or the stride.

    Parameters
    ----------
    in_channels, out_channels : int
    stride : int, default 1

    Examples
    --------
    >>> import torch
    >>> BasicBlock(8, 16, stride=2)(torch.zeros(1, 8, 8, 8)).shape
    torch.Size([1, 16, 4, 4])
    """

    def __init__(self, in_channels: int = 16, out_channels: int = 16, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(
            in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False
        )
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu2 = nn.ReLU()
        # No nn.Identity for the identity case: captum's LRP has no rule for it and refuses
        # the whole model, so the identity shortcut is a plain ``x`` in forward instead.
        self.shortcut: nn.Sequential | None = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.shortcut is None else self.shortcut(x)
        return self.relu2(out + identity)


class DigitsResNet(nn.Module):
    """A small ResNet: stem, three basic blocks, global average pooling, linear head.

    ``layer1`` and ``layer3`` have identity shortcuts (their input and output channels are tied
    by the add, which dependency-aware pruning must respect); ``layer2`` halves the resolution
    and doubles the width through a 1x1 projection shortcut.
    Shapes: 1x8x8 -> 16x8x8 -> 16x8x8 -> 32x4x4 -> 32x4x4 -> 32 -> ``num_classes``.

    Parameters
    ----------
    num_classes : int, default 10
    width : int, default 16
        Channels of the stem and first block; the last two blocks use ``2 * width``.

    Examples
    --------
    >>> import torch
    >>> DigitsResNet()(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 10])
    """

    def __init__(self, num_classes: int = 10, width: int = 16) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(1, width, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
        )
        self.layer1 = BasicBlock(width, width)
        self.layer2 = BasicBlock(width, 2 * width, stride=2)
        self.layer3 = BasicBlock(2 * width, 2 * width)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.head(torch.flatten(self.pool(x), 1))


def _conv_bn_relu(
    in_channels: int, out_channels: int, kernel_size: int, groups: int = 1
) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            padding=kernel_size // 2,
            groups=groups,
            bias=False,
        ),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    )


class DigitsConcat(nn.Module):
    """A CNN with an inception-like concatenation and a depthwise-separable convolution.

    Built to exercise dependency-aware pruning: removing a channel of ``branch1x1`` or
    ``branch3x3`` shifts the channel offsets seen by ``depthwise`` after ``torch.cat``, and the
    depthwise convolution (``groups`` equal to its channels) can only lose a channel together with
    the channel that feeds it.
    Shapes: 1x8x8 -> 16x8x8 -> cat(8, 8)=16x8x8 -> depthwise 16x8x8 -> pointwise 32x8x8
    -> 32x4x4 -> 32x2x2 -> 128 -> ``num_classes``.

    Parameters
    ----------
    num_classes : int, default 10
    width : int, default 16
        Stem channels; each branch has ``width // 2`` and the pointwise conv ``2 * width``.

    Examples
    --------
    >>> import torch
    >>> DigitsConcat()(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 10])
    """

    def __init__(self, num_classes: int = 10, width: int = 16) -> None:
        super().__init__()
        half = width // 2
        self.stem = _conv_bn_relu(1, width, 3)
        self.branch1x1 = _conv_bn_relu(width, half, 1)
        self.branch3x3 = _conv_bn_relu(width, half, 3)
        self.depthwise = _conv_bn_relu(2 * half, 2 * half, 3, groups=2 * half)
        self.pointwise = _conv_bn_relu(2 * half, 2 * width, 1)
        self.pool1 = nn.MaxPool2d(2)
        self.pool2 = nn.MaxPool2d(2)
        self.head = nn.Linear(2 * width * 2 * 2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.cat([self.branch1x1(x), self.branch3x3(x)], dim=1)
        x = self.pointwise(self.depthwise(x))
        x = self.pool2(self.pool1(x))
        return self.head(torch.flatten(x, 1))


class EncoderBlock(nn.Module):
    """Pre-norm transformer encoder block: self-attention and an MLP, each with a residual.

    Parameters
    ----------
    dim : int, default 32
        Token width.
    heads : int, default 4
        Attention heads (``dim`` must be divisible by ``heads``).
    mlp_dim : int, default 64
        Hidden width of the MLP.

    Examples
    --------
    >>> import torch
    >>> EncoderBlock()(torch.zeros(2, 8, 32)).shape
    torch.Size([2, 8, 32])
    """

    def __init__(self, dim: int = 32, heads: int = 4, mlp_dim: int = 64) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, mlp_dim)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(mlp_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.fc2(self.relu(self.fc1(self.norm2(x))))


class DigitsTransformer(nn.Module):
    """A tiny transformer that reads the 8 rows of a digit image as 8 tokens.

    Each row (8 pixels) is embedded by a linear layer, a learned positional embedding is added,
    two :class:`EncoderBlock` layers mix the rows, and the mean token feeds a linear head.

    Parameters
    ----------
    num_classes : int, default 10
    dim : int, default 32
    heads : int, default 4
    mlp_dim : int, default 64
    depth : int, default 2
        Number of encoder blocks.

    Examples
    --------
    >>> import torch
    >>> DigitsTransformer()(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 10])
    """

    def __init__(
        self,
        num_classes: int = 10,
        dim: int = 32,
        heads: int = 4,
        mlp_dim: int = 64,
        depth: int = 2,
    ) -> None:
        super().__init__()
        self.embed = nn.Linear(8, dim)
        self.pos = nn.Parameter(torch.zeros(1, 8, dim))
        self.blocks = nn.ModuleList([EncoderBlock(dim, heads, mlp_dim) for _ in range(depth)])
        self.head = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.pos, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (N, 1, 8, 8) -> (N, 8 rows, 8 pixels): each image row is one token
        tokens = self.embed(torch.flatten(x, 1, 2)) + self.pos
        for block in self.blocks:
            tokens = block(tokens)
        return self.head(tokens.mean(dim=1))


class MLP(nn.Module):
    """Fully connected classifier: Linear-ReLU layers and a linear head.

    Hidden layers are ``hidden.0, hidden.2, ...`` (with ``hidden.1, hidden.3, ...`` their own
    ReLUs), the classifier is ``head``.

    Parameters
    ----------
    in_features : int
    hidden : sequence of int
        Width of each hidden layer.
    num_classes : int

    Examples
    --------
    >>> import torch
    >>> MLP(4, (8, 8), 3)(torch.zeros(5, 4)).shape
    torch.Size([5, 3])
    """

    def __init__(self, in_features: int, hidden: Sequence[int], num_classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        self.hidden = nn.Sequential(*layers)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.hidden(torch.flatten(x, 1)))


class TabularMLP(MLP):
    """MLP for the breast_cancer table: 30 -> 64 -> 32 -> 2.

    Examples
    --------
    >>> import torch
    >>> TabularMLP()(torch.zeros(3, 30)).shape
    torch.Size([3, 2])
    """

    def __init__(
        self, in_features: int = 30, hidden: Sequence[int] = (64, 32), num_classes: int = 2
    ) -> None:
        super().__init__(in_features, hidden, num_classes)


class ToyMLP(MLP):
    """MLP for 2-D toy problems such as moons: 2 -> 64 -> 64 -> 2.

    Examples
    --------
    >>> import torch
    >>> ToyMLP()(torch.zeros(3, 2)).shape
    torch.Size([3, 2])
    """

    def __init__(
        self, in_features: int = 2, hidden: Sequence[int] = (64, 64), num_classes: int = 2
    ) -> None:
        super().__init__(in_features, hidden, num_classes)


# Token models (ViT over patches, LSTM over rows) live in their own module; re-exported here so
# every zoo architecture is reachable as ``xprune_nb.models.NAME``.
from .token_models import DigitsLSTM, DigitsViT, ViTBlock  # noqa: E402
