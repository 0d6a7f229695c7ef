"""Hidden-unit removal for ``nn.LSTM``, ``nn.GRU`` and ``nn.RNN``.

A hidden unit of a recurrent layer owns one row in each gate block of ``weight_ih``,
``weight_hh`` and the biases (4 gates for LSTM, 3 for GRU, 1 for RNN), one column of
``weight_hh``, and, in stacked or bidirectional layers, the matching input columns of the next
layer. Removing it shrinks all of these consistently, in every layer and direction (the unit
index is the same in each, since PyTorch keeps one ``hidden_size``), and the input columns of the
layers that read the recurrent output.

Those readers are found by following the output through one forward pass; the surgery is made
on a copy and checked against the original with the units silenced (all their gate rows zeroed,
which keeps a unit's state at zero from a zero initial state), so a model whose readers cannot
be mapped is refused, unchanged. torch-pruning's own LSTM pruner handles one layer only and its
dependency graph fails on GRUs and bidirectional layers, so the surgery is done here directly.

Examples
--------
>>> import torch
>>> from torch import nn
>>> class Net(nn.Module):
...     def __init__(self):
...         super().__init__()
...         self.rnn, self.head = nn.GRU(8, 16, batch_first=True), nn.Linear(16, 3)
...     def forward(self, x):
...         return self.head(self.rnn(x)[0][:, -1])
>>> net, x = Net(), torch.randn(2, 5, 8)
>>> remove_hidden_units(net, {"rnn": [0, 5]}, x, lambda m, t: m(t))
{'rnn': [0, 5]}
>>> net.rnn.hidden_size, net.head.in_features
(14, 14)
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ...core.errors import PruneError
from .model_tools import eval_mode

__all__ = ["RecurrentGroup", "find_recurrent", "unit_slices", "recurrent_magnitude",
           "recurrent_readers", "remove_hidden_units"]

_GATES = {nn.LSTM: 4, nn.GRU: 3, nn.RNN: 1}


@dataclass(frozen=True)
class RecurrentGroup:
    """The hidden units of one recurrent layer (``name``), shared by its layers/directions."""

    name: str
    kind: str
    hidden_size: int
    num_layers: int
    directions: int


def find_recurrent(model: nn.Module) -> tuple[list[RecurrentGroup], dict[str, str]]:
    """Recurrent layers whose hidden units can be removed, and the others with why.

    Examples
    --------
    >>> from torch import nn
    >>> groups, skipped = find_recurrent(nn.ModuleDict({"a": nn.LSTM(4, 8),
    ...                                                 "b": nn.LSTM(4, 8, proj_size=2)}))
    >>> [g.name for g in groups], list(skipped)
    (['a'], ['b'])
    """
    groups, skipped = [], {}
    for name, module in model.named_modules():
        kind = next((t for t in _GATES if type(module) is t), None)
        if kind is None:
            continue
        if getattr(module, "proj_size", 0):
            skipped[name] = ("proj_size > 0: the projected state ties weight_hh to proj_size, "
                             "not hidden_size; hidden units of projected LSTMs are not supported")
        elif module.hidden_size < 2:
            skipped[name] = "has a single hidden unit"
        else:
            groups.append(RecurrentGroup(name, kind.__name__, module.hidden_size,
                                         module.num_layers, 2 if module.bidirectional else 1))
    return groups, skipped


def _suffixes(rnn: nn.RNNBase) -> list[str]:
    return [f"_l{layer}{d}" for layer in range(rnn.num_layers)
            for d in ([""] + (["_reverse"] if rnn.bidirectional else []))]


def unit_slices(rnn: nn.RNNBase) -> list[tuple[str, int, torch.Tensor]]:
    """``(parameter name, dim, (hidden, width) indices)``: the tensors each hidden unit owns.

    Scores per weight (magnitude, Taylor weight x gradient, relevance) summed over these give
    per-unit scores.
    """
    h, gates = rnn.hidden_size, _GATES[type(rnn)]
    rows = torch.arange(h).unsqueeze(1) + h * torch.arange(gates).unsqueeze(0)   # (h, gates)
    cols = torch.arange(h).unsqueeze(1)
    inputs = cols + h * torch.arange(2 if rnn.bidirectional else 1).unsqueeze(0)
    out = []
    for sfx in _suffixes(rnn):
        layer = int(sfx[2:].split("_")[0])
        out.append((f"weight_ih{sfx}", 0, rows))
        out.append((f"weight_hh{sfx}", 0, rows))
        out.append((f"weight_hh{sfx}", 1, cols))
        if layer > 0:   # the previous layer's output is this layer's input
            out.append((f"weight_ih{sfx}", 1, inputs))
        if rnn.bias:
            out.append((f"bias_ih{sfx}", 0, rows))
            out.append((f"bias_hh{sfx}", 0, rows))
    return out


def recurrent_magnitude(model: nn.Module, groups: Sequence[RecurrentGroup] | None = None
                        ) -> dict[str, torch.Tensor]:
    """L2 norm of every weight each hidden unit owns, per recurrent layer."""
    groups = find_recurrent(model)[0] if groups is None else groups
    out = {}
    for group in groups:
        rnn = model.get_submodule(group.name)
        total = torch.zeros(group.hidden_size, dtype=torch.float64)
        for pname, dim, idx in unit_slices(rnn):
            t = getattr(rnn, pname).detach().double().movedim(dim, 0)
            total += t[idx.flatten()].reshape(group.hidden_size, -1).pow(2).sum(1)
        out[group.name] = total.sqrt().float()
    return out


def _keep(idx: torch.Tensor, keep: list[int]) -> torch.Tensor:
    return idx[keep].flatten().sort().values


def _shrink_rnn(rnn: nn.RNNBase, keep: list[int]) -> None:
    for pname, dim, idx in unit_slices(rnn):
        old = getattr(rnn, pname)
        new = nn.Parameter(old.detach().index_select(dim, _keep(idx, keep)),
                           requires_grad=old.requires_grad)
        setattr(rnn, pname, new)
    rnn.hidden_size = len(keep)
    rnn._init_flat_weights()   # the fused kernel reads a cached list of the weight tensors


def _readers(model: nn.Module, rnn: nn.RNNBase, example, forward: Callable) -> list[str]:
    """Linear layers whose input is computed from the recurrent layer's outputs."""
    found: list[str] = []
    names = {m: n for n, m in model.named_modules()}

    def mark(_module, _args, output):
        out, state = output
        if not torch.is_tensor(out):
            raise PruneError(f"remove_hidden_units: {names[rnn]!r} returns a "
                             f"{type(out).__name__} (packed sequences are not supported)")
        state = tuple(s.detach().requires_grad_() for s in state) \
            if isinstance(state, tuple) else state.detach().requires_grad_()
        return out.detach().requires_grad_(), state

    def seen(module, args):
        if args and torch.is_tensor(args[0]) and args[0].requires_grad:
            found.append(names[module])

    def cut(_module, _args, output):   # only direct readers: stop the trail at each one
        if torch.is_tensor(output):
            return output.detach()
        out, state = output
        state = tuple(t.detach() for t in state) if isinstance(state, tuple) else state.detach()
        return out.detach(), state

    frozen = [(p, p.requires_grad) for p in model.parameters()]
    handles = [rnn.register_forward_hook(mark)]
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.RNNBase)) and m is not rnn:
            handles += [m.register_forward_pre_hook(seen), m.register_forward_hook(cut)]
    try:
        for p, _ in frozen:
            p.requires_grad_(False)
        with torch.enable_grad(), eval_mode(model):
            forward(model, example)
    finally:
        for handle in handles:
            handle.remove()
        for p, flag in frozen:
            p.requires_grad_(flag)
    return found


