"""The batches of one training epoch: seeded shuffles of tensors, or the user's own loader.

Retraining never copies a user's data: tensors (bundled datasets, ``(X, y)``) are shuffled
with the study's seeded generator, the same batches bit for bit as ever; a user's loader or
dataset is iterated as given (:meth:`~xprune_nb.data.stream.StreamSplit.train_loader`), so
their transforms, augmentation and sampler apply, bounded by ``steps_per_epoch``.

Examples
--------
>>> import torch
>>> from xprune_nb.data.split import Split
>>> split = Split(torch.zeros(10, 2), torch.zeros(10, dtype=torch.long))
>>> per_epoch, start = epoch_batches(split, 4, torch.Generator().manual_seed(0))
>>> per_epoch, [len(y) for _, y in start()]
(3, [4, 4, 2])
"""

from __future__ import annotations

import itertools

import torch

from ..core.errors import ConfigError
from .sampling import batches
from .stream import StreamSplit, _length, split_batch

__all__ = ["epoch_batches"]


def epoch_batches(split, batch_size: int, generator: torch.Generator,
                  steps_per_epoch: int | None = None, call: str = "Study.retrain"):
    """``(batches per epoch, start)`` for training on ``split``; ``start()`` gives one epoch's
    ``(inputs, labels)`` batches.

    Tensors: seeded shuffled mini-batches (the same batches, bit for bit, as ever). A user's
    source: their own loader as given (:meth:`StreamSplit.train_loader`), bounded by
    ``steps_per_epoch`` batches; a source without a length needs ``steps_per_epoch``.
    """
    if not isinstance(split, StreamSplit):
        per_epoch = (len(split) + batch_size - 1) // batch_size
        if steps_per_epoch is not None:
            per_epoch = min(per_epoch, steps_per_epoch)
        return per_epoch, lambda: itertools.islice(
            batches(split, batch_size, shuffle=True, generator=generator), per_epoch)
    loader = split.train_loader(batch_size, generator)
    per_epoch = _length(loader)
    if per_epoch is None and steps_per_epoch is None:
        raise ConfigError.bad_value(call, "steps_per_epoch", "a number of batches per epoch "
                                    f"(the training data, {split.describe()['type']}, has no "
                                    "length, so an epoch never ends by itself)", None)
    if steps_per_epoch is not None:
        per_epoch = steps_per_epoch if per_epoch is None else min(per_epoch, steps_per_epoch)

    def start():
        for batch in itertools.islice(loader, per_epoch):
            yield split_batch(batch, split.call, split.name)

    return per_epoch, start
