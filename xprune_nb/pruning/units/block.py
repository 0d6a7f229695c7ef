"""Whole blocks (residual blocks, transformer layers), replaced by identities for real.

All removable blocks of a model form one group, ``"blocks"``, whose units are the blocks in
module order, so ``amount=0.5`` removes half of them, ranked by the criterion's block scores.
Blocks that change the shape (a downsampling stage), run more than once or hold the output
layer cannot go; ``Study.prunable("block")`` lists them with the reason. Plans are plain data,
``{"blocks": [module names]}``, replayed on a fresh copy of the original model.

Criteria score blocks through ``block_scores(ctx)`` returning ``{block name: score}``;
:mod:`xprune_nb.models.mechanisms.blocks` has the pieces they need (``block_magnitude``,
``block_gates`` for Taylor / gradient scores of the residual branch, ``skip_drop`` for the measured
accuracy drop of skipping a block).
"""

from __future__ import annotations

import torch
from torch import nn

from ...models.mechanisms.blocks import find_blocks, remove_blocks
from ...models.mechanisms.model_tools import call_model
from .base import ModelEnv, UnitKind, Units

__all__ = ["BlockUnits", "GROUP"]

#: The one group that holds every removable block.
GROUP = "blocks"


def _call(model: nn.Module, x: torch.Tensor):
    return call_model(model, x)


class BlockUnits(UnitKind):
    """Residual blocks and transformer layers whose output has their input's shape."""

    name = "block"
    noun = "blocks"
    structural = True
    speeds_up = True
    score_as = "block"

    def offered(self, model: nn.Module, env: ModelEnv) -> bool:
        # finding the blocks runs the model (seconds on a big one): a menu needs candidates only
        from ...models.mechanisms.blocks import _candidates

        return bool(_candidates(model))

    def find(self, model: nn.Module, env: ModelEnv, *, prune_output: bool = False) -> Units:
        blocks, skipped = find_blocks(model, env.example, env.forward)
        kept = []
        for block in blocks:
            holds = [o for o in env.output_layers if o == block.name
                     or o.startswith(block.name + ".")]
            if holds and not prune_output:
                skipped[block.name] = f"holds the output layer {holds[0]!r}"
            else:
                kept.append(block)
        modules = dict(model.named_modules())
        names = tuple(b.name for b in kept)
        return Units(self.name, groups={GROUP: names} if names else {},
                     layers={n: modules[n] for n in names},
                     sizes={GROUP: len(names)} if names else {}, skipped=skipped,
                     detail={"blocks": kept})

    def nothing_found(self, units: Units, call: str) -> str:
        return (f"{call}: the model has no block that can be replaced by an identity (a "
                "residual block or transformer layer whose output has its input's shape, in "
                "an nn.ModuleList / nn.Sequential or directly in the model)"
                + (f"; not removable: {units.skipped}" if units.skipped else "") + ".")

    def combine(self, units: Units, raw: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``{block name: score}`` (or the one-group form) -> ``{"blocks": (n_blocks,) scores}``.

        Per-class scores come as ``{block name: (classes,)}`` and become ``(classes, blocks)``.
        """
        if GROUP in raw and set(raw) == {GROUP}:
            return {GROUP: raw[GROUP].detach().float()}
        names = units.groups.get(GROUP, ())
        columns = [torch.as_tensor(raw[n]).detach().float().reshape(-1) for n in names]
        stacked = torch.stack(columns, dim=-1)          # (k, blocks)
        return {GROUP: stacked[0] if stacked.shape[0] == 1 else stacked}

    def apply(self, model: nn.Module, units: Units, removal: dict[str, torch.Tensor],
              env: ModelEnv) -> dict | None:
        names = units.groups.get(GROUP, ())
        chosen = [names[int(i)] for i in sorted(removal.get(GROUP, torch.tensor([])).tolist())]
        if not chosen:
            return None
        remove_blocks(model, chosen, blocks=units.detail["blocks"])
        env.check_runs(model, "Study.prune")
        return {GROUP: chosen}

    def replay(self, model: nn.Module, plan: dict, example: torch.Tensor,
               forward=None) -> None:
        remove_blocks(model, plan[GROUP], example, forward or _call)
