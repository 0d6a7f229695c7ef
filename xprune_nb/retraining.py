"""One retrain step of a study: fine-tune a copy of the current model, measure it, commit it.

Runs inside the study's transaction (``Study.retrain``): an interrupt anywhere leaves the study
as it was; a stop requested through the progress protocol ends the loop between batches and
records the weights of the last complete batch (``stopped=True``).
"""

from __future__ import annotations

import copy
import time

from ._model import check_finite, copy_model
from .errors import ConfigError
from .history import Step
from .measure import measure_step
from .progress import StopSignal, make_progress
from .training import ProgressBar, TickCallback, TrainResult, train

__all__ = ["retrain_step"]


def retrain_step(study, *, epochs: int, lr: float, optimizer: str, batch_size: int,
                 weight_decay: float, callbacks, progress, stop, train_fn, seed: int,
                 call: str) -> Step:
    """Fine-tune and record a ``retrain`` step on ``study`` (arguments already validated)."""
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
                       stop=stop)
    model.eval()
    check_finite(model, call)
    step = Step(len(timeline.history), "retrain", timeline.current,
                config={"epochs": epochs, "lr": lr, "optimizer": optimizer,
                        "batch_size": batch_size, "weight_decay": weight_decay,
                        "custom_train_fn": train_fn is not None, "seed": seed},
                structure=copy.deepcopy(timeline.step.structure), stopped=result.stopped,
                calls=[] if train_fn is not None else [{"retrain": {
                    "epochs": epochs, "lr": lr, "optimizer": optimizer,
                    "batch_size": batch_size, "weight_decay": weight_decay, "seed": seed}}])
    step.note = (f"{result.epochs_done} epochs, {result.batches_done} batches"
                 + (", stopped by the user" if result.stopped else ""))
    measure_step(study, step, model, seconds=time.perf_counter() - start)
    timeline.commit(step, model)
    study.last_train_result = result
    return step
