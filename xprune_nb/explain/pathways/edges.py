"""How the relevance of one segment of the flow splits into unit-to-unit edges (see
:mod:`.flow`): per-connection sums of a layer's rule for channels, one backward pass per head for
attention heads."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ...models.mechanisms.lrp import import_zennit

__all__ = ["per_unit", "head_edges", "channel_edges"]


def per_unit(t: torch.Tensor, ids: torch.Tensor, n: int) -> torch.Tensor:
    """Sum of ``t`` per unit id (``ids`` shaped like ``t``), as float64."""
    return torch.zeros(n, dtype=torch.float64, device=t.device).index_add_(
        0, ids.reshape(-1), t.reshape(-1).double())


def _feature_axis(module: nn.Module, x: torch.Tensor) -> int:
    return 1 if isinstance(module, nn.modules.conv._ConvNd) else x.dim() - 1


def _tau(g: torch.Tensor, g_ids: torch.Tensor, units_p: int, r_in: torch.Tensor,
         module: nn.Module, p_axis: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Fraction of ``r_in`` (L's input relevance) that reaches P, shaped like L's input, and the
    P unit each input feature of L belongs to; ``None`` when the units cannot be matched."""
    axis = _feature_axis(module, r_in)
    feats = r_in.shape[axis]
    safe = torch.where(r_in == 0, torch.ones_like(r_in), r_in)
    if g.shape == r_in.shape and p_axis % g.dim() == axis and feats == units_p:
        # the common case (P's units are L's input features, position by position)
        tau = torch.where(r_in == 0, torch.zeros_like(r_in), g / safe)
        return tau, torch.arange(feats, device=r_in.device)
    if g.numel() == r_in.numel():
        mapped = g_ids.reshape(r_in.shape).movedim(axis, -1).reshape(-1, feats)
        if bool((mapped == mapped[:1]).all()):
            tau = torch.where(r_in == 0, torch.zeros_like(r_in), g.reshape(r_in.shape) / safe)
            return tau, mapped[0]
    n = r_in.shape[0]
    if g.shape[0] != n or feats % units_p:
        return None
    block = feats // units_p
    feature_unit = torch.arange(feats, device=r_in.device) // block
    # per input and unit: relevance that reached P over relevance at L's input
    rows = torch.arange(n, device=g.device).reshape(-1, *([1] * (g.dim() - 1)))
    g_sum = per_unit(g, g_ids + rows * units_p, n * units_p).reshape(n, units_p)
    moved = r_in.movedim(axis, -1)
    r_sum = torch.zeros(n, units_p, dtype=torch.float64, device=r_in.device)
    r_sum.index_add_(1, feature_unit, moved.reshape(n, -1, feats).sum(1).double())
    ratio = torch.where(r_sum == 0, torch.zeros_like(r_sum), g_sum / torch.where(
        r_sum == 0, torch.ones_like(r_sum), r_sum)).to(r_in.dtype)
    per_feature = ratio[:, feature_unit]                       # (n, feats)
    shape = [n] + [1] * (r_in.dim() - 1)
    shape[axis] = feats
    return per_feature.reshape(shape).expand(r_in.shape), feature_unit


