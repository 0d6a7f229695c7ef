"""Retraining (fine-tuning) after pruning: a plain loop driven by callbacks.

Callbacks have no-op hooks, so a progress bar, a live plot or a panel's stop button plug in
without special cases. Stopping is checked between batches: a stopped run leaves the model with
the weights of its last complete batch, which is a consistent state to record.

Under ``torchrun`` (see :mod:`xprune_nb.record.distributed`) the same loop is data-parallel: the
model is wrapped in DistributedDataParallel, each rank trains on its shard of every global batch,
and the loss is scaled so that the averaged gradient is exactly the gradient of the global batch.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import ConfigError, ModelError, XPruneError
from ..core.progress import StopSignal
from ..data import Split
from ..data.batch import batch_size as rows
from ..data.batch import take, to_device
from ..data.epochs import epoch_batches
from .metrics import evaluate_split

__all__ = ["Callback", "StopSignal", "ProgressBar", "TickCallback", "TrainResult", "train",
           "OPTIMIZERS", "check_train_options", "train_step", "Strategy", "DDPStrategy",
           "make_strategy"]

OPTIMIZERS = ("adam", "adamw", "sgd")


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


class TickCallback(Callback):
    """Reports batches done to a progress-protocol callable ``tick(done, total)``."""

    def __init__(self, tick: Callable[[int, int], object]) -> None:
        self.tick, self.total, self.done = tick, 0, 0

    def on_train_start(self, epochs: int, batches_per_epoch: int) -> None:
        self.total = epochs * batches_per_epoch
        # 0 of N at once: on a big model the first batch takes seconds, and a panel shows
        # its bar (and a stop already pressed is honoured) before it, not after
        self.tick(0, self.total)

    def on_batch_end(self, epoch: int, batch: int, loss: float, accuracy: float) -> None:
        self.done += 1
        self.tick(self.done, self.total)


class ProgressBar(Callback):
    """A tqdm.auto progress bar (a widget in notebooks, text in terminals) with live loss."""

    def __init__(self, desc: str = "retrain") -> None:
        self.desc = desc
        self.bar = None

    def on_train_start(self, epochs: int, batches_per_epoch: int) -> None:
        from tqdm.auto import tqdm

        from . import distributed

        if not distributed.is_main():
            return  # one bar for the whole run, not one per rank

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


def _number(value, *, low: float, strict: bool) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return math.isfinite(value) and (value > low if strict else value >= low)


def check_train_options(call: str, *, epochs=1, lr=1e-3, optimizer="adam", batch_size=64,
                        weight_decay=0.0, seed=0, callbacks=(), stop=None) -> None:
    """Refuse training options that would fail half-way or train on nonsense (a NaN weight
    decay, a callback that is not one), naming the call and the parameter, before any work.

    Examples
    --------
    >>> check_train_options("Study.retrain", weight_decay=-1)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    xprune_nb.core.errors.ConfigError: Study.retrain(weight_decay=...): expected a finite number ...
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ConfigError.bad_value(call, "epochs", "a positive integer", epochs)
    if not _number(lr, low=0.0, strict=True):
        raise ConfigError.bad_value(call, "lr", "a finite number > 0", lr)
    if not isinstance(optimizer, str) or optimizer not in OPTIMIZERS:
        raise ConfigError.unknown_name(call, "optimizer", OPTIMIZERS, optimizer)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError.bad_value(call, "batch_size", "a positive integer", batch_size)
    if not _number(weight_decay, low=0.0, strict=False):
        raise ConfigError.bad_value(call, "weight_decay", "a finite number >= 0", weight_decay)
    # torch's and numpy's generators take 64-bit seeds; a larger one overflows mid-run
    if isinstance(seed, bool) or not isinstance(seed, int) or not -(2**63) <= seed < 2**63:
        raise ConfigError.bad_value(call, "seed", "an integer that fits in 64 bits", seed)
    if isinstance(callbacks, (Callback, str, bytes)) or not isinstance(
            callbacks, (list, tuple)) or not all(isinstance(c, Callback) for c in callbacks):
        raise ConfigError.bad_value(call, "callbacks", "a list of xprune_nb.Callback objects",
                                    callbacks)
    if stop is not None and not hasattr(stop, "requested"):
        raise ConfigError.bad_value(call, "stop", "a StopSignal or None", stop)


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
    device: str | torch.device | None = None,
    steps_per_epoch: int | None = None,
    call: str = "train",
) -> TrainResult:
    """Fine-tune ``model`` in place on ``train_split`` with cross-entropy.

    Shuffling uses a generator seeded with ``seed``: the same call gives the same weights.
    ``device`` (default: :func:`xprune_nb.record.distributed.training_device`, the CPU unless set)
    is used for the training only: the model is back on the CPU afterwards. Under ``torchrun`` the
    training is data-parallel (DistributedDataParallel); the result is rank 0's, on every rank.
    A split that is the user's own loader or dataset is iterated as given (their transforms,
    augmentation and sampler apply); ``steps_per_epoch`` bounds each epoch and is required when
    that data has no length.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from xprune_nb.data import Split
    >>> torch.manual_seed(0) and None
    >>> model = nn.Linear(2, 2)
    >>> data = Split(torch.randn(32, 2), torch.randint(0, 2, (32,)))
    >>> res = train(model, data, epochs=2, forward=lambda m, x: m(x))
    >>> res.epochs_done, res.stopped
    (2, False)
    """
    import time

    check_train_options("train", epochs=epochs, lr=lr, optimizer=optimizer,
                        batch_size=batch_size, weight_decay=weight_decay, seed=seed,
                        callbacks=callbacks, stop=stop)
    gen = torch.Generator().manual_seed(int(seed))
    per_epoch, epoch_batches_ = epoch_batches(train_split, batch_size, gen, steps_per_epoch,
                                              call)
    start = time.perf_counter()
    strategy = make_strategy(device)
    home = next(iter(model.parameters()), torch.empty(0)).device
    net = strategy.setup(model)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(optimizer, params, lr, weight_decay)
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    val_forward = strategy.eval_forward(forward)
    result = TrainResult()
    for cb in callbacks:
        cb.on_train_start(epochs, per_epoch)
    was_training = model.training
    model.train()
    # dropout and other random layers draw from torch's global generator: seed it for the run
    # (same seed, same weights) and give the caller's generator state back afterwards
    rng = contextlib.ExitStack()
    dev = strategy.device
    rng.enter_context(torch.random.fork_rng(
        devices=[dev.index or 0] if dev.type == "cuda" else []))
    torch.manual_seed(int(seed))
    try:
        for epoch in range(epochs):
            # every rank draws the same global batches (same generator), then keeps its shard
            for b, (x, y) in enumerate(epoch_batches_()):
                result.stopped = strategy.agree(stop is not None and stop.requested)
                if result.stopped:
                    break
                if rows(x) < strategy.world * (2 if has_bn else 1):
                    continue  # BatchNorm cannot train on a batch of one; no rank may be empty
                loss_v, acc_v = train_step(net, opt, x, y, forward, strategy, call)
                result.batches_done += 1
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
                logs["val_accuracy"], logs["val_loss"] = evaluate_split(model, val_split,
                                                                        val_forward)
            result.val.append(logs)
            for cb in callbacks:
                cb.on_epoch_end(epoch, logs)
    finally:
        rng.close()
        opt.zero_grad(set_to_none=True)
        model.train(was_training)
        strategy.teardown(model, home)
        result.seconds = time.perf_counter() - start
    for cb in callbacks:
        cb.on_train_end(result)
    return result


