"""Distributed data-parallel helpers, public as ``xprune_nb.distributed``.

The plumbing (process group, ranks, module broadcast, synced BatchNorm) lives with the training
loop in :mod:`xprune_nb.measure.distributed`; :func:`broadcast_study`, which rebuilds a study's
pruned model and adopts it into its timeline, lives here, with the record.

>>> from xprune_nb import distributed
>>> distributed.world_size()
1
"""

from __future__ import annotations

import torch.distributed as tdist

from ..measure.distributed import (  # noqa: F401 - the public module re-exports them
    _comm_device,
    all_reduce_sum,
    barrier,
    broadcast_module,
    is_initialized,
    is_main,
    launched_by_torchrun,
    local_rank,
    rank,
    setup,
    sync_batchnorm,
    teardown,
    training_device,
    unsync_batchnorm,
    world_size,
)

__all__ = [
    "setup",
    "teardown",
    "is_initialized",
    "launched_by_torchrun",
    "world_size",
    "rank",
    "local_rank",
    "is_main",
    "training_device",
    "broadcast_module",
    "all_reduce_sum",
    "barrier",
    "sync_batchnorm",
    "unsync_batchnorm",
    "broadcast_study",
]


def broadcast_study(study, src: int = 0) -> None:
    """Make every rank's study equal to rank ``src``'s: history, current step and weights.

    Scoring and pruning run on rank 0 only; call this after them. The other ranks rebuild the
    pruned architecture from the recorded plans and receive the weights. Their snapshots hold
    the current step only (``goto`` to older steps is for rank 0).
    """
    if world_size() == 1:
        return
    from ..core.history import History, Step
    from ..measure.step import attach_measurer
    from ..pruning.rebuild import rebuild

    timeline = study.timeline
    info = [{"steps": [s.to_dict() for s in timeline.history], "current": timeline.current}
            if rank() == src else None]
    tdist.broadcast_object_list(info, src=src, device=_comm_device())
    info = info[0]
    if rank() != src:
        import copy

        history = History(Step.from_dict(d) for d in info["steps"])
        history.current = info["current"]
        step = history[history.current]
        model = rebuild(copy.deepcopy(study.original), step.structure, step.masked,
                        study.env.example, study.forward)
        broadcast_module(model, src)
        timeline.adopt(history, model.eval())
        for step in history:   # a big model's accuracy left for the first ask still is
            attach_measurer(study, step)
    else:
        broadcast_module(timeline.model, src)
