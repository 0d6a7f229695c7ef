"""Retraining (fine-tuning) after pruning: a plain loop driven by callbacks.

Callbacks have no-op hooks, so a progress bar, a live plot or a panel's stop button plug in
without special cases. Stopping is checked between batches: a stopped run leaves the model with
the weights of its last complete batch, which is a consistent state to record.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ._data import Split, batches
from .errors import ConfigError

__all__ = ["Callback", "StopSignal", "ProgressBar", "TrainResult", "train", "OPTIMIZERS"]

OPTIMIZERS = ("adam", "adamw", "sgd")


class StopSignal:
    """A thread-safe "please stop" flag, checked between batches.

    Examples
    --------
    >>> stop = StopSignal()
    >>> stop.requested
    False
    >>> stop.set(); stop.requested
    True
    """

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def clear(self) -> None:
        self._event.clear()

    @property
    def requested(self) -> bool:
        return self._event.is_set()


class Callback:
    """Hooks called by :func:`train`; override the ones you need."""

    def on_train_start(self, epochs: int, batches_per_epoch: int) -> None:
        pass

    def on_batch_end(self, epoch: int, batch: int, loss: float, accuracy: float) -> None:
        pass

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        pass

    def on_train_end(self, result: TrainResult) -> None:
        pass


class ProgressBar(Callback):
    """A tqdm.auto progress bar (a widget in notebooks, text in terminals) with live loss."""

    def __init__(self, desc: str = "retrain") -> None:
        self.desc = desc
        self.bar = None

    def on_train_start(self, epochs: int, batches_per_epoch: int) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=epochs * batches_per_epoch, desc=self.desc, leave=False)

    def on_batch_end(self, epoch: int, batch: int, loss: float, accuracy: float) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(epoch=epoch + 1, loss=f"{loss:.4f}", acc=f"{accuracy:.3f}")

    def on_train_end(self, result: TrainResult) -> None:
        if self.bar is not None:
            self.bar.close()


@dataclass
class TrainResult:
    """What a retraining run did: epochs and batches completed, whether it was stopped, and the
    loss/accuracy curves (per batch) and validation results (per epoch)."""

    epochs_done: int = 0
    batches_done: int = 0
    stopped: bool = False
    losses: list[float] = field(default_factory=list)
    accuracies: list[float] = field(default_factory=list)
    val: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def make_optimizer(name: str, params, lr: float, weight_decay: float, momentum: float = 0.9,
                   call: str = "Study.retrain") -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise ConfigError.unknown_name(call, "optimizer", OPTIMIZERS, name)


def evaluate_split(model: nn.Module, split: Split, forward, batch_size: int = 512,
                   return_predictions: bool = False):
    """(accuracy, mean cross-entropy loss) of ``model`` on ``split``, in eval mode; with
    ``return_predictions`` also the predicted class of every example."""
    from ._model import eval_mode

    correct, total_loss, preds = 0, 0.0, []
    with torch.no_grad(), eval_mode(model):
        for x, y in batches(split, batch_size):
            logits = forward(model, x)
            total_loss += float(F.cross_entropy(logits, y, reduction="sum"))
            pred = logits.argmax(1)
            correct += int((pred == y).sum())
            preds.append(pred)
    n = max(len(split), 1)
    if return_predictions:
        return correct / n, total_loss / n, torch.cat(preds)
    return correct / n, total_loss / n


def train(
    model: nn.Module,
    train_split: Split,
    *,
    epochs: int = 1,
    lr: float = 1e-3,
    optimizer: str = "adam",
    batch_size: int = 64,
    weight_decay: float = 0.0,
    seed: int = 0,
    forward: Callable,
    val_split: Split | None = None,
    callbacks: Sequence[Callback] = (),
    stop: StopSignal | None = None,
) -> TrainResult:
    """Fine-tune ``model`` in place on ``train_split`` with cross-entropy.

    Shuffling uses a generator seeded with ``seed``: the same call gives the same weights.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from xprune_nb._data import Split
    >>> torch.manual_seed(0) and None
    >>> model = nn.Linear(2, 2)
    >>> data = Split(torch.randn(32, 2), torch.randint(0, 2, (32,)))
    >>> res = train(model, data, epochs=2, forward=lambda m, x: m(x))
    >>> res.epochs_done, res.stopped
    (2, False)
    """
    import time

    start = time.perf_counter()
    gen = torch.Generator().manual_seed(int(seed))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(optimizer, params, lr, weight_decay)
    per_epoch = (len(train_split) + batch_size - 1) // batch_size
    result = TrainResult()
    for cb in callbacks:
        cb.on_train_start(epochs, per_epoch)
    was_training = model.training
    model.train()
    try:
        for epoch in range(epochs):
            for b, (x, y) in enumerate(batches(train_split, batch_size, shuffle=True,
                                               generator=gen)):
                if stop is not None and stop.requested:
                    result.stopped = True
                    break
                if len(x) < 2 and any(isinstance(m, nn.modules.batchnorm._BatchNorm)
                                      for m in model.modules()):
                    continue  # BatchNorm cannot train on a batch of one
                opt.zero_grad(set_to_none=True)
                logits = forward(model, x)
                loss = F.cross_entropy(logits, y)
                loss.backward()
                opt.step()
                result.batches_done += 1
                loss_v = float(loss.detach())
                acc_v = float((logits.detach().argmax(1) == y).float().mean())
                result.losses.append(loss_v)
                result.accuracies.append(acc_v)
                for cb in callbacks:
                    cb.on_batch_end(epoch, b, loss_v, acc_v)
            if result.stopped:
                break
            result.epochs_done = epoch + 1
            logs = {"epoch": epoch + 1, "train_loss": (sum(result.losses[-per_epoch:])
                                                       / max(len(result.losses[-per_epoch:]), 1))}
            if val_split is not None:
                logs["val_accuracy"], logs["val_loss"] = evaluate_split(model, val_split, forward)
            result.val.append(logs)
            for cb in callbacks:
                cb.on_epoch_end(epoch, logs)
    finally:
        opt.zero_grad(set_to_none=True)
        model.train(was_training)
        result.seconds = time.perf_counter() - start
    for cb in callbacks:
        cb.on_train_end(result)
    return result