def train_step(net: nn.Module, opt, x: torch.Tensor, y: torch.Tensor, forward,
               strategy: Strategy, call: str = "train") -> tuple[float, float]:
    """One optimisation step on a global batch; returns its (loss, accuracy) as one process
    training on the whole batch would report them."""
    n = len(y)   # x may be a dict of named inputs (input_ids, attention_mask...)
    x, y = strategy.shard(x, y)
    opt.zero_grad(set_to_none=True)
    try:
        logits = forward(net, x)
    except XPruneError:
        raise
    except Exception as exc:  # noqa: BLE001 - the model's own code failed, in train mode
        # evaluation (eval mode) ran it fine, so the failure is the model's training-mode
        # path (dropout, BatchNorm statistics, a branch on self.training)
        raise ModelError(
            f"{call}: the model raised in training mode (model.train()): "
            f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}. Fix the model's "
            "training path, or retrain it yourself with train_fn=.") from exc
    loss = strategy.loss(logits, y, n)
    loss.backward()
    opt.step()
    return strategy.numbers(loss.detach(), logits.detach(), y, n)


class Strategy:
    """How a training run uses its processes: one process (this class) or data-parallel
    (:class:`DDPStrategy`). ``train`` and ``train_step`` are the same for both."""

    world, rank = 1, 0

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._synced: list = []

    def setup(self, model: nn.Module) -> nn.Module:
        from . import distributed

        model.to(self.device)
        distributed._refresh_masked(model)
        self._synced = distributed.sync_batchnorm(model)
        return model

    def eval_forward(self, forward):
        if self.device.type == "cpu":
            return forward
        return lambda m, x: forward(m, x.to(self.device)).cpu()

    def agree(self, stop: bool) -> bool:
        return stop

    def shard(self, x: torch.Tensor, y: torch.Tensor):
        return to_device(x, self.device), y.to(self.device)

    def loss(self, logits: torch.Tensor, y: torch.Tensor, n: int) -> torch.Tensor:
        return F.cross_entropy(logits, y)

    def numbers(self, loss, logits, y, n: int) -> tuple[float, float]:
        return float(loss), float((logits.argmax(1) == y).float().mean())

    def teardown(self, model: nn.Module, home: torch.device) -> None:
        from . import distributed

        distributed.unsync_batchnorm(self._synced)
        model.to(home)
        distributed._refresh_masked(model)


