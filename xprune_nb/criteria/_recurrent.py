"""Scores of recurrent hidden units for the ``recurrent`` unit kind.

A hidden unit ``j`` of a recurrent module is one index shared by every layer and direction; its
*outputs* are feature ``j`` (and ``hidden + j`` for the reverse direction) of the sequence
output at every time step, and row ``j`` of the final states ``h_n`` (and ``c_n`` for an LSTM).
Removing the unit zeroes all of them, so:

- **magnitude** is the norm of every weight the unit owns (its rows in all gates of
  ``weight_ih`` / ``weight_hh`` and the biases, its ``weight_hh`` column, the next layer's input
  columns) together with its input columns in the layers that read the module;
- **Taylor** gates the unit's state, ``h * g`` with one gate per example and unit, at every
  time step of every layer and direction, *inside* the recurrence (the module is recomputed
  step by step by :func:`unrolled`; at g = 0 the unit is silenced exactly as removal does).
  At g = 1 one backward per batch gives every ``dL_i/dg_ij = sum over steps of h dL_i/dh``,
  with ``dL/dh`` the total derivative through the output *and* the recurrence: the
  first-order loss change of removing the unit (T times the per-step mean);
- **LRP** reads the relevance at those outputs (see :func:`unit_relevance`).

The helpers take the :class:`~xprune_nb.criteria.base.ScoringContext` of a ``recurrent`` kind
(``ctx.units.detail`` has ``groups`` and ``readers``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .base import ScoringContext

__all__ = ["recurrent_magnitudes", "per_example_unit_gates", "unit_totals", "unit_relevance"]


def _groups(ctx: ScoringContext) -> dict:
    return dict(ctx.units.detail["groups"])


def _reader_columns(layer: nn.Module, unit_count: int) -> list[torch.Tensor]:
    """(hidden, k) views of the weights a reader applies to each unit's features."""
    weights = ([layer.weight] if isinstance(layer, nn.Linear)
               else [getattr(layer, "weight_ih_l0" + s)
                     for s in (("", "_reverse") if layer.bidirectional else ("",))])
    out = []
    for w in weights:
        w = w.detach().double().cpu()
        # input feature f belongs to unit f % hidden (directions are concatenated)
        cols = w.reshape(w.shape[0], -1, unit_count)            # (rows, directions, hidden)
        out.append(cols.permute(2, 0, 1).reshape(unit_count, -1))
    return out


def recurrent_magnitudes(ctx: ScoringContext, p: int = 1) -> dict[str, torch.Tensor]:
    """``p``-norm of all weights each hidden unit owns, its reader columns included.

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> from xprune_nb.models.mechanisms.recurrent import find_recurrent
    >>> model = nn.ModuleDict({"rnn": nn.GRU(3, 4), "head": nn.Linear(4, 2)})
    >>> ctx = SimpleNamespace(model=model, units=SimpleNamespace(detail={
    ...     "groups": {"rnn": find_recurrent(model)[0][0]}, "readers": {"rnn": ["head"]}}))
    >>> recurrent_magnitudes(ctx, p=2)["rnn"].shape
    torch.Size([4])
    """
    from ..models.mechanisms.recurrent import unit_slices

    out = {}
    for name, group in _groups(ctx).items():
        rnn = ctx.model.get_submodule(name)
        h = group.hidden_size
        total = torch.zeros(h, dtype=torch.float64)
        for pname, dim, idx in unit_slices(rnn):
            t = getattr(rnn, pname).detach().double().cpu().movedim(dim, 0)
            total += t[idx.flatten()].reshape(h, -1).abs().pow(p).sum(1)
        for reader in ctx.units.detail["readers"].get(name, []):
            for cols in _reader_columns(ctx.model.get_submodule(reader), h):
                total += cols.abs().pow(p).sum(1)
        out[name] = total.pow(1.0 / p).float()
    return out