def recurrent_readers(model: nn.Module, name: str, example, forward: Callable) -> list[str]:
    """Names of the Linear and recurrent layers that read recurrent layer ``name``'s outputs
    (its sequence output or final state) directly, found by one forward pass on ``example``.

    Raises :class:`PruneError` when the layer returns a packed sequence.
    """
    return _readers(model, model.get_submodule(name), example, forward)


def _shrink_reader(layer: nn.Module, reader: str, name: str, h: int, directions: int,
                   keep: list[int]) -> None:
    """Keep the input columns of a Linear or recurrent layer that match the kept units."""
    width = layer.input_size if isinstance(layer, nn.RNNBase) else layer.in_features
    if width not in (h, directions * h):
        raise PruneError(f"remove_hidden_units(plan=...): {reader!r} reads {name!r} with "
                         f"{width} features, not {h} or {directions * h}; its columns cannot "
                         "be mapped to hidden units")
    cols = (torch.tensor(keep).unsqueeze(0) + h * torch.arange(width // h).unsqueeze(1))
    cols = cols.flatten()
    if isinstance(layer, nn.Linear):
        layer.weight = nn.Parameter(layer.weight.detach()[:, cols])
        layer.in_features = len(cols)
        return
    for sfx in ("_l0", "_l0_reverse") if layer.bidirectional else ("_l0",):
        old = getattr(layer, "weight_ih" + sfx)
        setattr(layer, "weight_ih" + sfx, nn.Parameter(old.detach()[:, cols]))
    layer.input_size = len(cols)
    layer._init_flat_weights()


def _silenced(rnn: nn.RNNBase, units: list[int]) -> None:
    """Zero every gate row of ``units``: from a zero initial state they then output zeros."""
    with torch.no_grad():
        for pname, dim, idx in unit_slices(rnn):
            if dim == 0:
                getattr(rnn, pname)[idx[units].flatten()] = 0


def remove_hidden_units(model: nn.Module, plan: Mapping[str, Sequence[int]], example,
                        forward: Callable, *, atol: float = 1e-5) -> dict[str, list[int]]:
    """Remove, in place, hidden units ``plan[name]`` of each recurrent layer ``name``.

    The same unit indices go in every layer and direction of a stacked or bidirectional
    module. Layers reading the recurrent output lose the matching input columns.

    Raises
    ------
    PruneError
        Naming the layer: not a supported recurrent layer (``proj_size``...), indices out of
        range or removing every unit, or readers of the output that cannot be mapped (the
        check against the silenced original fails). The model is unchanged then.
    """
    groups, skipped = find_recurrent(model)
    by_name = {g.name: g for g in groups}
    applied = {}
    for name, units in plan.items():
        if name not in by_name:
            why = skipped.get(name, "not an nn.LSTM / nn.GRU / nn.RNN of this model")
            raise PruneError(f"remove_hidden_units(plan=...): cannot prune {name!r}: {why}")
        size = by_name[name].hidden_size
        idx = sorted({int(u) for u in units})
        if len(idx) != len(units) or any(u < 0 or u >= size for u in idx):
            raise PruneError(f"remove_hidden_units(plan=...): units of {name!r} must be "
                             f"distinct indices in [0, {size}), got {list(units)}")
        if len(idx) >= size:
            raise PruneError(f"remove_hidden_units(plan=...): would remove every hidden unit "
                             f"of {name!r}")
        applied[name] = idx
    trial, reference = copy.deepcopy(model), copy.deepcopy(model)
    readers: dict[str, list[str]] = {}
    for name, units in applied.items():
        if not units:
            continue
        rnn = trial.get_submodule(name)
        h, directions = rnn.hidden_size, 2 if rnn.bidirectional else 1
        keep = [u for u in range(h) if u not in set(units)]
        readers[name] = _readers(trial, rnn, example, forward)
        for reader in readers[name]:
            _shrink_reader(trial.get_submodule(reader), reader, name, h, directions, keep)
        _shrink_rnn(rnn, keep)
        _silenced(reference.get_submodule(name), units)
    with torch.no_grad(), eval_mode(trial), eval_mode(reference):
        try:
            got, expected = forward(trial, example), forward(reference, example)
        except RuntimeError as exc:
            raise PruneError(f"remove_hidden_units(plan=...): the pruned model no longer runs "
                             f"({exc}); nothing was changed") from None
    if got.shape != expected.shape or not torch.allclose(got, expected, atol=atol):
        raise PruneError(f"remove_hidden_units(plan=...): the readers of {list(applied)} "
                         "could not be mapped exactly (e.g. the output is reshaped or sliced "
                         "across units before a Linear layer); nothing was changed")
    for name in readers:
        for reader in [name, *readers[name]]:
            parent, _, attr = reader.rpartition(".")
            owner = model.get_submodule(parent) if parent else model
            setattr(owner, attr, trial.get_submodule(reader))
    return applied
