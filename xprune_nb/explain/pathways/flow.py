"""Relevance flow between the units of consecutive node layers, by layer-wise LRP (zennit).

What is computed, precisely
---------------------------
The model runs once per batch on a private copy
(:class:`~xprune_nb.models.mechanisms.lrp.LRPRunner`), with zennit's rules registered and the graph
*cut* at every node layer's input: a forward pre-hook hands each node layer a detached copy of its
input. The backward then runs layer by layer, from the logits down, in reverse execution order:

* ``R_L``, the relevance at node layer ``L`` (its output units, or for a head node the input of
  its output projection, split into head blocks), is what its consumers sent it;
* a channel node turns ``R_L`` into the relevance at its own input with its LRP rule
  (``R_in``; ``1 - sum(R_in) / sum(R_L)`` is the share its bias and the stabiliser absorb);
* ``R_in`` is propagated back through everything between ``L`` and the node layers that feed it
  directly (activations, pooling, normalisation, residual additions, non-node layers with their
  own rules), stopping at the cut: what arrives at each predecessor ``P`` is added to ``R_P``.
  A residual addition splits relevance in proportion to its summands, so the part that takes
  the skip connection arrives at an earlier predecessor (or the model's input): the skip share.

This is exactly the usual LRP pass (the same relevance reaches every layer), computed segment by
segment. The *edges* split each segment by unit:

* channel nodes: ``flow(i -> j)`` is the relevance of output unit ``j`` of ``L`` that the rule
  sends to ``L``'s inputs fed by unit ``i`` of ``P`` (for the epsilon rule
  ``a_i w_ij / (z_j + eps) * R_j``), summed over positions and inputs, times the fraction of
  that input relevance that goes on to reach ``P`` (1 through ReLU, pooling or flatten; less
  where a skip connection or a bias in between takes a part). The fraction is taken per element
  where ``P``'s output maps one to one onto ``L``'s input, and per unit and input where pooling
  sits between them (then a leak to a skip or a bias is spread evenly over a unit's positions).
  The per-connection sums are the weight-gradient form of the rule (Yeom et al. 2021, eq. 9),
  so one extra pass per layer gives all of them.
* head nodes (transformers): ``flow(h -> g)`` is the relevance of head ``g`` of a layer (at its
  output projection's input) that reaches head ``h`` of an earlier layer through the residual
  stream, computed by one backward pass per head ``g`` through the segment between them (the
  value path of attention with the attention weights held fixed, the MLP with its rules, the
  layer norms passing relevance through, the residual additions split in proportion).

Attention weights are held fixed (relevance flows through the values only, Ali et al. 2022);
layer norms pass relevance unchanged. Recurrent layers (LSTM, GRU) have no conservative LRP rule
in zennit, so pathways refuse them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ...models.mechanisms.lrp import LRPRunner
from .attention import FixedAttention, composite_for, to_module_attention
from .edges import channel_edges, head_edges, per_unit

__all__ = ["NodeSpec", "FlowTotals", "compute_flow", "flow_batch"]


@dataclass(frozen=True)
class NodeSpec:
    """A column of the map: the module whose units are nodes.

    ``mode`` is ``"out"`` (units: output channels / neurons of ``module``) or ``"heads"``
    (units: ``heads`` blocks of the input of ``module``, an attention output projection).
    ``name`` is what the tables call the layer (the attention module's name for heads).
    """

    name: str
    module: str
    mode: str
    units: int
    heads: int = 0


@dataclass
class FlowTotals:
    """Sums over inputs of one class's flow (float64 numpy)."""

    relevance: dict[str, np.ndarray] = field(default_factory=dict)      # name -> (units,)
    edges: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)  # (P, L) -> (uP, uL)
    to_inputs: dict[str, float] = field(default_factory=dict)   # R_in of L (after its rule)
    from_inputs: dict[str, dict[str, float]] = field(default_factory=dict)  # L -> {P: sum}
    to_model_input: dict[str, float] = field(default_factory=dict)
    unmapped: dict[tuple[str, str], str] = field(default_factory=dict)
    edge_error: dict[tuple[str, str], float] = field(default_factory=dict)
    logit: float = 0.0
    order: list[str] = field(default_factory=list)     # node names in execution order

    def add(self, other: FlowTotals) -> None:
        for name, v in other.relevance.items():
            self.relevance[name] = self.relevance.get(name, 0) + v
        for key, v in other.edges.items():
            self.edges[key] = self.edges.get(key, 0) + v
        for name, v in other.to_inputs.items():
            self.to_inputs[name] = self.to_inputs.get(name, 0.0) + v
        for name, by in other.from_inputs.items():
            mine = self.from_inputs.setdefault(name, {})
            for p, v in by.items():
                mine[p] = mine.get(p, 0.0) + v
        for name, v in other.to_model_input.items():
            self.to_model_input[name] = self.to_model_input.get(name, 0.0) + v
        self.unmapped.update(other.unmapped)
        for key, v in other.edge_error.items():
            self.edge_error[key] = max(self.edge_error.get(key, 0.0), v)
        self.logit += other.logit
        self.order = self.order or list(other.order)


