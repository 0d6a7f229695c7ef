"""Prunable groups: which units can be removed together without breaking the model.

Channel groups come from torch-pruning's dependency graph: removing output channel ``i`` of a
convolution also removes input channel ``i`` of the next layer, the matching BatchNorm entries,
and — through residual additions and concatenations — the coupled channels of other layers.
A group is named after its root layer (the Conv/Linear layer whose outputs it removes).

Some groups cannot shrink one unit at a time (attention projections, whose width must stay a
multiple of the number of heads; layers whose width is hard-coded in a ``view``). Rather than
guess from module types, :func:`safe_channel_groups` removes one channel from each candidate group
on a copy of the model and keeps the groups after which the model still runs and returns logits
of the same shape. For a big model the copy is a meta copy (shapes without data: no weights
copied, no arithmetic) whenever the model runs on the meta device with its real logits' shape;
otherwise a deep copy run for real.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from ..core.errors import ModelError
from ..models.mechanisms.copies import meta_copy
from ..models.mechanisms.model_tools import (
    PRUNABLE_TYPES,
    call_model,
    eval_mode,
    prunable_layers,
    tied_parameters,
    trace_output,
)

__all__ = [
    "ChannelGroup",
    "build_graph",
    "channel_groups",
    "safe_channel_groups",
    "apply_channel_plan",
]


@dataclass(frozen=True)
class ChannelGroup:
    """Coupled output channels, named by the root layer; ``layers`` lists every layer whose
    output channels the group removes (several for residual additions)."""

    key: str
    layers: tuple[str, ...]
    size: int
    #: per member layer: (name, its own channel indices, the matching root indices); these
    #: differ behind concatenations, where a layer holds only part of the group's channels
    mapping: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...] = ()

    def combine(self, per_layer: dict[str, torch.Tensor]) -> torch.Tensor:
        """One score per group channel: the mean of the member layers' scores for it.

        ``per_layer`` maps layer names to tensors whose dimension 0 (or last, for (classes,
        units) tensors) indexes that layer's output units.
        """
        total = count = None
        for name, local, root in self.mapping:
            if name not in per_layer:
                continue
            v = per_layer[name].double()
            if total is None:
                total = torch.zeros(*v.shape[:-1], self.size, dtype=torch.float64)
                count = torch.zeros(self.size, dtype=torch.float64)
            total[..., list(root)] += v[..., list(local)]
            count[list(root)] += 1
        if total is None:
            raise KeyError(self.key)
        return (total / count.clamp(min=1)).float()


def _forward_fn(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    return call_model(model, inputs)


def _drop(tensor: torch.Tensor) -> None:
    return None


def _never(packed: None) -> torch.Tensor:
    raise RuntimeError("xprune_nb: a dependency-graph trace keeps no tensors for a backward "
                       "pass")


def build_graph(model: nn.Module, example: torch.Tensor, forward=None) -> tp.DependencyGraph:
    """Trace ``model`` on ``example`` into a torch-pruning dependency graph (in eval mode).

    ``forward(model, x) -> logits`` (the study's, with its ``output_fn``) tells which output
    to trace back from; without it, the logits :func:`trace_output` finds are used.
    """
    if forward is not None:
        def fn(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
            return forward(m, x)

        transform = None
    else:
        fn, transform = _forward_fn, trace_output
    # the trace is read for its structure (and the sizes and dims autograd records), never
    # run backward: the tensors autograd would save for a backward pass are not kept, so the
    # graph does not pin a forward pass's activations (hundreds of MB on a ResNet-50) for as
    # long as it lives, e.g. in the scores that a later prune reuses
    with eval_mode(model), torch.autograd.graph.saved_tensors_hooks(_drop, _never):
        try:
            return tp.DependencyGraph().build_dependency(
                model, example_inputs=example, forward_fn=fn, output_transform=transform,
                verbose=False,
            )
        except (TypeError, ValueError, KeyError, IndexError, AttributeError) as exc:
            # torch-pruning's tracer fails inside its index bookkeeping on graphs it does not
            # model (e.g. GPT-2's Conv1D projections split by a concatenation); a raw TypeError
            # from deep inside it tells the user nothing about what to do instead.
            raise ModelError(
                "granularity='channel': torch-pruning cannot trace the channel dependencies "
                f"of this model ({type(exc).__name__}: {exc}); use another unit kind "
                "(study.prunable() lists those this model offers, e.g. 'weight', 'head' or "
                "'block')") from exc


def channel_groups(model: nn.Module, graph: tp.DependencyGraph,
                   ignored: Iterable[str] = ()) -> list[ChannelGroup]:
    """Every channel group of ``model`` whose root is a Conv/Linear layer not in ``ignored``."""
    modules = dict(model.named_modules())
    names = {m: n for n, m in modules.items()}
    ignored_modules = [modules[n] for n in ignored if n in modules]
    groups = []
    for group in graph.get_all_groups(ignored_layers=ignored_modules,
                                      root_module_types=PRUNABLE_TYPES):
        root = group[0].dep.target.module
        members, mapping = [], []
        for item in group:
            dep, module = item.dep, item.dep.target.module
            if (isinstance(module, PRUNABLE_TYPES) and graph.is_out_channel_pruning_fn(dep.handler)
                    and module in names and names[module] not in members):
                members.append(names[module])
                root_idxs = getattr(item, "root_idxs", None) or list(item.idxs)
                mapping.append((names[module], tuple(int(i) for i in item.idxs),
                                tuple(int(i) for i in root_idxs)))
        if root not in names:
            continue
        key = names[root]
        if key not in members:
            members.insert(0, key)
        size = graph.get_pruner_of_module(root).get_out_channels(root)
        groups.append(ChannelGroup(key=key, layers=tuple(members), size=int(size),
                                   mapping=tuple(mapping)))
    order = {name: i for i, name in enumerate(modules)}
    return sorted(groups, key=lambda g: order[g.key])


def _logits(model: nn.Module, x: torch.Tensor, forward) -> torch.Tensor:
    return forward(model, x) if forward is not None else trace_output(call_model(model, x))


def _runs_like(model: nn.Module, example: torch.Tensor, shape: torch.Size, forward=None) -> bool:
    """Whether ``model`` runs on ``example`` and gives the logits' shape the original gives on
    it (``shape``). One pass at the example's own batch, at which the original ran: a width
    hard-coded in a reshape (``view(-1, C)``) fails at this batch whenever it would at a larger
    one, and a wrong number of rows is caught by the shape. On the meta device the checks its
    convolution kernel leaves out are made (:class:`_StrictConvolution`)."""
    meta = any(p.device.type == "meta" for p in model.parameters())
    try:
        with torch.no_grad(), eval_mode(model), (_StrictConvolution() if meta
                                                 else contextlib.nullcontext()):
            out = _logits(model, example, forward)
    except Exception:  # noqa: BLE001 - any failure means the group is not safe to shrink
        return False
    return out.shape == shape


def _on_meta(x):
    """``x`` (a tensor or a mapping of tensors) on the meta device; a mapping as a plain dict,
    whose tensors the study's forward then leaves where they are."""
    if isinstance(x, torch.Tensor):
        return x.detach().to("meta")
    return {k: _on_meta(v) if isinstance(v, torch.Tensor) else v for k, v in x.items()}


class _StrictConvolution(TorchDispatchMode):
    """Checks the meta kernel of ``aten.convolution`` leaves out (the CPU and CUDA kernels
    raise): a weight whose output channels do not divide into the groups, a bias of the wrong
    size. Without them a grouped or depthwise convolution that lost one channel would run on
    the meta device and break for real."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten.convolution.default:
            _, weight, bias, *_, transposed, _, groups = args
            out = weight.shape[1] * groups if transposed else weight.shape[0]
            if weight.shape[0] % groups or (bias is not None and bias.shape[0] != out):
                raise RuntimeError(f"convolution: weight {tuple(weight.shape)}, bias "
                                   f"{None if bias is None else tuple(bias.shape)}, "
                                   f"groups={groups}")
        return func(*args, **(kwargs or {}))


#: Parameters from which the safety trial runs on a meta copy. Meta kernels are largely Python,
#: so a meta trial costs 20-260 ms whatever the model's size, where a real one costs a copy of
#: the weights and two forward passes: 5-75 ms for the zoo's models (below 0.3 M parameters),
#: 0.7 s for a ResNet-50 (23.5 M) and 2 s for a ViT-B/16 (86 M) on one CPU thread.
SHAPE_ONLY_PARAMS = 2_000_000


def _shape_only_example(model: nn.Module, example, shape: torch.Size, forward=None):
    """``example`` on the meta device when ``model`` is big enough for a meta trial to pay
    (:data:`SHAPE_ONLY_PARAMS`) and a meta copy of it (shapes without data) runs on it and
    gives the logits' shape the model gives for real; else ``None``.

    Then a trial on a meta copy decides as a real one would: the ops are the same, only
    shapes are computed, and a pruned copy that fails there fails on its shapes. A model that
    reads values in its forward (``.item()``, data-dependent branches), mixes in tensors it
    does not hold as attributes, or uses an op without a meta kernel fails this check and is
    tried for real.
    """
    if sum(p.numel() for p in model.parameters()) < SHAPE_ONLY_PARAMS:
        return None
    try:
        shell, meta_x = meta_copy(model), _on_meta(example)
    except Exception:  # noqa: BLE001 - cannot be copied or moved: tried for real
        return None
    return meta_x if _runs_like(shell, meta_x, shape, forward) else None


def _trial(model: nn.Module, example: torch.Tensor, keys: list[str], shape: torch.Size,
           forward=None, meta_example=None) -> bool:
    """Whether removing channel 0 of each group in ``keys`` leaves a model that runs with the
    same logits' shape; on a meta copy (no weights copied, no arithmetic) when
    ``meta_example`` is given (:func:`_shape_only_example`), else on a deep copy."""
    shape_only = meta_example is not None
    trial = meta_copy(model) if shape_only else copy.deepcopy(model)
    x = meta_example if shape_only else example
    try:
        apply_channel_plan(trial, x, {k: [0] for k in keys}, forward=forward)
    except Exception:  # noqa: BLE001 - torch-pruning refuses: not safe
        return False
    # tied weights (dec.weight = enc.weight) must stay one tensor: torch-pruning replaces the
    # parameters it shrinks, which would silently untie them
    return (_runs_like(trial, x, shape, forward)
            and tied_parameters(trial) == tied_parameters(model))


#: why a group of attention projections is not offered for channel pruning
HEAD_BOUND = ("its channels are split into attention heads (removing one breaks the heads' "
              "reshape); remove whole heads instead: granularity='head'")


def safe_channel_groups(
    model: nn.Module, example: torch.Tensor, ignored: Iterable[str] = (),
    graph: tp.DependencyGraph | None = None,
    forward: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None,
    shape: torch.Size | None = None, head_layers: Iterable[str] | Mapping[str, int] = (),
) -> tuple[list[ChannelGroup], dict[str, str]]:
    """Channel groups that can lose one unit and leave a model that still runs.

    Returns the safe groups and, for every other Conv/Linear layer, why it is not prunable.
    One trial removes a channel from all groups at once; only when that fails is each group
    tried alone, so plain CNNs pay for a single trial. ``graph``, if given, is ``model``'s
    dependency graph (saves building it again).

    ``head_layers`` names the q/k/v projections of the model's attention heads (a mapping also
    gives the number of heads each one's rows are split into). A group holding a projection
    split into two or more heads is bound to heads (:data:`HEAD_BOUND`) without a trial: a
    width of ``heads * head_dim - 1`` cannot be split into equal heads. The groups holding only
    single-head projections are tried together, apart from the others, and reported as bound
    to heads when that trial fails, instead of being tried one by one. A ViT-B's channels
    (25 groups, 12 of them attention projections) thus cost one trial instead of 26.

    Each trial of a model of :data:`SHAPE_ONLY_PARAMS` parameters or more runs on a meta copy
    (:func:`_shape_only_example`: shapes without data, so no copy of the weights and no
    arithmetic) when the model runs on the meta device with its real logits' shape, with the
    convolution checks the meta kernel leaves out added (:class:`_StrictConvolution`);
    otherwise on a deep copy, run for real. Both give the same verdicts (tested on the test
    architectures, Hugging Face ViT, BERT and ResNet, grouped and depthwise convolutions, tied
    weights and hard-coded widths).
    """
    ignored = list(ignored)
    if shape is None:   # the logits' shape on ``example`` (a study knows it: no forward)
        with torch.no_grad(), eval_mode(model):
            shape = _logits(model, example, forward).shape
    graph = graph or build_graph(model, example, forward)
    candidates = channel_groups(model, graph, ignored)
    skipped: dict[str, str] = {n: "ignored (output layer or user choice)" for n in ignored}
    sizable = []
    for g in candidates:
        if g.size < 2:
            skipped[g.key] = "has a single unit"
        else:
            sizable.append(g)
    heads = dict(head_layers) if isinstance(head_layers, Mapping) else dict.fromkeys(
        head_layers, 1)   # names alone: the number of heads is unknown, so it is tried
    split = {g.key for g in sizable if any(heads.get(n, 1) >= 2 for n in g.layers)}
    skipped.update(dict.fromkeys(split, HEAD_BOUND))
    bound = [g for g in sizable if heads.keys() & set(g.layers) and g.key not in split]
    free = [g for g in sizable if not heads.keys() & set(g.layers)]
    meta_x = _shape_only_example(model, example, shape, forward) if free or bound else None
    if free and _trial(model, example, [g.key for g in free], shape, forward, meta_x):
        safe = list(free)
    else:
        safe = []
        for g in free:
            if _trial(model, example, [g.key], shape, forward, meta_x):
                safe.append(g)
            else:
                skipped[g.key] = _why_unsafe(model, example, g.key)
    if bound and _trial(model, example, [g.key for g in bound], shape, forward, meta_x):
        safe += bound
    else:
        skipped.update({g.key: HEAD_BOUND for g in bound})
    order = {g.key: i for i, g in enumerate(sizable)}
    safe.sort(key=lambda g: order[g.key])
    covered = {name for g in safe for name in g.layers} | set(skipped)
    for name in prunable_layers(model):
        if name not in covered:
            skipped[name] = "its outputs are tied to a layer that cannot be pruned"
    return safe, skipped


def apply_channel_plan(model: nn.Module, example: torch.Tensor,
                       plan: dict[str, list[int]],
                       graph: tp.DependencyGraph | None = None, forward=None) -> None:
    """Remove, in place, the output channels ``plan[root]`` of each group (and what depends on
    them). Indices refer to the model as it is before this call."""
    plan = {k: sorted(int(i) for i in v) for k, v in plan.items() if len(v)}
    if not plan:
        return
    masked = _bake_masks(model)
    graph = graph or build_graph(model, example, forward)
    modules = dict(model.named_modules())
    # Each group is built right before it is pruned: a root's own channel indices do not move
    # when another group is pruned, but coupled indices (e.g. behind a concatenation) do.
    for key, idxs in plan.items():
        module = modules[key]
        pruner = graph.get_pruner_of_module(module)
        graph.get_pruning_group(module, pruner.prune_out_channels, idxs).prune()
    _restore_masks(model, masked)


def _bake_masks(model: nn.Module) -> list[tuple[str, str]]:
    """Make torch.nn.utils.prune masks permanent so torch-pruning sees plain parameters."""
    from torch.nn.utils import prune

    from ..models.mechanisms.masks import masked_params

    masked = []
    for name, module in model.named_modules():
        for param in masked_params(module):
            prune.remove(module, param)
            masked.append((name, param))
    return masked


def _restore_masks(model: nn.Module, masked: list[tuple[str, str]]) -> None:
    """Re-mask what was masked: the zeros baked in before are the mask."""
    from torch.nn.utils import prune

    modules = dict(model.named_modules())
    for name, param in masked:
        module = modules[name]
        prune.custom_from_mask(module, param, getattr(module, param).detach() != 0)


def _why_unsafe(model: nn.Module, example: torch.Tensor, key: str) -> str:
    ties = tied_parameters(model)
    if ties:
        trial = copy.deepcopy(model)
        try:
            apply_channel_plan(trial, example, {key: [0]})
        except Exception:  # noqa: BLE001 - refused outright: the generic reason below
            trial = None
        if trial is not None and tied_parameters(trial) != ties:
            layers = sorted({n.rpartition(".")[0] for group in ties for n in group})
            return ("removing a unit would untie the weights shared by "
                    + " and ".join(repr(n) for n in layers) + " (tied weights)")
    return ("removing a unit breaks the model (e.g. attention heads or a hard-coded "
            "reshape)")