class DDPStrategy(Strategy):
    """Data-parallel training under ``torchrun``: each rank trains on its shard of every global
    batch, with a loss scaled so the averaged gradient is that of the whole global batch."""

    def __init__(self, device: torch.device) -> None:
        from . import distributed

        super().__init__(device)
        self.world, self.rank = distributed.world_size(), distributed.rank()

    def setup(self, model: nn.Module) -> nn.Module:
        import inspect

        from torch.nn.parallel import DistributedDataParallel

        super().setup(model)
        # BatchNorm statistics are global already (synced): no buffer broadcast per step
        no_sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in
                   inspect.signature(DistributedDataParallel).parameters
                   else {"broadcast_buffers": False})
        return DistributedDataParallel(model, device_ids=[self.device.index]
                                       if self.device.type == "cuda" else None, **no_sync)

    def agree(self, stop: bool) -> bool:
        from . import distributed

        # stop together, or the other ranks would wait forever
        return distributed.all_reduce_sum([float(stop)])[0] > 0

    def shard(self, x: torch.Tensor, y: torch.Tensor):
        mine = slice(self.rank, None, self.world)
        return to_device(take(x, mine), self.device), y[mine].to(self.device)

    def loss(self, logits: torch.Tensor, y: torch.Tensor, n: int) -> torch.Tensor:
        # sum / global batch * world: DDP averages over ranks, which gives the mean-loss
        # gradient of the whole global batch even for unequal shards
        return F.cross_entropy(logits, y, reduction="sum") * (self.world / n)

    def numbers(self, loss, logits, y, n: int) -> tuple[float, float]:
        from . import distributed

        loss_sum, correct = distributed.all_reduce_sum(
            [float(loss) * n / self.world, float((logits.argmax(1) == y).sum())])
        return loss_sum / n, correct / n

    def teardown(self, model: nn.Module, home: torch.device) -> None:
        from . import distributed

        # identical already, up to float reduction order: take rank 0's
        distributed.unsync_batchnorm(self._synced)
        distributed.broadcast_module(model)
        model.to(home)
        distributed._refresh_masked(model)


def make_strategy(device=None) -> Strategy:
    """The strategy for this process: data-parallel under torchrun, else one process."""
    from . import distributed

    dev = torch.device(device) if device is not None else distributed.training_device()
    return DDPStrategy(dev) if distributed.world_size() > 1 else Strategy(dev)
