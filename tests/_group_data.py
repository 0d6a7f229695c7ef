"""The small grouped dataset and model that the group tests share: a 25 % minority whose label
follows a feature the majority's label ignores."""

from __future__ import annotations

import torch
from torch import nn


def grouped_split(n: int, seed: int):
    """``(X, y, groups)`` with ``n`` rows: every fourth row is the minority (group 1)."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 4, generator=g)
    groups = (torch.arange(n) % 4 == 0).long()          # a 25 % minority
    y = torch.where(groups == 1, X[:, 1] > 0, X[:, 0] > 0).long()
    return X, y, groups


def small_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
