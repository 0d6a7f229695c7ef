"""Shapley criterion: each unit's fair share of the model's performance (Neuron Shapley)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import ConfigError, NotScoredError
from ..data.batch import take
from ..models.mechanisms.model_tools import eval_mode
from ._relevance import UnitRelevanceMixin
from .base import Criterion, ScoringContext

__all__ = ["ShapleyCriterion"]

#: Reference examples evaluated per forward pass (configurations x examples).
_SAMPLES_PER_FORWARD = 8192


class _ShapleyResult:
    """Shapley values per unit, per class, and their standard errors."""

    def __init__(self, overall: dict, per_class: dict, errors: dict) -> None:
        self._overall, self._per_class, self.errors = overall, per_class, errors

    def scores(self) -> dict[str, torch.Tensor]:
        return {k: v.clone() for k, v in self._overall.items()}

    def per_class(self) -> dict[str, torch.Tensor]:
        return {k: v.clone() for k, v in self._per_class.items()}


class _Gates:
    """Multiplies each scored unit's output by a per-example gate (1 keeps it, 0 removes it).

    A unit followed directly by a BatchNorm is gated after the BatchNorm, because removing a
    channel removes its BatchNorm entry too: zeroing the conv output would leave BatchNorm's
    shift behind.
    """

    def __init__(self, model: nn.Module, layers: dict[str, nn.Module],
                 run: Callable[[torch.Tensor], torch.Tensor], example: torch.Tensor) -> None:
        self.layers = layers
        self.sizes = {name: int(layer.weight.shape[0]) for name, layer in layers.items()}
        self.offsets, total = {}, 0
        for name, size in self.sizes.items():
            self.offsets[name] = total
            total += size
        self.total = total
        self.gate: torch.Tensor | None = None
        self.targets = self._gate_points(model, run, example)
        self.handles = []

    def _gate_points(self, model, run, example) -> dict[str, nn.Module]:
        outputs: dict[int, tuple[str, torch.Tensor]] = {}   # tensors kept alive: ids stay unique
        follower: dict[str, nn.Module] = {}
        handles = [layer.register_forward_hook(
            lambda m, i, o, name=name: outputs.__setitem__(id(o), (name, o)))
            for name, layer in self.layers.items()]
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                def pre(m, inputs):
                    name, tensor = outputs.get(id(inputs[0]), (None, None))
                    if tensor is inputs[0] and name not in follower:
                        follower[name] = m
                handles.append(module.register_forward_pre_hook(pre))
        try:
            with torch.no_grad():
                run(example)
        finally:
            for h in handles:
                h.remove()
            outputs.clear()
        return {name: follower.get(name, layer) for name, layer in self.layers.items()}

    def __enter__(self) -> _Gates:
        for name, module in self.targets.items():
            is_conv_like = isinstance(self.layers[name], nn.modules.conv._ConvNd)
            sl = slice(self.offsets[name], self.offsets[name] + self.sizes[name])

            def hook(m, inputs, output, sl=sl, is_conv_like=is_conv_like):
                g = self.gate[:, sl]
                if is_conv_like:
                    g = g.reshape(*g.shape, *([1] * (output.dim() - 2)))
                else:
                    g = g.reshape(g.shape[0], *([1] * (output.dim() - 2)), g.shape[1])
                return output * g
            self.handles.append(module.register_forward_hook(hook))
        return self

    def __exit__(self, *exc) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()
        self.gate = None


class ShapleyCriterion(UnitRelevanceMixin, Criterion):
    """Sampled Shapley value of each unit for the model's loss or accuracy on the reference set.

    The units of all scored layers are the players; a coalition's value is the model's
    performance (``-loss`` or accuracy) on the reference set with every other unit removed
    (its output zeroed, after its BatchNorm if one follows). Each sampled permutation removes
    the units one by one from the full model; a unit's marginal contribution is the drop in
    value when it goes. Permutations are truncated once the value falls to within
    ``truncation`` of the gap between the empty and the full model (later contributions count
    as zero), and many coalitions are evaluated in one batched forward pass. This is the
    truncated Monte-Carlo estimator of Neuron Shapley (Ghorbani & Zou 2020). The standard error
    of every value is kept in ``standard_errors_`` after scoring; per-class values use the same
    permutations with the performance on each class's examples.

    Options
    -------
    permutations : int, default 20
        Sampled permutations; the standard error shrinks as 1/sqrt(permutations).
    metric : {"loss", "accuracy"}, default "loss"
        Neuron Shapley uses accuracy; the loss separates units on small reference sets, where
        accuracy changes in steps of 1/samples.
    truncation : float in [0, 1), default 0.05
        0 evaluates every permutation to the end (unbiased, slower).

    Cost: up to ``permutations x (units + 1)`` forward passes of the reference set (no
    backward), batched ``8192 // samples`` coalitions at a time; truncation usually stops a
    permutation well before the end.

    References
    ----------
    Ghorbani, Zou. Neuron Shapley: Discovering the Responsible Neurons. NeurIPS 2020.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from xprune_nb.criteria import create, ScoringContext
    >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    >>> ctx = ScoringContext(net, "channel", {"0": net[0]}, torch.randn(6, 4),
    ...                      torch.tensor([0, 1, 2, 0, 1, 2]), None, 3, lambda m, x: m(x))
    >>> crit = create("shapley", permutations=4)
    >>> crit.score(ctx)["0"].shape, crit.standard_errors_["0"].shape
    (torch.Size([8]), torch.Size([8]))
    """

    name = "shapley"
    granularities = ("channel",)
    options = {"permutations": 20, "metric": "loss", "truncation": 0.05}
    choices = {"metric": ("loss", "accuracy")}
    class_aware = True
    reference = "Ghorbani & Zou, Neuron Shapley: Discovering the Responsible Neurons, NeurIPS 2020"

    def __init__(self, **options) -> None:
        super().__init__(**options)
        call = "Study.score('shapley')"
        p = self.params["permutations"]
        if not isinstance(p, int) or isinstance(p, bool) or p < 1:
            raise ConfigError.bad_value(call, "permutations", "an integer >= 1", p)
        t = self.params["truncation"]
        if not isinstance(t, (int, float)) or isinstance(t, bool) or not 0 <= t < 1:
            raise ConfigError.bad_value(call, "truncation", "a number in [0, 1)", t)

    @property
    def standard_errors_(self) -> dict[str, torch.Tensor]:
        """Standard error of each unit's Shapley value (NaN with a single permutation)."""
        cached = getattr(self, "_last_pass", None)
        if cached is None:
            raise NotScoredError("ShapleyCriterion.standard_errors_: call score() first.")
        return {k: v.clone() for k, v in cached[2].errors.items()}

    def _values(self, ctx, gates: _Gates, masks: torch.Tensor, onehot: torch.Tensor,
                counts: torch.Tensor) -> torch.Tensor:
        """(configs, 1 + classes) values: overall, then per class, for each gate mask."""
        x, y = ctx.inputs, ctx.targets
        n = len(y)
        out = []
        per_forward = max(1, _SAMPLES_PER_FORWARD // n)
        for start in range(0, len(masks), per_forward):
            chunk = masks[start:start + per_forward]
            gates.gate = chunk.repeat_interleave(n, dim=0)
            xs = take(x, torch.arange(n).repeat(len(chunk)))   # named inputs too
            logits = ctx.forward(ctx.model, xs)
            ys = y.repeat(len(chunk))
            if self.params["metric"] == "accuracy":
                v = (logits.argmax(dim=1) == ys).double()
            else:
                v = -F.cross_entropy(logits, ys, reduction="none").double()
            v = v.reshape(len(chunk), n)
            by_class = (v @ onehot) / counts.clamp(min=1)
            by_class[:, counts == 0] = float("nan")
            out.append(torch.cat([v.mean(dim=1, keepdim=True), by_class], dim=1))
        return torch.cat(out)

    def _accumulate(self, ctx: ScoringContext) -> _ShapleyResult:
        perms, trunc = self.params["permutations"], float(self.params["truncation"])
        onehot = F.one_hot(ctx.targets.long(), ctx.num_classes).double()
        counts = onehot.sum(dim=0)
        with eval_mode(ctx.model), torch.no_grad():
            gates = _Gates(ctx.model, ctx.layers, lambda x: ctx.forward(ctx.model, x),
                           take(ctx.inputs, slice(0, 1)))
            m = gates.total
            per_forward = max(1, _SAMPLES_PER_FORWARD // len(ctx.targets))
            gen = torch.Generator().manual_seed(int(ctx.seed))
            marginals = torch.zeros(perms, m, 1 + ctx.num_classes, dtype=torch.float64)
            with gates:
                ends = self._values(ctx, gates, torch.stack([torch.ones(m), torch.zeros(m)]),
                                    onehot, counts)
                full, empty = ends[0], ends[1]
                threshold = float(empty[0] + trunc * (full[0] - empty[0]))
                for p in range(perms):
                    order = torch.randperm(m, generator=gen)
                    rank = torch.empty(m, dtype=torch.long)
                    rank[order] = torch.arange(m)
                    previous, k = full.unsqueeze(0), 0
                    while k < m:
                        ks = torch.arange(k + 1, min(k + per_forward, m) + 1)
                        masks = (rank.unsqueeze(0) >= ks.unsqueeze(1)).float()
                        vals = self._values(ctx, gates, masks, onehot, counts)
                        steps = torch.cat([previous, vals])
                        drop = steps[:-1] - steps[1:]
                        below = (vals[:, 0] <= threshold).nonzero() if trunc > 0 else []
                        if len(below):
                            # contributions after the truncation point count as zero, so the
                            # estimate does not depend on how coalitions were batched
                            keep = int(below[0]) + 1
                            marginals[p, order[k:k + keep]] = drop[:keep]
                            break
                        marginals[p, order[k:k + len(ks)]] = drop
                        previous, k = vals[-1:], k + len(ks)
                    if ctx.progress is not None:
                        ctx.progress(p + 1, perms)
        mean = marginals.mean(dim=0)
        if perms > 1:
            err = marginals[:, :, 0].std(dim=0) / math.sqrt(perms)
        else:
            err = torch.full((m,), float("nan"), dtype=torch.float64)
        overall, per_class, errors = {}, {}, {}
        for name, size in gates.sizes.items():
            sl = slice(gates.offsets[name], gates.offsets[name] + size)
            overall[name] = mean[sl, 0].float()
            pc = mean[sl, 1:].T.contiguous()
            pc[counts == 0] = float("nan")
            per_class[name] = pc.float()
            errors[name] = err[sl].float()
        return _ShapleyResult(overall, per_class, errors)

    def weight_scores(self, ctx: ScoringContext) -> dict[str, torch.Tensor]:
        raise ConfigError.bad_value("Study.score('shapley')", "granularity",
                                    "'channel' (Shapley values are computed for units)", "weight")
