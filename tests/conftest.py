"""Shared fixtures: tiny models of the shapes users bring (residual, concat, depthwise,
transformer, wrapped) and small data, so the suite stays fast on two CPU cores."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

# two busy cores make torch 4-5x slower with its default two threads
torch.set_num_threads(1)
os.environ.setdefault("MPLBACKEND", "Agg")


class TinyResidual(nn.Module):
    """Residual CNN with BatchNorm, an identity add and a projection shortcut."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.act = nn.ReLU()
        self.c1 = nn.Conv2d(8, 8, 3, padding=1)
        self.act1 = nn.ReLU()
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.proj = nn.Conv2d(8, 12, 1)
        self.c3 = nn.Conv2d(8, 12, 3, padding=1, stride=2)
        self.act2 = nn.ReLU()
        self.head = nn.Linear(12, num_classes)

    def forward(self, x):
        x = self.act(self.bn(self.stem(x)))
        x = x + self.c2(self.act1(self.c1(x)))
        x = self.act2(self.c3(x) + self.proj(x)[:, :, ::2, ::2])
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class TinyConcat(nn.Module):
    """Two branches concatenated, then a depthwise and a grouped convolution."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.a = nn.Conv2d(1, 6, 3, padding=1)
        self.b = nn.Conv2d(1, 4, 1)
        self.act = nn.ReLU()
        self.dw = nn.Conv2d(10, 10, 3, padding=1, groups=10)
        self.pw = nn.Conv2d(10, 8, 1)
        self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.act2 = nn.ReLU()
        self.head = nn.Linear(8, num_classes)

    def forward(self, x):
        x = self.act(torch.cat([self.a(x), self.b(x)], dim=1))
        x = self.act2(self.grouped(self.pw(self.dw(x))))
        return self.head(x.mean(dim=(2, 3)))


class TinyTransformer(nn.Module):
    """Rows of an 8x8 image as tokens; attention with 2 heads, an MLP, residuals."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.embed = nn.Linear(8, 16)
        self.norm1 = nn.LayerNorm(16)
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)
        self.norm2 = nn.LayerNorm(16)
        self.fc1 = nn.Linear(16, 32)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(32, 16)
        self.head = nn.Linear(16, num_classes)

    def forward(self, x):
        x = self.embed(x.reshape(x.shape[0], 8, 8))
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        x = x + self.fc2(self.act(self.fc1(self.norm2(x))))
        return self.head(x.mean(dim=1))


class HeadsAttention(nn.Module):
    """Hand-written attention whose head width is hard-coded in a reshape."""

    def __init__(self, dim: int = 16, heads: int = 2):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x):
        b, t, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.heads, self.head_dim).unbind(2)
        att = torch.softmax(torch.einsum("bthd,bshd->bhts", q, k) / self.head_dim ** 0.5, -1)
        return self.out(torch.einsum("bhts,bshd->bthd", att, v).reshape(b, t, -1))


class LibraryModel(nn.Module):
    """Stands for another library's model: returns an object with ``.logits``."""

    class Output:
        def __init__(self, logits):
            self.logits = logits

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(8, 16)
        self.attn = HeadsAttention()
        self.fc1 = nn.Linear(16, 24)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(24, 16)
        self.classifier = nn.Linear(16, 10)

    def forward(self, x):
        x = self.embed(x.reshape(x.shape[0], 8, 8))
        x = x + self.attn(x)
        x = x + self.fc2(self.act(self.fc1(x)))
        return LibraryModel.Output(self.classifier(x.mean(1)))


class Wrapped(nn.Module):
    """A user's wrapper whose forward calls a library model and returns its logits."""

    def __init__(self):
        super().__init__()
        self.inner = LibraryModel()

    def forward(self, x):
        return self.inner(x).logits


class TinyMLP(nn.Module):
    def __init__(self, n_in: int = 64, num_classes: int = 10):
        super().__init__()
        self.fc1 = nn.Linear(n_in, 32)
        self.act1 = nn.ReLU()
        self.fc2 = nn.Linear(32, 16)
        self.act2 = nn.ReLU()
        self.head = nn.Linear(16, num_classes)

    def forward(self, x):
        return self.head(self.act2(self.fc2(self.act1(self.fc1(torch.flatten(x, 1))))))


MODEL_FACTORIES = {
    "residual": TinyResidual,
    "concat": TinyConcat,
    "transformer": TinyTransformer,
    "wrapped": Wrapped,
    "mlp": TinyMLP,
}


@pytest.fixture(scope="session")
def digits():
    from xprune_nb.data import public as datasets

    return datasets.load("digits")


@pytest.fixture(scope="session")
def small_digits(digits):
    """(X, y) splits small enough for quick retraining."""
    return {
        "train": (digits.train.X[:320], digits.train.y[:320]),
        "val": (digits.val.X[:120], digits.val.y[:120]),
        "test": (digits.test.X[:120], digits.test.y[:120]),
    }


def make_study(kind: str, small_digits, **kwargs):
    import xprune_nb as xp

    torch.manual_seed(0)
    return xp.Study(MODEL_FACTORIES[kind](), **small_digits, **kwargs)


def state_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def no_hooks(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks
               and not getattr(m, "_backward_pre_hooks", {})
               for m in model.modules())
