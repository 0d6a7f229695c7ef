"""Conductance criterion: how much of the Integrated-Gradients attribution flows through a unit."""

from __future__ import annotations

import torch
from torch import nn

from ..core.errors import ConfigError, MissingDependencyError
from ..models.mechanisms.model_tools import eval_mode
from ._hooks import _Given
from ._relevance import UnitAccumulator, UnitRelevanceMixin, unit_sums
from .base import Criterion, ScoringContext

__all__ = ["ConductanceCriterion"]


def _layer_conductance():
    try:
        from captum.attr import LayerConductance
    except ImportError as exc:
        raise MissingDependencyError.for_package(
            "captum", "The 'conductance' criterion", "explain") from exc
    return LayerConductance


class ConductanceCriterion(UnitRelevanceMixin, Criterion):
    """Conductance of each hidden unit for the true class, averaged over the reference set.

    Integrated Gradients attributes ``f(x) - f(baseline)`` to the input features along the
    straight path from the baseline (zeros) to ``x``; the conductance of a hidden unit is the
    part of that attribution that flows through the unit (Dhamdhere et al. 2018). The
    conductances of all units of a layer that every path crosses add up to
    ``f(x) - f(baseline)``. A conv channel's conductance is summed over positions. Computed with
    captum's ``LayerConductance``, one layer at a time, with captum's defaults (zero baseline,
    50 Gauss-Legendre steps).

    Options
    -------
    steps : int, default 50
        Integration steps (``n_steps`` in captum).
    signed : bool, default False
        Average signed conductance instead of its absolute value.

    Cost: ``steps`` forward+backward passes per batch and per scored layer (captum hooks one
    layer at a time), e.g. 4 layers x 50 steps = 200 forward+backward equivalents per batch.

    For ``weight`` granularity, Integrated Gradients in weight space (see
    :meth:`weight_scores`): ``steps`` forward+backward passes per batch for all layers at once.

    References
    ----------
    Dhamdhere, Sundararajan, Yan. How Important Is a Neuron? arXiv:1805.12233, 2018 (ICLR 2019).
    Sundararajan, Taly, Yan. Axiomatic Attribution for Deep Networks. ICML 2017.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from xprune_nb.criteria import create, ScoringContext
    >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    >>> ctx = ScoringContext(net, "channel", {"0": net[0]}, torch.randn(6, 4),
    ...                      torch.tensor([0, 1, 2, 0, 1, 2]), None, 3, lambda m, x: m(x))
    >>> create("conductance", steps=20).score(ctx)["0"].shape
    torch.Size([8])
    """

    name = "conductance"
    granularities = ("channel", "weight")
    options = {"steps": 50, "signed": False}
    choices = {"signed": (False, True)}
    class_aware = True
    reference = "Dhamdhere et al., How Important Is a Neuron?, ICLR 2019 (arXiv 2018)"

    def __init__(self, **options) -> None:
        super().__init__(**options)
        steps = self.params["steps"]
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 2:
            raise ConfigError.bad_value("Study.score('conductance')", "steps",
                                        "an integer >= 2", steps)

    def _accumulate(self, ctx: ScoringContext) -> UnitAccumulator:
        layer_conductance = _layer_conductance()
        acc = UnitAccumulator(ctx.num_classes, signed=bool(self.params["signed"]))

        def forward(x: torch.Tensor) -> torch.Tensor:
            return ctx.forward(ctx.model, x)

        methods = {name: layer_conductance(forward, layer) for name, layer in ctx.layers.items()}
        with eval_mode(ctx.model):
            for x, y in ctx.batches():
                for name, method in methods.items():
                    cond = method.attribute(x, target=y, n_steps=self.params["steps"])
                    is_conv = isinstance(ctx.layers[name], nn.modules.conv._ConvNd)
                    acc.add(name, unit_sums(cond.detach(), is_conv), y)
                acc.count(y)
        return acc

    def score(self, ctx: ScoringContext) -> dict[str, torch.Tensor]:
        if not ctx.inputs.is_floating_point():
            raise ConfigError(
                "Study.score('conductance'): conductance integrates along a path from a zero "
                f"baseline input, which needs floating-point inputs; these are {ctx.inputs.dtype}"
                " (e.g. token ids). Use 'lrp', 'taylor' or 'gradient' instead."
            )
        return super().score(ctx)

    def weight_scores(self, ctx: ScoringContext) -> dict[str, torch.Tensor]:
        """Integrated Gradients in weight space: each weight's share of ``f(w) - f(0)``.

        The scored layers' weights are scaled together from zero to their values; a weight's
        attribution is ``w * mean over the path of d f_target / d w`` (Sundararajan et al.'s
        IG with the weights as the input, the parameter-space analogue of conductance). The
        attribution is summed over the reference set (per class target), then its absolute
        value is taken (``signed=True`` keeps the sign).
        """
        from torch.func import functional_call

        steps = self.params["steps"]
        # midpoint Riemann sum over the path alpha in (0, 1)
        alphas = [(i + 0.5) / steps for i in range(steps)]
        names = {}
        for layer_name, layer in ctx.layers.items():
            param = "weight_orig" if hasattr(layer, "weight_orig") else "weight"
            names[layer_name] = f"{layer_name}.{param}" if layer_name else param
        params = dict(ctx.model.named_parameters())
        base = {layer: params[full].detach() for layer, full in names.items()}
        totals = {layer: torch.zeros_like(w, dtype=torch.float64) for layer, w in base.items()}
        with eval_mode(ctx.model):
            for x, y in ctx.batches():
                for alpha in alphas:
                    scaled = {layer: (alpha * w).requires_grad_(True) for layer, w in base.items()}
                    override = {names[layer]: t for layer, t in scaled.items()}
                    out = functional_call(ctx.model, override, (x,))
                    logits = ctx.forward(_Given(out), x) if not torch.is_tensor(out) else out
                    picked = logits.gather(1, y[:, None]).sum()
                    grads = torch.autograd.grad(picked, list(scaled.values()))
                    for layer, g in zip(scaled, grads, strict=True):
                        totals[layer] += g.double()
        out = {}
        for layer_name, layer in ctx.layers.items():
            w = layer.weight.detach().double()          # effective (masked) weight
            attr = w * totals[layer_name] / steps
            out[layer_name] = (attr if self.params["signed"] else attr.abs()).float()
        return out