def unit_totals(module: nn.RNNBase, tensor: torch.Tensor, *, state: bool) -> torch.Tensor:
    """(batch, hidden) sums of a recurrent output over everything but the batch and the unit.

    ``tensor`` is the sequence output (``state=False``: time steps and directions are summed)
    or a final state ``h_n`` / ``c_n`` (``state=True``: layers and directions are summed).
    Unbatched calls count as a batch of one.
    """
    h = module.hidden_size
    if state:       # (layers * directions, [batch,] hidden)
        return (tensor.sum(0) if tensor.dim() == 3 else tensor.sum(0, keepdim=True))
    if tensor.dim() == 2:                    # unbatched (time, directions * hidden)
        return tensor.reshape(1, -1, h).sum(1)
    if not module.batch_first:
        tensor = tensor.transpose(0, 1)      # (batch, time, directions * hidden)
    return tensor.reshape(tensor.shape[0], -1, h).sum(1)


def _outputs(output) -> tuple[torch.Tensor, list[torch.Tensor]]:
    out, state = output
    return out, list(state) if isinstance(state, tuple) else [state]


def unrolled(rnn: nn.RNNBase, x: torch.Tensor, hx=None, gate: torch.Tensor | None = None):
    """``rnn(x, hx)`` recomputed step by step (eval mode: no inter-layer dropout), with every
    hidden unit's state ``h`` multiplied by ``gate`` (batch, hidden) at each step of every layer
    and direction, before it is output and fed back; the final ``c_n`` is gated too.

    At ``gate = 1`` the result equals ``rnn(x, hx)``; at ``gate[:, j] = 0`` unit ``j`` is
    silenced everywhere, as if removed. ``proj_size`` and packed sequences are not supported
    (the ``recurrent`` unit kind never offers such layers).

    Examples
    --------
    >>> rnn = nn.GRU(3, 4, num_layers=2, bidirectional=True)
    >>> x = torch.randn(5, 2, 3)
    >>> torch.allclose(unrolled(rnn, x)[0], rnn(x)[0], atol=1e-6)
    True
    """
    lstm, gru = isinstance(rnn, nn.LSTM), isinstance(rnn, nn.GRU)
    batched = x.dim() == 3
    if not batched:
        x = x.unsqueeze(1)
    elif rnn.batch_first:
        x = x.transpose(0, 1)                                      # (time, batch, features)
    steps, n, size = x.shape[0], x.shape[1], rnn.hidden_size
    directions = 2 if rnn.bidirectional else 1
    if hx is None:
        h0 = x.new_zeros(rnn.num_layers * directions, n, size)
        c0 = torch.zeros_like(h0) if lstm else None
    else:
        h0, c0 = hx if lstm else (hx, None)
        if not batched:                                            # (layers * dirs, hidden)
            h0, c0 = h0.unsqueeze(1), (c0.unsqueeze(1) if lstm else None)
    gate = x.new_ones(n, size) if gate is None else gate.to(x.dtype)
    layer_input, h_n, c_n = x, [], []
    for layer in range(rnn.num_layers):
        outs = []
        for d in range(directions):
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            w_hh = getattr(rnn, "weight_hh" + sfx)
            b_ih = getattr(rnn, "bias_ih" + sfx) if rnn.bias else None
            b_hh = getattr(rnn, "bias_hh" + sfx) if rnn.bias else None
            xs = F.linear(layer_input, getattr(rnn, "weight_ih" + sfx), b_ih)
            h, c = h0[layer * directions + d], (c0[layer * directions + d] if lstm else None)
            seq: list[torch.Tensor] = [h] * steps
            for t in (range(steps - 1, -1, -1) if d else range(steps)):
                gh = F.linear(h, w_hh, b_hh)
                if lstm:
                    i, f, g, o = (xs[t] + gh).chunk(4, -1)
                    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                    h = torch.sigmoid(o) * torch.tanh(c)
                elif gru:
                    ir, iz, in_ = xs[t].chunk(3, -1)
                    hr, hz, hn = gh.chunk(3, -1)
                    r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
                    h = (1 - z) * torch.tanh(in_ + r * hn) + z * h
                else:
                    pre = xs[t] + gh
                    h = torch.tanh(pre) if rnn.nonlinearity == "tanh" else torch.relu(pre)
                h = h * gate
                seq[t] = h
            outs.append(torch.stack(seq))
            h_n.append(h)
            c_n.append(c * gate if lstm else None)
        layer_input = torch.cat(outs, -1)
    out, h_n = layer_input, torch.stack(h_n)
    c_n = torch.stack(c_n) if lstm else None
    if not batched:
        out, h_n = out.squeeze(1), h_n.squeeze(1)
        c_n = c_n.squeeze(1) if lstm else None
    elif rnn.batch_first:
        out = out.transpose(0, 1)
    return out, ((h_n, c_n) if lstm else h_n)


