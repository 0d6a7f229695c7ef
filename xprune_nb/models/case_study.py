"""The Vision Transformer of the explained-pruning case study, and how it is trained.

:class:`BoxesViT` is :class:`~xprune_nb.models.DigitsViT` (pre-norm blocks on
:class:`~xprune_nb.models.mechanisms.attention.SDPAttention`, so heads and blocks can be removed for
real, mean pooling) for square images of any side: ``patch`` x ``patch`` patches embedded by a
strided convolution (the same as a linear layer on each flattened patch). :func:`train_boxes_vit` is
the short recipe (AdamW, one-cycle learning rate) that teaches it ``digits_boxes`` in a few epochs;
the notebook ``05_vit_case_study`` and ``benchmarks/bench_vit_explain.py`` use both.

Examples
--------
>>> import torch
>>> BoxesViT(image_size=16, patch=4, depth=2)(torch.zeros(2, 1, 16, 16)).shape
torch.Size([2, 10])
"""

from __future__ import annotations

import torch
from torch import nn

from ..core.errors import ConfigError
from . import DigitsViT

__all__ = ["BoxesViT", "train_boxes_vit"]


class BoxesViT(DigitsViT):
    """A small ViT for ``image_size`` x ``image_size`` one-channel images (``patch`` must divide
    it): ``(image_size / patch)**2`` tokens, ``depth`` blocks of ``heads`` heads.

    Parameters
    ----------
    image_size : int, default 16
    patch : int, default 4
    num_classes, dim, heads, mlp_dim, depth
        As in :class:`~xprune_nb.models.DigitsViT`.
    """

    def __init__(self, image_size: int = 16, patch: int = 4, num_classes: int = 10,
                 dim: int = 32, heads: int = 4, mlp_dim: int = 64, depth: int = 4) -> None:
        if image_size % patch:
            raise ConfigError.bad_value("BoxesViT", "patch", f"a divisor of {image_size}",
                                        patch)
        super().__init__(num_classes=num_classes, dim=dim, heads=heads, mlp_dim=mlp_dim,
                         depth=depth, patch=2)
        self.patch, self.image_size = patch, image_size
        self.embed = nn.Conv2d(1, dim, patch, stride=patch)
        self.pos = nn.Parameter(torch.zeros(1, (image_size // patch) ** 2, dim))
        nn.init.trunc_normal_(self.pos, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (N, 1, H, W) -> (N, patches, dim), row-major patch order
        tokens = self.embed(x).flatten(2).transpose(1, 2) + self.pos
        for block in self.blocks:
            tokens = block(tokens)
        return self.head(self.norm(tokens).mean(dim=1))


def train_boxes_vit(model: nn.Module, data, *, epochs: int = 12, lr: float = 3e-3,
                    batch_size: int = 64, seed: int = 0) -> list[float]:
    """Train ``model`` in place on ``data.train`` (AdamW, weight decay 1e-4, one-cycle
    learning rate peaking at ``lr``; shuffles seeded by ``seed``). Returns the test accuracy
    after each epoch."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    per_epoch = (len(data.train) + batch_size - 1) // batch_size
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=epochs * per_epoch)
    history = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for epoch in range(epochs):
            model.train()
            for xb, yb in data.train.loader(batch_size, shuffle=True, seed=seed + epoch):
                opt.zero_grad(set_to_none=True)
                nn.functional.cross_entropy(model(xb), yb).backward()
                opt.step()
                schedule.step()
            model.eval()
            with torch.no_grad():
                pred = model(data.test.X).argmax(1)
            history.append(float((pred == data.test.y).float().mean()))
    return history
