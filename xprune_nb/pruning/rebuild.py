"""The only code that rebuilds a model from a study's record: replay recorded structural changes.

A step records each structural change as ``{"kind": unit kind, "plan": plain data}``
(``Step.structure``); :func:`rebuild` replays them, in order, on a fresh copy of the original
model through the unit kinds (:mod:`xprune_nb.pruning.units`), then puts the recorded weight
masks back. The timeline, checkpoints, Hugging Face folders, distributed ranks and the pathway
maps all call it, so there is one replay.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["rebuild", "structure_entry", "STEP_REPLAYERS"]

#: structural changes that are not unit removals, replayed by ``module:function`` (the function
#: takes ``(model, plan, example, forward)`` and returns the new model)
STEP_REPLAYERS = {"dynamic": "xprune_nb.pruning.dynamic.step:replay"}


def structure_entry(entry: dict) -> dict:
    """A recorded structural change as ``{"kind": unit kind, "plan": plain data}``.

    Files written before unit kinds were pluggable hold bare channel plans
    (``{group root: [removed channels]}``); they read as channel entries.
    """
    if isinstance(entry, dict) and set(entry) == {"kind", "plan"}:
        return entry
    return {"kind": "channel", "plan": entry}


def rebuild(model: nn.Module, structure: list[dict], masked: list[str],
            example: torch.Tensor, forward=None) -> nn.Module:
    """Apply recorded structural changes and masks to ``model`` (a copy of the original), in
    order; returns the result (the same object unless a kind wraps it). Weights are loaded by
    the caller. ``forward(model, x) -> logits`` is the study's (with its ``output_fn``)."""
    from ..models.mechanisms.masks import ensure_masks
    from . import units

    for raw in structure:
        entry = structure_entry(raw)
        if entry["kind"] in STEP_REPLAYERS:
            import importlib

            module, _, name = STEP_REPLAYERS[entry["kind"]].partition(":")
            model = getattr(importlib.import_module(module), name)(model, entry["plan"],
                                                                   example, forward)
            continue
        kind = units.get(entry["kind"], "rebuild", "structure kind")
        model = kind.replay(model, entry["plan"], example, forward) or model
    ensure_masks(model, list(masked))
    return model