# ---------------------------------------------------------------- helpers

def _unit_index(t: torch.Tensor, spec: NodeSpec, is_conv: bool) -> torch.Tensor:
    """Unit id of every element of a node tensor (shape of ``t``)."""
    if spec.mode == "heads":
        width = t.shape[-1] // spec.heads
        ids = torch.arange(t.shape[-1], device=t.device) // width
        return ids.expand(t.shape)
    if is_conv:
        shape = [1] * t.dim()
        shape[1] = t.shape[1]
        return torch.arange(t.shape[1], device=t.device).reshape(shape).expand(t.shape)
    return torch.arange(t.shape[-1], device=t.device).expand(t.shape)


# ---------------------------------------------------------------- one batch

def flow_batch(runner: LRPRunner, composite, specs: Sequence[NodeSpec], x: torch.Tensor,
               target: int) -> FlowTotals:
    """Layer-wise LRP of logit ``target`` on batch ``x`` with the graph cut at the node layers
    (see the module docstring); returns this batch's sums."""
    from ...models.mechanisms.lrp import _proportional_adds

    model = runner.model
    modules = dict(model.named_modules())
    by_module = {s.module: s for s in specs}
    seen: dict[str, dict] = {}
    order: list[str] = []
    handles = []

    def pre(module, args, name):
        if name in seen:
            raise RuntimeError(f"layer {name!r} runs more than once per forward (shared "
                               "weights); pathways need each node layer to run once")
        leaf = args[0].detach().requires_grad_(True)
        seen[name] = {"x": args[0], "leaf": leaf}
        order.append(name)
        return (leaf, *args[1:])

    def post(module, args, out, name):
        seen[name]["out"] = out

    for name in by_module:
        mod = modules[name]
        handles.append(mod.register_forward_pre_hook(
            lambda m, a, name=name: pre(m, a, name)))
        handles.append(mod.register_forward_hook(
            lambda m, a, o, name=name: post(m, a, o, name)))
    for p in model.parameters():
        p.requires_grad_(False)
    if isinstance(x, torch.Tensor):
        x = x.detach().clone().requires_grad_(x.is_floating_point())
    # token inputs (ids, or a dict of them) carry no relevance: it ends at the embeddings
    totals = FlowTotals()
    try:
        with composite.context(model), torch.enable_grad(), FixedAttention():
            with _proportional_adds(runner.epsilon):
                logits = runner.forward(model, x)
            for h in handles:
                h.remove()
            handles.clear()
            start = torch.zeros_like(logits)
            start[:, target] = logits.detach()[:, target]
            totals.logit = float(start.sum())
            totals.order = [by_module[n].name for n in order]
            _backward(runner, specs, by_module, modules, seen, order, x, logits, start, totals)
    finally:
        for h in handles:
            h.remove()
    return totals


def _node_tensor(entry: dict, spec: NodeSpec) -> torch.Tensor:
    return entry["leaf"] if spec.mode == "heads" else entry["out"]


