"""Attention heads, removed for real (``mode="remove"``) or masked (``mode="mask"``).

Removal shrinks each head's q/k/v rows and output-projection columns and the module's head count
(``nn.MultiheadAttention`` is first swapped for the exact ``SDPAttention``), so parameters, MACs
and latency fall; plans are plain data ``{module: [heads]}`` replayed on a fresh copy. Masking
zeroes the same weights and keeps every shape: the head contributes nothing, but dense kernels
still multiply the zeros, so there is no speed-up.

Heads are found in ``nn.MultiheadAttention``, ``SDPAttention``, Hugging Face attention (separate
q/k/v layers and a head count), timm-style fused ``qkv`` attention and LeViT attention
(:mod:`xprune_nb.models.mechanisms.attention.discovery`).
"""

from __future__ import annotations

import torch
from torch import nn

from ...core.errors import ConfigError, PruneError
from ...models.mechanisms.attention import find_heads, remove_heads
from ...models.mechanisms.model_tools import eval_mode
from ..heads import alive_in_groups, mask_heads
from .base import ModelEnv, UnitKind, Units

__all__ = ["HeadUnits", "MaskedHeadUnits"]

MODES = ("remove", "mask")
#: What the registry's ``"head"`` kind does: real removal (``"head_mask"`` masks instead).
DEFAULT_MODE = "remove"


class HeadUnits(UnitKind):
    """The heads of every attention module that runs.

    Parameters
    ----------
    mode : {"remove", "mask"}, default :data:`DEFAULT_MODE`
        Real removal (smaller and faster) or masks (same shapes, no speed-up).
    """

    name = "head"
    noun = "attention heads"
    score_as = "head"

    def __init__(self, mode: str = DEFAULT_MODE) -> None:
        if mode not in MODES:
            raise ConfigError.bad_value("HeadUnits", "mode", "'remove' or 'mask'", mode)
        self.mode = mode
        self.structural = self.speeds_up = mode == "remove"

    def find(self, model: nn.Module, env: ModelEnv, *, prune_output: bool = False) -> Units:
        seen: set[str] = set()
        modules = dict(model.named_modules())
        groups, skipped = find_heads(model)
        if not groups:   # no attention at all (a CNN): no forward pass to see which runs
            return Units(self.name, groups={}, layers={}, sizes={}, skipped=skipped,
                         detail={"groups": {}})
        ran = env.ran_in(model)   # the opening check's pass saw which modules run
        if ran is not None:
            seen = {g.name for g in groups if g.name in ran}
        else:   # a changed layout (or no record): one pass to see which attention runs
            names = {modules[g.name]: g.name for g in groups}
            handles = [m.register_forward_hook(lambda mod, *a: seen.add(names[mod]))
                       for m in names]
            try:
                with torch.no_grad(), eval_mode(model):
                    env.forward(model, env.example)
            finally:
                for h in handles:
                    h.remove()
        groups, skipped = find_heads(model, executed=seen)   # attention that never runs: skipped
        return Units(self.name, groups={g.name: (g.name,) for g in groups},
                     layers={g.name: modules[g.name] for g in groups},
                     sizes={g.name: g.num_heads for g in groups}, skipped=skipped,
                     detail={"groups": {g.name: g for g in groups}})

    def nothing_found(self, units: Units, call: str) -> str:
        return (f"{call}: the model has no nn.MultiheadAttention or other attention module "
                "whose heads can be "
                f"{'removed' if self.mode == 'remove' else 'masked'}"
                + (f" (not prunable: {units.skipped})" if units.skipped else "")
                + ". Supported: nn.MultiheadAttention, SDPAttention, Hugging Face attention "
                "(query/key/value layers and a head count), timm-style fused qkv and LeViT; "
                "prune other attention's MLP units with granularity='channel'.")

    def alive(self, model: nn.Module, units: Units) -> dict[str, torch.Tensor] | None:
        if self.mode == "remove":
            return None   # removed heads are gone
        return alive_in_groups(model, list(units.detail["groups"].values()))

    def check(self, units: Units, removal: dict[str, torch.Tensor], call: str) -> None:
        for name, heads in removal.items():
            if len(set(heads.tolist())) >= units.sizes[name]:
                raise PruneError(f"{call}: this request would remove every unit of {name!r} "
                                 f"(all {units.sizes[name]} heads); keep at least one head, or "
                                 "remove the whole block with granularity='block'.")

    def apply(self, model: nn.Module, units: Units, removal: dict[str, torch.Tensor],
              env: ModelEnv) -> dict | None:
        plan = {k: sorted(int(i) for i in v.tolist()) for k, v in removal.items() if len(v)}
        if not plan:
            return None
        if self.mode == "mask":
            for name, heads in plan.items():
                mask_heads(model, units.detail["groups"][name], heads)
            return None
        remove_heads(model, plan)
        env.check_runs(model, "Study.prune")
        return plan

    def replay(self, model: nn.Module, plan: dict, example: torch.Tensor,
               forward=None) -> None:
        remove_heads(model, plan)


class MaskedHeadUnits(HeadUnits):
    """``granularity="head_mask"``: heads masked, not removed. Shapes stay, so there is no
    speed-up (dense kernels multiply the masked zeros too); useful to study what a head
    contributes, or where the module can't be rebuilt smaller."""

    name = "head_mask"
    noun = "attention heads (masked)"

    def __init__(self, mode: str = "mask") -> None:
        super().__init__(mode)