@contextlib.contextmanager
def _gated(ctx: ScoringContext, gates: dict[str, list[torch.Tensor]]) -> Iterator[None]:
    """Recompute each recurrent module with :func:`unrolled` and a fresh per-example gate at
    each call (a module run twice gets two gates)."""
    handles = []

    def make(name):
        def hook(module, args, kwargs, _output):
            x = args[0] if args else kwargs["input"]
            hx = args[1] if len(args) > 1 else kwargs.get("hx")
            n = (x.shape[0] if module.batch_first else x.shape[1]) if x.dim() == 3 else 1
            gate = torch.ones(n, module.hidden_size, device=x.device, requires_grad=True)
            gates[name].append(gate)
            return unrolled(module, x, hx, gate)
        return hook

    try:
        for name in _groups(ctx):
            handles.append(ctx.model.get_submodule(name).register_forward_hook(
                make(name), with_kwargs=True))
        yield
    finally:
        for handle in handles:
            handle.remove()


def per_example_unit_gates(ctx: ScoringContext) -> dict[str, torch.Tensor]:
    """``{module: (examples, hidden) dL_i/dg_ij}`` at g = 1, one backward per batch (the loss
    is the summed cross-entropy on the labels, so row i is example i's own derivative)."""
    names = list(_groups(ctx))
    out: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    for x, y in ctx.batches():
        gates: dict[str, list[torch.Tensor]] = {n: [] for n in names}
        with _gated(ctx, gates), torch.enable_grad():
            logits = ctx.forward(ctx.model, x)
            flat = [g for n in names for g in gates[n]]
            grads = torch.autograd.grad(F.cross_entropy(logits, y, reduction="sum"), flat,
                                        allow_unused=True) if flat else []
        grads = iter(grads)
        for n in names:
            total = torch.zeros(len(x), ctx.units.sizes[n], dtype=torch.float64)
            for _ in gates[n]:
                g = next(grads)
                if g is not None:   # an unbatched call (one gate row) counts for every row
                    g = g.detach().double().cpu()
                    total += g if len(g) == len(x) else g.sum(0)
            out[n].append(total)
    ctx.model.zero_grad(set_to_none=True)
    return {n: torch.cat(v) for n, v in out.items()}


def unit_relevance(ctx: ScoringContext, runner, *, signed: bool = False
                   ) -> dict[str, torch.Tensor]:
    """LRP relevance at each hidden unit's outputs, averaged over the reference set.

    The relevance of the true class's logit is propagated with the LRP rules of
    :class:`~xprune_nb.models.mechanisms.lrp.LRPRunner` through the layers *after* the recurrent
    module, down to its outputs (sequence output and final states); a unit's relevance is the sum
    over time steps, directions and states of the relevance there, per example, in absolute value
    unless ``signed``. zennit has no rule for the recurrence itself, so relevance is *not*
    propagated through the LSTM/GRU cell (into its gates, earlier steps or stacked inner layers): an
    inner layer of a stacked module is scored through the unit index it shares with the last layer.
    """
    names = list(_groups(ctx))
    modules = runner.modules
    captured: list[tuple[str, bool, torch.Tensor]] = []

    def make(name):
        def hook(_module, _args, output):
            out, states = _outputs(output)
            captured.append((name, False, out))
            captured.extend((name, True, s) for s in states)
        return hook

    totals = {n: torch.zeros(ctx.units.sizes[n], dtype=torch.float64) for n in names}
    count = 0
    with runner.registered():
        for x, y in ctx.batches():
            captured.clear()
            handles = [modules[n].register_forward_hook(make(n)) for n in names]
            try:
                rel = runner.relevance_at(x, y, lambda: [t for _, _, t in captured])
            finally:
                for h in handles:
                    h.remove()
            per_example = {n: torch.zeros(len(x), ctx.units.sizes[n], dtype=torch.float64)
                           for n in names}
            for (name, state, _), r in zip(captured, rel):
                per_example[name] += unit_totals(modules[name], r.double().cpu(), state=state)
            for n, r in per_example.items():
                totals[n] += (r if signed else r.abs()).sum(0)
            count += len(x)
    return {n: (t / max(count, 1)).float() for n, t in totals.items()}
