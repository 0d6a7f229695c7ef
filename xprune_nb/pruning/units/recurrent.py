"""Hidden units of recurrent layers (``nn.LSTM``, ``nn.GRU``, ``nn.RNN``), removed for real.

One group per recurrent module: its ``hidden_size`` units, shared by every layer and direction
of a stacked or bidirectional module (PyTorch keeps one ``hidden_size``). Removing a unit drops
its rows in every gate of ``weight_ih`` / ``weight_hh`` and the biases, its ``weight_hh``
column, the next layer's input columns, and the input columns of the layers that read the
recurrent output (:mod:`xprune_nb.models.mechanisms.recurrent`), so parameters, MACs and latency
fall. Plans are plain data, ``{module name: [removed units]}``, replayed on a fresh copy.

A module is offered only if a trial removal of a few of its units (on a copy) reproduces the
model with those units silenced; the others are listed by ``Study.prunable("recurrent")`` with
the surgery's reason (``proj_size``, a reader that reorders or mixes the units, a packed
sequence, a module that never runs...).

Criteria score these units through ``recurrent_scores(ctx)`` returning
``{module name: (hidden_size,) scores}``; ``ctx.units.detail`` holds ``groups``
(:class:`~xprune_nb.models.mechanisms.recurrent.RecurrentGroup` by name) and ``readers`` (the layers
that read each module), and :mod:`xprune_nb.criteria._recurrent` has the shared pieces.

Examples
--------
>>> import torch
>>> from torch import nn
>>> from xprune_nb.pruning.units import ModelEnv
>>> class Net(nn.Module):
...     def __init__(self):
...         super().__init__()
...         self.rnn, self.head = nn.LSTM(8, 6, batch_first=True), nn.Linear(6, 3)
...     def forward(self, x):
...         return self.head(self.rnn(x)[0][:, -1])
>>> net = Net()
>>> env = ModelEnv.of(net, torch.randn(2, 5, 8), lambda m, x: m(x), 3)
>>> kind = RecurrentUnits()
>>> found = kind.find(net, env)
>>> found.groups, found.sizes
({'rnn': ('rnn', 'head')}, {'rnn': 6})
>>> kind.apply(net, found, {"rnn": torch.tensor([1, 4])}, env)
{'rnn': [1, 4]}
>>> net.rnn.hidden_size, net.head.in_features
(4, 4)
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ...core.errors import PruneError
from ...models.mechanisms.model_tools import call_model, eval_mode
from ...models.mechanisms.recurrent import find_recurrent, recurrent_readers, remove_hidden_units
from .base import ModelEnv, UnitKind, Units

__all__ = ["RecurrentUnits"]

_PREFIX = "remove_hidden_units(plan=...): "


def _call(model: nn.Module, x: torch.Tensor):
    return call_model(model, x)


def _running(model: nn.Module, names: list[str], env: ModelEnv) -> set[str]:
    """Those of ``names`` whose forward runs on the study's example."""
    seen: set[str] = set()
    if not names:
        return seen
    handles = [model.get_submodule(n).register_forward_hook(
        lambda _m, _a, _o, n=n: seen.add(n)) for n in names]
    try:
        with torch.no_grad(), eval_mode(model):
            env.forward(model, env.example)
    finally:
        for h in handles:
            h.remove()
    return seen


def _probe(size: int) -> list[int]:
    """Units removed on trial: the first and a middle one (one when only two exist), so a
    reader that reorders or slices the units shows up as a mismatch."""
    return [0] if size < 3 else [0, size // 2]


def _refusal(exc: Exception) -> str:
    text = str(exc)
    return text[len(_PREFIX):] if text.startswith(_PREFIX) else text


class RecurrentUnits(UnitKind):
    """The hidden units of every ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` that runs."""

    name = "recurrent"
    noun = "recurrent hidden units"
    structural = True
    speeds_up = True
    score_as = "recurrent"

    def find(self, model: nn.Module, env: ModelEnv, *, prune_output: bool = False) -> Units:
        candidates, skipped = find_recurrent(model)
        ran = _running(model, [g.name for g in candidates], env)
        kept, readers = {}, {}
        for group in candidates:
            if group.name not in ran:
                skipped[group.name] = "never runs in the model's forward on the study's data"
                continue
            try:
                found = recurrent_readers(model, group.name, env.example, env.forward)
                # the surgery's own check, on a copy: the readers must map unit by unit
                remove_hidden_units(copy.deepcopy(model), {group.name: _probe(group.hidden_size)},
                                    env.example, env.forward)
            except PruneError as exc:
                skipped[group.name] = _refusal(exc)
                continue
            except Exception as exc:  # noqa: BLE001 - any failure: this layer can't be pruned
                skipped[group.name] = f"removing its units breaks the forward ({exc})"
                continue
            kept[group.name], readers[group.name] = group, found
        modules = dict(model.named_modules())
        return Units(self.name, groups={n: (n, *readers[n]) for n in kept},
                     layers={n: modules[n] for n in kept},
                     sizes={n: g.hidden_size for n, g in kept.items()}, skipped=skipped,
                     detail={"groups": kept, "readers": readers})

    def nothing_found(self, units: Units, call: str) -> str:
        return (f"{call}: the model has no nn.LSTM / nn.GRU / nn.RNN whose hidden units can be "
                "removed" + (f" (not prunable: {units.skipped})" if units.skipped else "")
                + ". Supported: recurrent layers without proj_size whose outputs are read by "
                "Linear or recurrent layers, unit by unit (e.g. the last step, a mean over "
                "time or the final state).")

    def check(self, units: Units, removal: dict[str, torch.Tensor], call: str) -> None:
        for name, idx in removal.items():
            size = units.sizes.get(name)
            if size is None:
                raise PruneError(f"{call}: {name!r} is not a recurrent layer whose hidden units "
                                 f"can be removed (prunable: {sorted(units.sizes)}).")
            if len(set(idx.tolist())) >= size:
                raise PruneError(f"{call}: this request would remove every hidden unit of "
                                 f"{name!r} (all {size}); keep at least one, e.g. "
                                 f"layer_amounts={{{name!r}: 0.5}}.")

    def apply(self, model: nn.Module, units: Units, removal: dict[str, torch.Tensor],
              env: ModelEnv) -> dict | None:
        plan = {k: sorted(int(i) for i in v.tolist()) for k, v in removal.items() if len(v)}
        if not plan:
            return None
        try:
            remove_hidden_units(model, plan, env.example, env.forward)
        except PruneError as exc:
            raise PruneError(f"Study.prune: {_refusal(exc)}") from None
        env.check_runs(model, "Study.prune")
        return plan

    def replay(self, model: nn.Module, plan: dict, example: torch.Tensor,
               forward=None) -> None:
        remove_hidden_units(model, {k: list(v) for k, v in plan.items()}, example,
                            forward or _call)
