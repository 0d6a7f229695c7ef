"""Helpers of the bad-input suite: odd models, callables that must never run, and a study
fingerprint that says whether anything at all changed.

``CALLED`` records every call of the "evil" callables below: recipes, study files and
checkpoints name them, and the tests assert the list stays empty (nothing was executed).
"""

from __future__ import annotations

import math
import threading

import torch
from torch import nn

import xprune_nb as xp

#: every call of an "evil" callable appends its name here; tests assert it stays empty
CALLED: list[str] = []


def evil_factory(**kwargs) -> nn.Module:
    """A model factory a recipe names: running it without trust_source=True is the bug."""
    CALLED.append("evil_factory")
    return nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 2))


def evil_data(**kwargs):
    """A data factory a recipe names: running it without trust_source=True is the bug."""
    CALLED.append("evil_data")
    x = torch.randn(40, 2)
    return (x, (x[:, 0] > 0).long()), (x, (x[:, 0] > 0).long()), (x, (x[:, 0] > 0).long())


class EvilModule(nn.Module):
    """An importable nn.Module whose constructor has a side effect."""

    def __init__(self) -> None:
        super().__init__()
        CALLED.append("EvilModule")
        self.fc = nn.Linear(2, 2)

    def forward(self, x):
        return self.fc(x)


# ------------------------------------------------------------------ odd models (2-D inputs)
class TwoLayer(nn.Module):
    """The plainest model that fits the moons data: 2 -> 8 -> 2."""

    def __init__(self, out: int = 2) -> None:
        super().__init__()
        self.fc = nn.Linear(2, 8)
        self.act = nn.ReLU()
        self.head = nn.Linear(8, out)

    def forward(self, x):
        return self.head(self.act(self.fc(x)))


class DictNoLogits(TwoLayer):
    """Returns a dict whose first value is a hidden layer, not the logits."""

    def forward(self, x):
        h = self.act(self.fc(x))
        return {"hidden": h, "scores": self.head(h)}


class DictWithLogits(TwoLayer):
    def forward(self, x):
        h = self.act(self.fc(x))
        return {"hidden": h, "logits": self.head(h)}


class StringOutput(TwoLayer):
    def forward(self, x):
        return "not logits"


class ThreeDOutput(TwoLayer):
    def forward(self, x):
        return super().forward(x).unsqueeze(1)


class Raises(TwoLayer):
    def forward(self, x):
        raise RuntimeError("boom in forward")


class NoPrunable(nn.Module):
    """Runs and returns (batch, 2) logits, but has no Conv or Linear layer."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(2))

    def forward(self, x):
        return x * self.scale


class BufferMutating(TwoLayer):
    """Its forward counts calls in a buffer, also in eval mode: every evaluation changes it."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, x):
        self.calls += 1
        return super().forward(x)


class Tied(nn.Module):
    """An autoencoder-style tie: ``dec.weight`` is ``enc.weight`` (one tensor, two layers)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(2, 8)
        self.enc = nn.Linear(8, 8)
        self.dec = nn.Linear(8, 8)
        self.dec.weight = self.enc.weight
        self.act = nn.ReLU()
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        h = self.act(self.fc(x))
        h = self.act(self.enc(h))
        h = self.act(self.dec(h))
        return self.head(h)


def nan_model() -> nn.Module:
    m = TwoLayer()
    with torch.no_grad():
        m.fc.weight[0, 0] = float("nan")
    return m


def inf_model() -> nn.Module:
    m = TwoLayer()
    with torch.no_grad():
        m.head.bias[0] = float("inf")
    return m


def meta_model() -> nn.Module:
    with torch.device("meta"):
        return TwoLayer()


# ------------------------------------------------------------------ fingerprints
def _plain_scores(study, index: int):
    s = study.scores_at(index)
    if s is None:
        return None
    return {"criterion": s.criterion, "granularity": s.granularity,
            "values": {k: v.clone() for k, v in s.values.items()}}


def fingerprint(study, timings: bool = True) -> dict:
    """Everything a user can observe of a study's state, as plain data and tensors (without
    the steps' wall-clock ``seconds`` when ``timings`` is False)."""
    steps = [s.to_dict() for s in study.history]
    if not timings:
        steps = [{k: v for k, v in d.items() if k != "seconds"} for d in steps]
    return {
        "model": {k: v.detach().clone() for k, v in study.model.state_dict().items()},
        "original": {k: v.detach().clone() for k, v in study.original.state_dict().items()},
        "len": len(study.history),
        "current": study.current,
        "steps": steps,
        "scores": [_plain_scores(study, i) for i in range(len(study.history))],
    }


def same(a, b, path: str = "") -> str | None:
    """None when ``a`` and ``b`` are identical (tensors exactly, NaN equal to NaN); otherwise
    where they differ."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
            return path or "<root>"
        if a.shape != b.shape or a.dtype != b.dtype:
            return f"{path} (shape/dtype)"
        eq = (torch.equal(a, b) if not a.is_floating_point()
              else bool(((a == b) | (a.isnan() & b.isnan())).all()))
        return None if eq else path
    if isinstance(a, dict) and isinstance(b, dict):
        if list(a) != list(b):
            return f"{path} keys {sorted(map(str, a))} != {sorted(map(str, b))}"
        for k in a:
            diff = same(a[k], b[k], f"{path}[{k!r}]")
            if diff:
                return diff
        return None
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return f"{path} (length {len(a)} != {len(b)})"
        for i, (x, y) in enumerate(zip(a, b)):
            diff = same(x, y, f"{path}[{i}]")
            if diff:
                return diff
        return None
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return None
    return None if a == b else f"{path}: {a!r} != {b!r}"


class Blocker(xp.Callback):
    """Holds a retrain after its first batch until released, so a test can make a second call
    while the first is surely inside the study (the race tests of the table and of the lock)."""

    def __init__(self):
        self.started, self.release = threading.Event(), threading.Event()

    def on_batch_end(self, epoch, batch, loss, accuracy):
        if epoch == 0 and batch == 0:
            self.started.set()
            self.release.wait(30)
