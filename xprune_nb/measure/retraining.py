"""One retrain step of a study: fine-tune a copy of the current model, measure it, commit it.

Runs inside the study's transaction (``Study.retrain``): an interrupt anywhere leaves the study
as it was; a stop requested through the progress protocol ends the loop between batches and
records the weights of the last complete batch (``stopped=True``).
"""

from __future__ import annotations

import copy
import time

import torch

from ..core.errors import ConfigError
from ..core.history import Step
from ..core.progress import StopSignal, make_progress
from ..models.mechanisms.model_tools import check_finite, copy_model
from .step import measure_step
from .training import Callback, ProgressBar, TickCallback, TrainResult, train

__all__ = ["retrain_step"]


def retrain_step(study, *, epochs: int, lr: float, optimizer: str, batch_size: int,
                 weight_decay: float, callbacks, progress, stop, train_fn, seed: int,
                 call: str, recalibrate: bool | None = False,
                 recalibrate_samples: int = 2048, steps_per_epoch: int | None = None) -> Step:
    """Fine-tune and record a ``retrain`` step on ``study`` (numbers already validated).

    The training split is iterated as the data package gives it: the user's own loader as
    given (``steps_per_epoch`` bounds an epoch), or seeded shuffles of tensors.
    After the last epoch, BatchNorm statistics are re-estimated (``recalibrate``: ``None`` =
    on for a model with BatchNorm trained by our loop): the running averages a training loop
    leaves behind lag behind the weights it ended with, most of all after heavy pruning,
    and one pass in train mode without gradients (cumulative averaging) replaces them with the
    statistics of the final weights. The pass and its settings are recorded in the step
    (``config["recalibrate"]``, ``config["recalibration"]``), so recipes and scripts replay it.
    """
    if train_fn is not None and not callable(train_fn):
        raise ConfigError.bad_value(call, "train_fn", "a callable(model, data)", train_fn)
    if isinstance(callbacks, Callback) or not isinstance(callbacks, (list, tuple)) or not all(
            isinstance(c, Callback) for c in callbacks):
        raise ConfigError.bad_value(call, "callbacks", "a list of xprune_nb.Callback",
                                    callbacks)
    bar = progress is True
    tick = None if bar else make_progress(progress, call, "retrain")
    if stop is not None and not isinstance(stop, StopSignal):
        raise ConfigError.bad_value(call, "stop", "a xprune_nb.StopSignal or None", stop)
    timeline = study.timeline
    if type(timeline.model).__name__ == "DynamicNet":
        raise ConfigError(f"{call}: the current model is dynamic (input-adaptive); its paths "
                          "were fine-tuned when it was built. Retrain the static step before "
                          "it (study.undo()), then call study.dynamic() again.")
    model = copy_model(timeline.model)
    start = time.perf_counter()
    result = TrainResult()
    if train_fn is not None:
        train_fn(model, study.data)
    else:
        cbs = list(callbacks) + ([ProgressBar()] if bar else [])
        if tick is not None:
            cbs.append(TickCallback(tick))
        result = train(model, study.data.train, epochs=epochs, lr=lr, optimizer=optimizer,
                       batch_size=batch_size, weight_decay=weight_decay, seed=seed,
                       forward=study.forward, val_split=study.data.val, callbacks=cbs,
                       stop=stop, steps_per_epoch=steps_per_epoch, call=call)
    recal = _recalibrate(study, model, recalibrate, recalibrate_samples, batch_size, seed,
                         own_loop=train_fn is None)
    model.eval()
    check_finite(model, call)
    settings = {"recalibrate": recal is not None, "recalibrate_samples": recalibrate_samples}
    # recorded only when set, so recipes of studies that never used it stay as they were
    if steps_per_epoch is not None:
        settings["steps_per_epoch"] = steps_per_epoch
    step = Step(len(timeline.history), "retrain", timeline.current,
                config={"epochs": epochs, "lr": lr, "optimizer": optimizer,
                        "batch_size": batch_size, "weight_decay": weight_decay,
                        "custom_train_fn": train_fn is not None, "seed": seed, **settings},
                structure=copy.deepcopy(timeline.step.structure), stopped=result.stopped,
                calls=[] if train_fn is not None else [{"retrain": {
                    "epochs": epochs, "lr": lr, "optimizer": optimizer,
                    "batch_size": batch_size, "weight_decay": weight_decay, "seed": seed,
                    **settings}}])
    if recal is not None:
        step.config["recalibration"] = {k: v for k, v in recal.as_dict().items()
                                        if k != "seconds"}
    step.note = (f"{result.epochs_done} epochs, {result.batches_done} batches"
                 + (", stopped by the user" if result.stopped else "")
                 + (f", BatchNorm recalibrated on {recal.examples} examples" if recal else ""))
    measure_step(study, step, model, seconds=time.perf_counter() - start)
    timeline.commit(step, model)
    study.last_train_result = result
    return step


def _recalibrate(study, model, recalibrate: bool | None, samples: int, batch_size: int,
                 seed: int, *, own_loop: bool):
    """The BatchNorm pass after training (a ``Recalibration``), or ``None`` when none runs."""
    from ..models.mechanisms.recalibrate import has_batchnorm, recalibrate_batchnorm

    if recalibrate is False or not has_batchnorm(model) or (recalibrate is None and not own_loop):
        return None
    # the training split's inputs, read in a seeded order and bounded by ``samples``; any
    # iterable of training batches (e.g. the user's own loader) works the same way
    split = study.data.train
    from ..data import Split

    if isinstance(split, Split):
        source = split.X
        if not isinstance(source, torch.Tensor):
            from ..data.sampling import batches

            source = batches(split, batch_size, shuffle=True,
                             generator=torch.Generator().manual_seed(seed))
    else:
        # the user's own training loader, as retraining saw it, read until ``samples``
        # examples have gone through (never its bounded measurement sample, never all of it)
        from ..data.stream import split_batch

        loader = split.train_loader(batch_size, torch.Generator().manual_seed(seed))
        source = (split_batch(b, split.call, split.name) for b in loader)
    return recalibrate_batchnorm(model, source, batch_size=max(2, batch_size),
                                 samples=samples, forward=study.forward, seed=seed)
