"""Layer-wise relevance propagation through zennit, imported lazily.

Why zennit and not captum's LRP: captum's ``LRP`` needs a rule on every module, raises on
``nn.Flatten`` ("no rule defined"), and a failed call leaves ``rule=None`` attributes on the
model's ReLUs so later calls fail too. zennit, written by the LRP authors, implements rules as
modified gradients: modules without a rule (``Flatten``, reshapes, ``MaxPool``, concatenation)
simply route relevance as the gradient does, which conserves it; canonizers merge BatchNorm into
the preceding convolution, as LRP requires. Residual additions written as ``a + b`` in a user's
``forward`` have no module to attach a rule to; :func:`_proportional_adds` intercepts them while
the forward runs and splits relevance in proportion to each summand (the LRP rule for a sum),
so relevance is conserved through the user's own residual models too.

Installing zennit: ``pip install --no-deps zennit==0.5.1``. The ``--no-deps`` matters: zennit
declares torchvision as a dependency, and no CPU torchvision build exists for torch 2.13, so a
plain ``pip install zennit`` fails or replaces torch. zennit only needs torchvision for its
ResNet canonizers, which xprune_nb does not use; :func:`import_zennit` lets zennit's top-level
``import zennit.torchvision`` succeed with a temporary stand-in when torchvision cannot be
imported, and removes the stand-in again straight away.

Everything here runs on a private copy of the model (:func:`detached_copy`), so the user's model
never carries a hook, a rule, a merged BatchNorm or a changed ``requires_grad`` flag, even when
a call fails half-way.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
import types
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from ...core.errors import ConfigError, MissingDependencyError
from .copies import detached_copy

__all__ = [
    "INSTALL_HINT",
    "RULES",
    "import_zennit",
    "detached_copy",
    "LRPRunner",
    "LRPResult",
]

INSTALL_HINT = "pip install --no-deps zennit==0.5.1"

#: LRP rules for Linear/Conv layers, by the name users type.
RULES = ("epsilon", "zplus", "alphabeta", "gamma")

_STUB_NAMES = ("torchvision", "torchvision.models", "torchvision.models.resnet")


def _torchvision_usable() -> bool:
    """Whether a real torchvision imports here; a broken one is cleaned out of sys.modules."""
    if importlib.util.find_spec("torchvision") is None:
        return False
    before = set(sys.modules)
    try:
        importlib.import_module("torchvision.models.resnet")
        return True
    except Exception:  # noqa: BLE001 - a broken build raises RuntimeError, not ImportError
        for name in set(sys.modules) - before:
            if name == "torchvision" or name.startswith("torchvision."):
                del sys.modules[name]
        return False


def _torchvision_stubs() -> dict[str, types.ModuleType]:
    """Stand-ins for the three torchvision modules ``zennit.torchvision`` imports from."""
    resnet = types.ModuleType("torchvision.models.resnet")

    class BasicBlock(nn.Module):  # never instantiated: zennit only uses it in isinstance checks
        pass

    class Bottleneck(nn.Module):
        pass

    resnet.BasicBlock, resnet.Bottleneck = BasicBlock, Bottleneck
    models = types.ModuleType("torchvision.models")
    models.resnet = resnet
    root = types.ModuleType("torchvision")
    root.models = models
    return {"torchvision": root, "torchvision.models": models, "torchvision.models.resnet": resnet}


def import_zennit(feature: str = "LRP") -> types.ModuleType:
    """Import zennit (with its submodules) or raise :class:`MissingDependencyError`.

    Examples
    --------
    >>> zennit = import_zennit()
    >>> zennit.rules.Epsilon.__name__
    'Epsilon'
    >>> "torchvision" in sys.modules   # the stand-in does not outlive the import
    False
    """
    loaded = sys.modules.get("zennit")
    if loaded is not None and hasattr(loaded, "composites"):
        return loaded
    if importlib.util.find_spec("zennit") is None:
        raise MissingDependencyError(
            f"{feature} needs the optional package 'zennit', which is not installed. "
            f"Install it with: {INSTALL_HINT} (--no-deps: zennit's torchvision dependency "
            "has no CPU build for this torch)."
        )
    stubs: dict[str, types.ModuleType] = {}
    if not _torchvision_usable():
        stubs = {k: v for k, v in _torchvision_stubs().items() if k not in sys.modules}
        sys.modules.update(stubs)
    try:
        zennit = importlib.import_module("zennit")
        for sub in ("canonizers", "composites", "core", "rules", "types"):
            importlib.import_module(f"zennit.{sub}")
    finally:
        for name, stub in stubs.items():
            if sys.modules.get(name) is stub:
                del sys.modules[name]
    return zennit


class _ProportionalAdd(torch.autograd.Function):
    """``a + b`` whose backward splits the incoming relevance in proportion to ``a`` and ``b``."""

    @staticmethod
    def forward(ctx, a, b, epsilon):  # noqa: D102 - autograd protocol
        ctx.save_for_backward(a, b)
        ctx.epsilon = epsilon
        return a + b

    @staticmethod
    def backward(ctx, relevance):  # noqa: D102
        a, b = ctx.saved_tensors
        z = a + b
        # zennit's stabiliser: push the denominator away from zero, keeping its sign
        z = z + ((z == 0).to(z) + z.sign()) * ctx.epsilon
        share = relevance / z
        ga = (a * share).sum_to_size(a.shape) if ctx.needs_input_grad[0] else None
        gb = (b * share).sum_to_size(b.shape) if ctx.needs_input_grad[1] else None
        return ga, gb, None


class _AddInterceptor(torch.overrides.TorchFunctionMode):
    _ADDS = (torch.add, torch.Tensor.add, torch.Tensor.__add__, torch.Tensor.__radd__,
             torch.Tensor.__iadd__)

    def __init__(self, epsilon: float) -> None:
        super().__init__()
        self.epsilon = epsilon

    def __torch_function__(self, func, types_, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self._ADDS and len(args) == 2 and not kwargs:
            a, b = args
            if (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)
                    and a.is_floating_point() and b.is_floating_point()
                    and (a.requires_grad or b.requires_grad)):
                # __iadd__ rebinds the name to the returned tensor, so out-of-place is safe
                return _ProportionalAdd.apply(a, b, self.epsilon)
        return func(*args, **kwargs)


@contextlib.contextmanager
def _proportional_adds(epsilon: float) -> Iterator[None]:
    """Route every tensor + tensor addition of the forward through :class:`_ProportionalAdd`."""
    with _AddInterceptor(epsilon):
        yield


def make_rule(rule: str, *, epsilon: float = 1e-6, gamma: float = 0.25, alpha: float = 2.0,
              call: str = "LRP"):
    """The zennit hook for ``rule`` (one of :data:`RULES`) on Linear/Conv layers."""
    zennit = import_zennit()
    r = zennit.rules
    if rule == "epsilon":
        return r.Epsilon(epsilon=epsilon)
    if rule == "zplus":
        return r.ZPlus(stabilizer=epsilon)
    if rule == "alphabeta":
        return r.AlphaBeta(alpha=alpha, beta=alpha - 1.0, stabilizer=epsilon)
    if rule == "gamma":
        return r.Gamma(gamma=gamma, stabilizer=epsilon)
    raise ConfigError.unknown_name(call, "rule", RULES, rule)


def make_composite(rule_hook, epsilon: float):
    """Rules for every module type: ``rule_hook`` on Linear/Conv, pass-through on elementwise
    activations, proportional split on average pooling, and BatchNorm merged into the layer
    before it (an unmerged BatchNorm is an affine map and gets the epsilon rule)."""
    zennit = import_zennit()
    zt, zr = zennit.types, zennit.rules
    elementwise = tuple(t for t in zt.Activation.__subclass__ if t is not nn.MultiheadAttention)
    layer_map = [
        (elementwise, zr.Pass()),
        (zt.AvgPool, zr.Norm(stabilizer=epsilon)),
        (zt.BatchNorm, zr.Epsilon(epsilon=epsilon)),
        (zt.Linear, rule_hook),
    ]
    return zennit.composites.LayerMapComposite(
        layer_map=layer_map, canonizers=[zennit.canonizers.SequentialMergeBatchNorm()])


@dataclass
class LRPResult:
    """What one LRP pass returns (all tensors detached)."""

    logits: torch.Tensor
    input_relevance: torch.Tensor | None
    #: relevance at each requested layer's output, one tensor per call of the layer
    layer_relevance: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    #: per-weight relevance of each requested layer, summed over the batch (weights only)
    weight_relevance: dict[str, torch.Tensor] = field(default_factory=dict)


def _weight_relevance(rule_hook, module: nn.Module, inputs: torch.Tensor,
                      relevance: torch.Tensor) -> torch.Tensor:
    """Relevance of each weight of ``module`` under ``rule_hook``, summed over the batch.

    zennit's rules compute input relevance as ``reducer(inputs_k, grad_k)`` where ``grad_k``
    is the modified gradient w.r.t. the k-th modified input. The same contributions written per
    connection are ``reducer(weight_k, grad w.r.t. weight_k)``: the reducers are linear in each
    product, so one formula serves every rule (Yeom et al. 2021, eq. 9, for the epsilon rule).
    """
    zennit = import_zennit()
    outputs, weights = [], []
    for in_mod, param_mod, out_mod in zip(rule_hook.input_modifiers, rule_hook.param_modifiers,
                                          rule_hook.output_modifiers):
        modified_input = in_mod(inputs)
        with zennit.core.ParamMod.ensure(param_mod)(module) as modified, torch.enable_grad():
            weight = modified.weight
            if not weight.requires_grad:
                weight.requires_grad_(True)
            outputs.append(out_mod(modified.forward(modified_input)))
            weights.append(weight)
    grad_outputs = rule_hook.gradient_mapper(relevance, outputs)
    grads = torch.autograd.grad(outputs, weights, grad_outputs=grad_outputs, allow_unused=True)
    grads = [torch.zeros_like(w) if g is None else g for w, g in zip(weights, grads)]
    return rule_hook.reducer([w.detach() for w in weights], grads).detach()


class LRPRunner:
    """Run LRP on a private copy of ``model``; the model itself is never touched.

    Parameters
    ----------
    model : nn.Module
    forward : callable
        ``forward(model, x) -> logits``.
    rule : {"epsilon", "zplus", "alphabeta", "gamma"}
        Rule for every Linear/Conv layer.
    epsilon, gamma, alpha : float
        Stabiliser (and epsilon of the epsilon rule), gamma of the gamma rule, alpha of
        alpha-beta (beta = alpha - 1, so relevance is conserved).

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> _ = torch.manual_seed(2)
    >>> net = nn.Sequential(nn.Linear(3, 4, bias=False), nn.ReLU(), nn.Linear(4, 2, bias=False))
    >>> runner = LRPRunner(net, lambda m, x: m(x))
    >>> out = runner.run(torch.ones(1, 3), torch.tensor([0]), input_relevance=True)
    >>> round(out.input_relevance.sum().item(), 4), round(out.logits[0, 0].item(), 4)
    (0.1281, 0.1281)
    """

    def __init__(self, model: nn.Module,
                 forward: Callable[[nn.Module, torch.Tensor], torch.Tensor], *,
                 rule: str = "epsilon", epsilon: float = 1e-6, gamma: float = 0.25,
                 alpha: float = 2.0, call: str = "LRP") -> None:
        self.rule_hook = make_rule(rule, epsilon=epsilon, gamma=gamma, alpha=alpha, call=call)
        self.composite = make_composite(self.rule_hook, epsilon)
        self.epsilon = epsilon
        self.forward = forward
        self.model = detached_copy(model)
        self.modules = dict(self.model.named_modules())
        self._registered = False

    @contextlib.contextmanager
    def registered(self) -> Iterator[LRPRunner]:
        """Keep the rules registered across several :meth:`run` calls (one batch each), which
        saves registering zennit's hooks and merging BatchNorm again for every batch."""
        with self.composite.context(self.model):
            self._registered = True
            try:
                yield self
            finally:
                self._registered = False

    def relevance_at(self, x: torch.Tensor, targets: torch.Tensor,
                     tensors: Callable[[], list[torch.Tensor]]) -> list[torch.Tensor]:
        """Relevance of the target logits at intermediate tensors captured during the forward
        (``tensors()`` returns them once the forward has run, e.g. from forward hooks)."""
        float_input = x.is_floating_point()
        for p in self.model.parameters():
            p.requires_grad_(not float_input)
        x = x.detach().clone().requires_grad_(float_input)
        rules = (contextlib.nullcontext() if self._registered
                 else self.composite.context(self.model))
        with rules, torch.enable_grad():
            with _proportional_adds(self.epsilon):
                logits = self.forward(self.model, x)
            start = torch.zeros_like(logits)
            idx = targets.reshape(-1, 1).to(logits.device)
            start.scatter_(1, idx, logits.detach().gather(1, idx))
            wanted = tensors()
            grads = torch.autograd.grad(logits, wanted, grad_outputs=start, allow_unused=True)
        return [torch.zeros_like(t) if g is None else g.detach() for t, g in zip(wanted, grads)]

    def run(self, x: torch.Tensor, targets: torch.Tensor, *, layers: Sequence[str] = (),
            input_relevance: bool = False, weights: bool = False) -> LRPResult:
        """One LRP pass on a batch, starting from the target logit of each example.

        Relevance at the output is ``logit[target]`` for the target class and zero elsewhere
        (the usual LRP start; Yeom et al. 2021 start the same way).
        """
        float_input = x.is_floating_point()
        for p in self.model.parameters():
            # with a float input all relevance flows from it; integer inputs (token ids) need
            # the parameters to carry the graph instead
            p.requires_grad_(not float_input)
        x = x.detach().clone()
        if float_input:
            x.requires_grad_(True)
        captured: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {n: [] for n in layers}
        handles = []
        for name in layers:
            def hook(module, inputs, output, name=name):
                if isinstance(output, torch.Tensor) and output.requires_grad:
                    captured[name].append((inputs[0], output))
            handles.append(self.modules[name].register_forward_hook(hook))
        rules = (contextlib.nullcontext() if self._registered
                 else self.composite.context(self.model))
        try:
            with rules, torch.enable_grad():
                with _proportional_adds(self.epsilon):
                    logits = self.forward(self.model, x)
                start = torch.zeros_like(logits)
                idx = targets.reshape(-1, 1).to(logits.device)
                start.scatter_(1, idx, logits.detach().gather(1, idx))
                wanted = [out for pairs in captured.values() for _, out in pairs]
                if input_relevance and float_input:
                    wanted = [x] + wanted
                grads = torch.autograd.grad(logits, wanted, grad_outputs=start,
                                            allow_unused=True) if wanted else []
                grads = [torch.zeros_like(t) if g is None else g.detach()
                         for t, g in zip(wanted, grads)]
                result = LRPResult(logits=logits.detach(), input_relevance=None)
                if input_relevance and float_input:
                    result.input_relevance = grads.pop(0)
                for name, pairs in captured.items():
                    rel = [grads.pop(0) for _ in pairs]
                    result.layer_relevance[name] = rel
                    if weights and pairs:
                        result.weight_relevance[name] = sum(
                            _weight_relevance(self.rule_hook, self.modules[name],
                                              inp.detach(), r)
                            for (inp, _), r in zip(pairs, rel))
        finally:
            for h in handles:
                h.remove()
            captured.clear()
        return result