def _backward(runner, specs, by_module, modules, seen, order, x, logits, start, totals) -> None:
    acc: dict[str, torch.Tensor] = {}
    is_conv = {s.module: isinstance(modules[s.module], nn.modules.conv._ConvNd) for s in specs}
    ids = {name: _unit_index(_node_tensor(seen[name], by_module[name]), by_module[name],
                             is_conv[name]) for name in order}

    def segment(top: torch.Tensor, grad: torch.Tensor, below: list[str]):
        """Relevance ``grad`` at ``top`` propagated to the node tensors of ``below`` and x."""
        wanted = [_node_tensor(seen[n], by_module[n]) for n in below]
        with_x = isinstance(x, torch.Tensor) and x.requires_grad
        if with_x:
            wanted = wanted + [x]
        if not top.requires_grad:
            # nothing before ``top`` is differentiable: it reads the input only (token ids,
            # embeddings): all its relevance is the input's
            return [None] * len(below), grad
        if not wanted:
            return [None] * len(below), None
        grads = torch.autograd.grad(top, wanted, grad_outputs=grad, retain_graph=True,
                                    allow_unused=True)
        grads = [None if g is None else g.detach() for g in grads]
        return grads[:len(below)], (grads[-1] if with_x else None)

    # the logits first: a virtual top node
    got, to_x = segment(logits, start, order)
    for name, g in zip(order, got):
        if g is not None:
            acc[name] = g
    for pos in range(len(order) - 1, -1, -1):
        name = order[pos]
        spec = by_module[name]
        entry = seen[name]
        node = _node_tensor(entry, spec)
        r_node = acc.get(name, torch.zeros_like(node))
        totals.relevance[spec.name] = per_unit(r_node, ids[name], spec.units).cpu().numpy()
        below = order[:pos]
        if spec.mode == "heads":
            r_in = r_node
        else:
            r_in = torch.autograd.grad(entry["out"], entry["leaf"], grad_outputs=r_node,
                                       retain_graph=True)[0].detach()
        totals.to_inputs[spec.name] = float(r_in.double().sum())
        got, to_x = segment(entry["x"], r_in, below)
        totals.from_inputs[spec.name] = {}
        totals.to_model_input[spec.name] = 0.0 if to_x is None else float(to_x.double().sum())
        preds = [(p, g) for p, g in zip(below, got) if g is not None]
        for p, g in preds:
            acc[p] = acc[p] + g if p in acc else g
            totals.from_inputs[spec.name][by_module[p].name] = float(g.double().sum())
        if not preds:
            continue
        key_of = {p: (by_module[p].name, spec.name) for p, _ in preds}
        if spec.mode == "heads":
            head_edges(spec, entry, r_in, preds, ids, by_module, segment, key_of, totals)
        else:
            channel_edges(runner, spec, modules[name], entry, r_node, r_in, preds, ids,
                           by_module, key_of, totals, modules)


# ---------------------------------------------------------------- many batches and classes

def compute_flow(model: nn.Module, forward: Callable, specs: Sequence[NodeSpec],
                 inputs: dict[int, torch.Tensor], *, rule: str = "epsilon",
                 epsilon: float = 1e-6, batch_size: int = 32, tick=None,
                 call: str = "Study.pathways") -> dict[int, FlowTotals]:
    """Flow for each class ``c`` on ``inputs[c]`` (one model copy, rules registered once).

    ``tick(done, total)`` is called after each batch (the progress/stop protocol)."""
    runner = LRPRunner(model, forward, rule=rule, epsilon=epsilon, call=call)
    to_module_attention(runner.model)
    composite = composite_for(runner)
    from ...data.batch import batch_size as rows_of
    from ...data.batch import take

    batches = [(c, take(x, slice(i, i + batch_size)))
               for c, x in inputs.items() for i in range(0, rows_of(x), batch_size)]
    out: dict[int, FlowTotals] = {c: FlowTotals() for c in inputs}
    for done, (c, xb) in enumerate(batches, 1):
        out[c].add(flow_batch(runner, composite, specs, xb, c))
        if tick is not None:
            tick(done, len(batches))
    return out
