"""Importable user models and data factories for the export tests (scripts import them)."""

from __future__ import annotations

import torch
from torch import nn

#: a layer name no Python code could carry safely: it must only ever be repr()'d
HOSTILE = "x'); import os  #\n\"\"\"\nraise SystemExit('pwned') #"


class UserNet(nn.Module):
    """A small CNN with constructor arguments and a layer with a hostile name."""

    def __init__(self, width: int = 8, hidden: int = 24, num_classes: int = 10):
        super().__init__()
        self.conv = nn.Conv2d(1, width, 3, padding=1)
        self.act = nn.ReLU()
        self.add_module(HOSTILE, nn.Linear(width * 16, hidden))
        self.act2 = nn.ReLU()
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x):
        x = nn.functional.max_pool2d(self.act(self.conv(x)), 2)
        return self.head(self.act2(getattr(self, HOSTILE)(torch.flatten(x, 1))))


def make_user_net(width: int = 8) -> UserNet:
    """A factory function (not the class itself)."""
    torch.manual_seed(1)
    return UserNet(width=width)


def small_digits(n_train: int = 400):
    """A data factory: (train, val, test) pairs from the bundled digits."""
    from xprune_nb.data import public as datasets

    d = datasets.load("digits")
    return ((d.train.X[:n_train], d.train.y[:n_train]), (d.val.X, d.val.y),
            (d.test.X, d.test.y))
