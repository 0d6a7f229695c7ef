"""Channels and neurons: real removal with torch-pruning's dependency graph.

Removing output channel ``i`` of a layer also removes the inputs that read it, the matching
BatchNorm entries and, through residual additions and concatenations, coupled channels of other
layers; a group is ranked and removed as one. Which groups can shrink at all is decided once, on
the original model, by a trial removal (``pruning/groups.py``), and kept in ``env.analysis``.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ...core.errors import PruneError
from .base import ModelEnv, UnitKind, Units

__all__ = ["ChannelUnits"]


class ChannelUnits(UnitKind):
    """Conv output channels and Linear neurons, in dependency groups; removed for real."""

    name = "channel"
    noun = "channels/neurons"
    structural = True
    speeds_up = True
    score_as = "channel"

    def _analysis(self, model: nn.Module, env: ModelEnv, graph) -> dict:
        from ..groups import safe_channel_groups

        found = env.analysis.get("channel")
        if found is None:
            unpruned = _same_shapes(model, env.original)
            analysed = model if unpruned else env.original
            # made once, on the original architecture; while nothing was removed yet the
            # model has that architecture, so its graph is reused
            safe, skipped = safe_channel_groups(
                analysed, env.example, ignored=env.output_layers,
                graph=graph if unpruned else None, forward=env.forward,
                shape=_logits_shape(env), head_layers=_head_projections(analysed))
            found = {"safe": [g.key for g in safe], "skipped": dict(skipped)}
            env.analysis["channel"] = found
        return found

    def find(self, model: nn.Module, env: ModelEnv, *, prune_output: bool = False) -> Units:
        # torch-pruning is imported on first use: ``import xprune_nb`` stays light
        from ..groups import build_graph, channel_groups

        graph = build_graph(model, env.example, env.forward)
        found = self._analysis(model, env, graph)
        safe = set(found["safe"])
        groups = [g for g in channel_groups(model, graph, env.output_layers) if g.key in safe]
        modules = dict(model.named_modules())
        covered = {n for g in groups for n in g.layers}
        return Units(
            self.name,
            groups={g.key: g.layers for g in groups},
            layers={n: modules[n] for g in groups for n in g.layers},
            sizes={g.key: g.size for g in groups},
            skipped={k: v for k, v in found["skipped"].items() if k not in covered},
            detail={"graph": graph, "groups": {g.key: g for g in groups}},
        )

    def offered(self, model: nn.Module, env: ModelEnv) -> bool:
        # finding the groups traces a dependency graph and runs a trial (seconds on a
        # ResNet-50): any Conv/Linear layer besides the output layers offers the kind
        from ...models.mechanisms.model_tools import prunable_layers

        found = env.analysis.get("channel")
        if found is not None:
            return bool(found["safe"])
        return any(name not in env.output_layers for name in prunable_layers(model))

    def nothing_found(self, units: Units, call: str) -> str:
        return (f"{call}: no channel of this model can be removed without breaking it "
                f"(not prunable: {units.skipped}). Try granularity='weight'.")

    def combine(self, units: Units, raw: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        # coupled layers share one score per channel: the mean of the members' scores
        return {key: group.combine(raw) for key, group in units.detail["groups"].items()}

    def keep_sets(self, units: Units) -> dict[str, list[list[int]]]:
        return {k: [list(root) for _, _, root in g.mapping]
                for k, g in units.detail["groups"].items()}

    def check(self, units: Units, removal: dict[str, torch.Tensor], call: str) -> None:
        """A group behind a concatenation spans several layers: none of them may be emptied."""
        for key, idxs in removal.items():
            removed = set(idxs.tolist())
            for name, _, root in units.detail["groups"][key].mapping:
                if root and removed.issuperset(root):
                    raise PruneError(
                        f"{call}: this request would remove every unit of {name!r} (its "
                        f"channels are part of group {key!r}), which breaks the model. Use a "
                        f"smaller amount, scope='layer', or ignore=[{key!r}].")

    def apply(self, model: nn.Module, units: Units, removal: dict[str, torch.Tensor],
              env: ModelEnv) -> dict | None:
        from ..groups import apply_channel_plan

        plan = {k: [int(i) for i in v.tolist()] for k, v in removal.items() if len(v)}
        if not plan:
            return None
        apply_channel_plan(model, env.example, plan, graph=units.detail["graph"])
        units.detail = None   # the graph described the model before the removal
        env.check_runs(model, "Study.prune")
        return plan

    def replay(self, model: nn.Module, plan: dict, example: torch.Tensor,
               forward=None) -> None:
        from ..groups import apply_channel_plan

        apply_channel_plan(model, example, plan, forward=forward)

    def preview(self, model: nn.Module, units: Units, removal: dict[str, torch.Tensor],
                env: ModelEnv) -> nn.Module:
        from ..groups import apply_channel_plan

        trial = copy.deepcopy(model)
        plan = {k: [int(i) for i in v.tolist()] for k, v in removal.items() if len(v)}
        apply_channel_plan(trial, env.example, plan, forward=env.forward)
        return trial


def _same_shapes(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(sa[k].shape == sb[k].shape for k in sa)


def _logits_shape(env: ModelEnv) -> torch.Size | None:
    """The logits' shape on ``env.example``, known without running the model (tensors)."""
    if isinstance(env.example, torch.Tensor):
        return torch.Size([env.example.shape[0], env.num_logits])
    return None


def _head_projections(model: nn.Module) -> dict[str, int]:
    """The ``Linear`` layers whose output rows belong to attention heads (q/k/v), each with the
    number of heads its rows are split into."""
    from ...models.mechanisms.attention.discovery import find_heads, head_slices

    names = {id(m): n for n, m in model.named_modules()}
    found: dict[str, int] = {}
    for group in find_heads(model, single=True)[0]:
        for module, _, dim, idx in head_slices(model, group):
            if dim == 0 and isinstance(module, nn.Linear):
                name = names[id(module)]
                found[name] = max(found.get(name, 1), int(idx.shape[0]) if idx.dim() > 1 else 1)
    return found

