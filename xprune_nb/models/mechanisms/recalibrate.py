"""Adaptive BatchNorm recalibration: retraining-free recovery after structured pruning.

Removing channels changes the statistics of every activation downstream, but the BatchNorm
layers keep normalising with the running mean and variance measured on the unpruned network.
EagleEye (Li et al., "EagleEye: Fast Sub-net Evaluation for Efficient Neural Network Pruning",
ECCV 2020) showed that re-estimating those statistics with a few forward passes over training
data recovers most of the accuracy a pruned candidate seems to lose, and that the recalibrated
accuracy predicts the accuracy after fine-tuning far better than the raw one. No gradient is
computed and no weight changes: only the BatchNorm buffers (``running_mean``, ``running_var``,
``num_batches_tracked``) are rewritten.

Examples
--------
>>> import torch
>>> from torch import nn
>>> net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))
>>> has_batchnorm(net)
True
>>> report = recalibrate_batchnorm(net, torch.randn(256, 4), batches=4, batch_size=32)
>>> report.examples, report.layers
(128, ['1'])
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ...core.errors import ConfigError, DataError, ModelError
from ...data.batch import batch_size as count
from ...data.batch import take, to_device
from .model_tools import call_model

__all__ = ["recalibrate_batchnorm", "has_batchnorm", "batchnorm_layers", "Recalibration",
           "samples_for", "RECALIBRATION_MACS", "RECALIBRATION_MIN_SAMPLES"]

_CALL = "recalibrate_batchnorm"

#: forward multiply-accumulates a prune's recalibration may spend by default (about a minute on
#: one CPU core): a small model gets the full ``batches * batch_size`` examples, a big one fewer
RECALIBRATION_MACS = 5e11
#: but never fewer examples than this (two batches of 64): fewer give noisy statistics
RECALIBRATION_MIN_SAMPLES = 128


def samples_for(macs_per_example: float | None, batches: int = 10,
                batch_size: int = 64) -> int:
    """How many training examples a prune recalibrates on by default, given the model's MACs
    per example: ``batches * batch_size`` (640) while that fits in :data:`RECALIBRATION_MACS`,
    else as many as fit, and at least :data:`RECALIBRATION_MIN_SAMPLES` (128).

    A ResNet-50 at 224 px (4.1 GMACs per image) gets 128 examples (about 13 s on one CPU core
    instead of a minute for 640); the zoo's small models get 640.

    Examples
    --------
    >>> samples_for(1e6), samples_for(4.1e9), samples_for(None)
    (640, 128, 640)
    """
    full = batches * batch_size
    if not macs_per_example or macs_per_example <= 0:
        return full
    return int(min(full, max(RECALIBRATION_MIN_SAMPLES, RECALIBRATION_MACS // macs_per_example)))


@dataclass(frozen=True)
class Recalibration:
    """What :func:`recalibrate_batchnorm` did: which layers, on how many examples, how long."""

    layers: list[str] = field(default_factory=list)
    examples: int = 0
    batches: int = 0
    batch_size: int = 0
    seed: int = 0
    seconds: float = 0.0
    skipped: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        """Plain data (JSON-friendly), e.g. to record in a history step."""
        return asdict(self)


def batchnorm_layers(model: nn.Module) -> dict[str, _BatchNorm]:
    """The BatchNorm layers of ``model`` that keep running statistics, by qualified name."""
    return {name: m for name, m in model.named_modules()
            if isinstance(m, _BatchNorm) and m.track_running_stats}


def has_batchnorm(model: nn.Module) -> bool:
    """Whether ``model`` has a BatchNorm layer with running statistics to recalibrate.

    Examples
    --------
    >>> from torch import nn
    >>> has_batchnorm(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))), has_batchnorm(
    ...     nn.Linear(2, 2))
    (True, False)
    """
    return bool(batchnorm_layers(model))


def _positive_int(value, param: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError.bad_value(_CALL, param, "a positive integer", value)
    return value


def _plain_forward(model: nn.Module, x: torch.Tensor):
    return call_model(model, x)


def recalibrate_batchnorm(model: nn.Module, X: torch.Tensor | Iterable, *, batches: int = 10,
                          batch_size: int = 64,
                          forward: Callable[[nn.Module, torch.Tensor], object] | None = None,
                          seed: int = 0, samples: int | None = None) -> Recalibration:
    """Re-estimate the running statistics of every BatchNorm layer of ``model`` (in place).

    The running mean and variance are reset and then accumulated as a plain (cumulative)
    average (``momentum=None``: every batch weighs the same) over ``batches`` batches of
    ``batch_size`` examples drawn from ``X`` without replacement, in an order fixed by
    ``seed``. ``X`` may also be an iterable of training batches (a ``DataLoader``, a
    generator): tensors, mappings of named tensors (``input_ids``, ...) or tuples whose first
    entry is the input; it is read batch by batch, as it comes, until ``samples`` examples
    (default ``batches * batch_size``) have gone through, and never copied. During the passes
    only the BatchNorm layers are in training mode: dropout and every other layer stay in
    eval mode, so the statistics are those of the network that will run at inference. No
    gradient is computed and no parameter changes. Afterwards every module's ``training`` flag
    and every BatchNorm's ``momentum`` are restored. BatchNorm layers that the forward pass
    never reaches keep their old statistics.

    Parameters
    ----------
    model : nn.Module
        The (pruned) model; modified in place, BatchNorm buffers only.
    X : torch.Tensor or iterable of batches
        Training inputs, one example per row (labels are not needed), or the training batches
        (e.g. your own ``DataLoader``; its transforms apply).
    batches : int, default 10
        Number of forward passes. Fewer examples than ``batches * batch_size`` means fewer
        batches; a last batch of a single example is dropped (BatchNorm needs two).
    batch_size : int, default 64
        Examples per pass, at least 2.
    forward : callable, optional
        ``forward(model, x)`` runs the model (e.g. ``Study.forward``); its result is ignored.
        Default: ``model(x)``.
    seed : int, default 0
        Fixes which examples are drawn from a tensor, so the result is the same bit for bit on
        CPU (an iterable is read in its own order).
    samples : int, optional
        At most this many examples in total (at least 2); default ``batches * batch_size``.

    Returns
    -------
    Recalibration
        The recalibrated layers, the number of examples and batches, the time taken and the
        layers skipped because no pass reached them.

    Raises
    ------
    ConfigError
        A parameter is invalid (nothing has changed).
    ModelError
        The forward pass failed; the statistics are restored to what they were.

    Examples
    --------
    >>> import xprune_nb as xp
    >>> study = xp.Study(xp.zoo.load("digits_resnet"), xp.datasets.load("digits"), seed=0)
    >>> _ = study.score("magnitude", granularity="channel")
    >>> _ = study.prune(0.3, recalibrate=False)   # Study.prune recalibrates by default
    >>> from xprune_nb.measure.metrics import evaluate_model
    >>> before = evaluate_model(study.model, study.data, study.forward,
    ...                                    latency=False).accuracy
    >>> _ = recalibrate_batchnorm(study.model, study.data.train.X, forward=study.forward)
    >>> evaluate_model(study.model, study.data, study.forward,
    ...                           latency=False).accuracy >= before
    True
    """
    if not isinstance(model, nn.Module):
        raise ConfigError.bad_value(_CALL, "model", "a torch.nn.Module", model)
    tensor = isinstance(X, torch.Tensor)
    if (tensor and X.dim() < 1) or (not tensor and not isinstance(X, Iterable)) \
            or isinstance(X, (str, bytes, Mapping)):
        raise ConfigError.bad_value(_CALL, "X", "a tensor of inputs, one example per row, or "
                                    "an iterable of training batches", type(X).__name__)
    batches = _positive_int(batches, "batches")
    batch_size = _positive_int(batch_size, "batch_size")
    if batch_size < 2:
        raise ConfigError.bad_value(_CALL, "batch_size", "an integer >= 2 (BatchNorm needs two "
                                    "examples per batch to measure a variance)", batch_size)
    if samples is not None:
        samples = _positive_int(samples, "samples")
        if samples < 2:
            raise ConfigError.bad_value(_CALL, "samples", "an integer >= 2", samples)
    samples = batches * batch_size if samples is None else samples
    if forward is not None and not callable(forward):
        raise ConfigError.bad_value(_CALL, "forward", "a callable(model, x) or None", forward)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError.bad_value(_CALL, "seed", "an integer", seed)
    if tensor and len(X) < 2:
        raise DataError(f"{_CALL}(X=...): BatchNorm needs at least 2 examples, got {len(X)}.")
    forward = forward or _plain_forward
    layers = batchnorm_layers(model)
    if not layers:
        return Recalibration(seed=seed, batch_size=batch_size)

    start = time.perf_counter()
    if tensor:
        # the order is fixed by a private generator: the global RNG is neither read nor
        # advanced
        gen = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(X), generator=gen)[:samples]
        chunks = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        if len(chunks[-1]) < 2:
            chunks.pop()
        source: Iterable = (X[idx] for idx in chunks)
    else:
        source = _bounded(X, samples)

    saved_buffers = {name: {k: v.clone() for k, v in bn.named_buffers(recurse=False)}
                     for name, bn in layers.items()}
    saved_momentum = {name: bn.momentum for name, bn in layers.items()}
    saved_modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        for bn in layers.values():
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average: every batch weighs the same
            bn.train()
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        seen = passes = 0
        with torch.no_grad():
            for inputs in source:
                forward(model, to_device(inputs, device))
                seen, passes = seen + count(inputs), passes + 1
    except DataError:          # a batch that is no input: the user's data, not the model
        _restore(layers, saved_buffers)
        raise
    except Exception as exc:
        _restore(layers, saved_buffers)
        raise ModelError(f"{_CALL}: the forward pass failed while re-estimating the BatchNorm "
                         f"statistics ({type(exc).__name__}: {exc}); the model is unchanged."
                         ) from exc
    finally:
        for name, bn in layers.items():
            bn.momentum = saved_momentum[name]
        for module, mode in saved_modes.items():
            module.training = mode
    # a layer no pass reached would be left with mean 0 and variance 1: keep its old statistics
    skipped = [name for name, bn in layers.items() if int(bn.num_batches_tracked) == 0]
    _restore({n: layers[n] for n in skipped}, saved_buffers)
    return Recalibration(layers=[n for n in layers if n not in skipped],
                         examples=int(seen), batches=passes,
                         batch_size=batch_size, seed=seed,
                         seconds=time.perf_counter() - start, skipped=skipped)


def _bounded(batches: Iterable, samples: int) -> Iterator:
    """The inputs of ``batches`` until ``samples`` examples have come (the last one cut to
    fit; a batch of one example is skipped: BatchNorm needs two to measure a variance)."""
    left = samples
    for batch in batches:
        inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
        n = count(inputs, _CALL)
        if n > left:
            inputs, n = take(inputs, torch.arange(left)), left
        if n >= 2:
            yield inputs
            left -= n
        if left < 2:
            return


def _restore(layers: dict[str, _BatchNorm], saved: dict[str, dict[str, torch.Tensor]]) -> None:
    with torch.no_grad():
        for name, bn in layers.items():
            for key, value in saved[name].items():
                getattr(bn, key).copy_(value)