def _weighted_connections(rule_hook, module: nn.Module, x: torch.Tensor, relevance: torch.Tensor,
                          tau: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
    """Per-connection relevance of ``module`` (weight-shaped, summed over the batch), each input
    element's contribution weighted by ``tau``: the rule's ``s_j = R_j / z_j`` comes from the
    unweighted forward (``z``, the layer's own output, when the rule does not modify it), the
    contributions from the weighted inputs."""
    zennit = import_zennit()
    outputs, weighted, weights = [], [], []
    for in_mod, param_mod, out_mod in zip(rule_hook.input_modifiers, rule_hook.param_modifiers,
                                          rule_hook.output_modifiers):
        modified_input = in_mod(x)
        with zennit.core.ParamMod.ensure(param_mod)(module) as modified, torch.enable_grad():
            weight = modified.weight
            if not weight.requires_grad:
                weight.requires_grad_(True)
            if z is not None:
                outputs.append(z)
            else:
                with torch.no_grad():   # only the denominators z_j: no graph needed
                    outputs.append(out_mod(modified.forward(modified_input)))
            weighted.append(out_mod(modified.forward(modified_input * tau)))
            weights.append(weight)
    grad_outputs = rule_hook.gradient_mapper(relevance, outputs)
    grads = torch.autograd.grad(weighted, weights, grad_outputs=grad_outputs, allow_unused=True)
    grads = [torch.zeros_like(w) if g is None else g for w, g in zip(weights, grads)]
    return rule_hook.reducer([w.detach() for w in weights], grads).detach()


def _connections_to_units(conn: torch.Tensor, module: nn.Module, feature_unit: torch.Tensor,
                          units_p: int) -> torch.Tensor:
    """(out, in[, kernel]) connection relevance -> (units of P, units of L)."""
    conn = conn.double()
    if conn.dim() > 2:
        conn = conn.flatten(2).sum(2)
    out_ch, in_per = conn.shape
    groups = getattr(module, "groups", 1)
    if groups > 1:   # grouped conv: input channel of output j is its group's block
        full = torch.zeros(out_ch, in_per * groups, dtype=conn.dtype, device=conn.device)
        per_group = out_ch // groups
        for gi in range(groups):
            full[gi * per_group:(gi + 1) * per_group, gi * in_per:(gi + 1) * in_per] = \
                conn[gi * per_group:(gi + 1) * per_group]
        conn = full
    edges = torch.zeros(units_p, out_ch, dtype=conn.dtype, device=conn.device)
    return edges.index_add_(0, feature_unit.to(conn.device), conn.t())


def head_edges(spec, entry, r_in, preds, ids, by_module, segment, key_of, totals) -> None:
    names = [p for p, _ in preds]
    per = {p: torch.zeros(by_module[p].units, spec.units, dtype=torch.float64) for p in names}
    unit_ids = ids[spec.module]
    for j in range(spec.units):
        part = torch.where(unit_ids == j, r_in, torch.zeros_like(r_in))
        got, _ = segment(entry["x"], part, names)
        for p, g in zip(names, got):
            if g is not None:
                per[p][:, j] = per_unit(g, ids[p], by_module[p].units).cpu()
    for p, g in preds:
        edges = per[p].numpy()
        totals.edges[key_of[p]] = edges
        whole = per_unit(g, ids[p], by_module[p].units).cpu().numpy()
        totals.edge_error[key_of[p]] = _rel_error(edges.sum(1), whole)


def channel_edges(runner, spec, module, entry, r_node, r_in, preds, ids, by_module, key_of,
                   totals, modules) -> None:
    x_in = entry["leaf"].detach()
    # the epsilon rule modifies nothing: its z_j is the layer's own output, already computed
    plain = type(runner.rule_hook).__name__ == "Epsilon"
    for p, g in preds:
        units_p = by_module[p].units
        p_axis = 1 if isinstance(modules[p], nn.modules.conv._ConvNd) else -1
        found = _tau(g, ids[p], units_p, r_in, module, p_axis)
        if found is None:
            totals.unmapped[key_of[p]] = (
                f"the outputs of {by_module[p].name!r} reach {spec.name!r} in a way that does "
                "not match units to inputs one to one (e.g. a concatenation); its share is "
                "counted, its edges are not drawn")
            continue
        tau, feature_unit = found
        conn = _weighted_connections(runner.rule_hook, module, x_in, r_node, tau.detach(),
                                     z=entry["out"].detach() if plain else None)
        edges = _connections_to_units(conn, module, feature_unit, units_p).cpu().numpy()
        totals.edges[key_of[p]] = edges
        whole = per_unit(g, ids[p], units_p).cpu().numpy()
        totals.edge_error[key_of[p]] = _rel_error(edges.sum(1), whole)


def _rel_error(a: np.ndarray, b: np.ndarray) -> float:
    scale = max(float(np.abs(b).sum()), 1e-12)
    return float(np.abs(a - b).sum() / scale)
