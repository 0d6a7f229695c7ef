"""Deployment copies of a pruned model: weight masks baked in, BatchNorm folded into the layer
before it.

At inference a BatchNorm is an affine map per channel, ``y = gamma * (x - mean) / sqrt(var +
eps) + beta``; when it directly follows a convolution or a linear layer, that map can be
multiplied into the layer's weight and bias, and the BatchNorm disappears. For a
channel-pruned model this matters more than for a dense one: removing half the channels cuts
a convolution's MACs by four but a BatchNorm's (memory-bound) work only by two, so the
BatchNorms take a larger share of the time (see docs/benchmarks.md).

Which BatchNorm directly follows which layer is read from the model's graph, traced with
:func:`torch.fx.symbolic_trace`: a pair is folded only when the layer's output goes to the
BatchNorm and nowhere else, and each of them is called once. When the model cannot be traced
(e.g. Python control flow on tensor values), the documented fallback folds only pairs that
sit next to each other inside an ``nn.Sequential``, where that is true by construction. The
folded copy keeps the model's class and forward: the folded BatchNorm becomes ``nn.Identity``.

Examples
--------
>>> import torch
>>> from torch import nn
>>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).eval()
>>> folded = fold_batchnorm(net)
>>> type(folded[1]).__name__, folded[0].bias is not None
('Identity', True)
>>> x = torch.randn(2, 1, 6, 6)
>>> bool(torch.allclose(folded(x), net(x), atol=1e-5))
True
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from ..core.errors import ConfigError, ModelError

__all__ = ["fold_batchnorm", "batchnorm_pairs", "bake_masks", "FoldPlan"]

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CALL = "fold_batchnorm"


@dataclass(frozen=True)
class FoldPlan:
    """The (layer, BatchNorm) pairs that can be folded, how they were found, and the
    BatchNorm layers that stay (with the reason)."""

    pairs: list[tuple[str, str]]
    method: str            # "fx" (traced graph) or "sequential" (fallback)
    kept: dict[str, str]   # BatchNorm name -> why it is not folded


def bake_masks(model: nn.Module) -> nn.Module:
    """Make every ``torch.nn.utils.prune`` mask permanent, in place: the masked parameter
    becomes a plain dense tensor with zeros, and the pre-forward hook is removed.

    Examples
    --------
    >>> from torch import nn
    >>> from torch.nn.utils import prune
    >>> layer = prune.l1_unstructured(nn.Linear(4, 2), "weight", amount=0.5)
    >>> layer = bake_masks(layer)
    >>> hasattr(layer, "weight_mask"), int((layer.weight == 0).sum())
    (False, 4)
    """
    from torch.nn.utils import prune

    from ..models.mechanisms.masks import masked_params

    for module in model.modules():
        for param in masked_params(module):
            prune.remove(module, param)
    return model


def _output_ranks(model: nn.Module, example: torch.Tensor, names: set[str]) -> dict[str, int]:
    """Number of dimensions of the output of each named layer on ``example``."""
    modules = dict(model.named_modules())
    ranks: dict[str, int] = {}

    def hook(name):
        def record(module, args, out):   # returns None: a hook's result would replace `out`
            ranks.setdefault(name, out.dim())
        return record

    handles = [modules[n].register_forward_hook(hook(n)) for n in names]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    return ranks


def _graph_pairs(model: nn.Module) -> tuple[list[tuple[str, str]], dict[str, str]]:
    graph = torch.fx.symbolic_trace(model).graph
    modules = dict(model.named_modules())
    calls: dict[str, int] = {}
    read: set[str] = set()   # modules whose parameters forward() reads directly
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
        elif node.op == "get_attr":
            read.add(node.target.rpartition(".")[0])
    pairs, kept = [], {}
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules[node.target], _BatchNorm):
            continue
        src = node.args[0] if node.args else None
        name = node.target
        if not (isinstance(src, torch.fx.Node) and src.op == "call_module"
                and isinstance(modules[src.target], (*_CONVS, nn.Linear))):
            kept[name] = "its input is not the output of a Conv or Linear layer"
        elif len(src.users) != 1:
            kept[name] = f"the output of {src.target!r} is also used elsewhere"
        elif calls[name] != 1 or calls[src.target] != 1 or len(node.args) != 1 or node.kwargs:
            kept[name] = "the layer or the BatchNorm is called more than once"
        elif {name, src.target} & read:
            kept[name] = "forward() reads the parameters of the layer or the BatchNorm"
        else:
            pairs.append((src.target, name))
    return pairs, kept


def _sequential_pairs(model: nn.Module) -> tuple[list[tuple[str, str]], dict[str, str]]:
    uses: dict[int, int] = {}
    for _, m in model.named_modules(remove_duplicate=False):
        uses[id(m)] = uses.get(id(m), 0) + 1
    pairs, kept = [], {}
    for parent_name, parent in model.named_modules():
        # a subclass with its own forward() may not chain its children
        if type(parent).forward is not nn.Sequential.forward:
            continue
        children = list(parent.named_children())
        for (a_name, a), (b_name, b) in zip(children, children[1:]):
            if (isinstance(b, _BatchNorm) and isinstance(a, (*_CONVS, nn.Linear))
                    and uses[id(a)] == 1 and uses[id(b)] == 1):
                prefix = parent_name + "." if parent_name else ""
                pairs.append((prefix + a_name, prefix + b_name))
    paired = {bn for _, bn in pairs}
    for name, m in model.named_modules():
        if isinstance(m, _BatchNorm) and name not in paired:
            kept[name] = ("the model cannot be traced with torch.fx, and outside nn.Sequential "
                          "a BatchNorm's input cannot be known without tracing")
    return pairs, kept


def batchnorm_pairs(model: nn.Module, example: torch.Tensor | None = None) -> FoldPlan:
    """Find the (Conv/Linear, BatchNorm) pairs of ``model`` that can be folded.

    A Linear + BatchNorm1d pair is folded only when ``example`` shows that the Linear layer's
    output is 2-D (on a 3-D input, BatchNorm1d normalises another dimension than the Linear
    layer's features); without ``example`` such pairs are kept.

    Examples
    --------
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    >>> batchnorm_pairs(net).pairs
    [('0', '1')]
    """
    try:
        pairs, kept = _graph_pairs(model)
        method = "fx"
    except Exception:  # noqa: BLE001 - any tracing failure: use the documented fallback
        pairs, kept = _sequential_pairs(model)
        method = "sequential"
    modules = dict(model.named_modules())
    linears = {a for a, _ in pairs if isinstance(modules[a], nn.Linear)}
    ranks = _output_ranks(model, example, linears) if (linears and example is not None) else {}
    checked = []
    for a, b in pairs:
        layer, bn = modules[a], modules[b]
        out = layer.out_channels if isinstance(layer, _CONVS) else layer.out_features
        if not bn.track_running_stats or bn.running_mean is None:
            kept[b] = "it normalises with batch statistics (track_running_stats=False)"
        elif bn.num_features != out:
            kept[b] = f"it has {bn.num_features} features but {a!r} has {out} outputs"
        elif isinstance(layer, nn.Linear) and (not isinstance(bn, nn.BatchNorm1d)
                                               or ranks.get(a) != 2):
            kept[b] = ("a Linear layer's output must be 2-D for BatchNorm1d to act on its "
                       "features" + ("" if example is not None else "; pass example= to check"))
        else:
            checked.append((a, b))
    return FoldPlan(checked, method, kept)


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, module)


def fold_batchnorm(model: nn.Module, example: torch.Tensor | None = None, *,
                   atol: float = 1e-4) -> nn.Module:
    """A deployment copy of ``model``: masks baked in, each BatchNorm that directly follows a
    Conv or Linear layer folded into it.

    Parameters
    ----------
    model : nn.Module
        The (pruned, possibly masked) model; never modified.
    example : torch.Tensor, optional
        A batch of inputs. With it, Linear + BatchNorm1d pairs can be folded (see
        :func:`batchnorm_pairs`), and the copy's outputs are checked against the model's.
    atol : float
        Largest difference allowed in that check, relative to the size of the outputs.

    Returns
    -------
    nn.Module
        A copy in eval mode, of the same class; ``copy.xprune_fold`` holds the
        :class:`FoldPlan` (what was folded, and why other BatchNorms were kept).

    Raises
    ------
    ModelError
        The folded copy's outputs differ from the model's on ``example``.

    Examples
    --------
    >>> import torch, xprune_nb as xp
    >>> model = xp.zoo.load("digits_cnn")
    >>> folded = fold_batchnorm(model, torch.zeros(2, 1, 8, 8))
    >>> folded.xprune_fold.pairs
    [('conv1', 'bn1'), ('conv2', 'bn2')]
    """
    if not isinstance(model, nn.Module):
        raise ConfigError.bad_value(_CALL, "model", "a torch.nn.Module", model)
    if example is not None and not isinstance(example, torch.Tensor):
        raise ConfigError.bad_value(_CALL, "example", "a tensor (a batch of inputs) or None",
                                    example)
    if isinstance(atol, bool) or not isinstance(atol, (int, float)) or not atol > 0:
        raise ConfigError.bad_value(_CALL, "atol", "a positive number", atol)
    from ..models.mechanisms.model_tools import (
        copy_model,  # deepcopy refuses a masked layer's computed weight
    )

    folded = bake_masks(copy_model(model)).eval()
    plan = batchnorm_pairs(folded, example)
    for a, b in plan.pairs:
        layer, bn = folded.get_submodule(a), folded.get_submodule(b)
        fuse = fuse_conv_bn_eval if isinstance(layer, _CONVS) else fuse_linear_bn_eval
        fused = fuse(layer, bn)
        _set(folded, a, fused)
        _set(folded, b, nn.Identity())
    folded.xprune_fold = plan
    if example is not None and plan.pairs:
        _check_same(model, folded, example, atol, plan)
    return folded


def _check_same(model: nn.Module, folded: nn.Module, example: torch.Tensor, atol: float,
                plan: FoldPlan) -> None:
    from ..models.mechanisms.model_tools import eval_mode, logits_of

    with torch.no_grad(), eval_mode(model):
        want = logits_of(model(example))
        got = logits_of(folded(example))
    scale = 1.0 + float(want.abs().max())
    diff = float((want - got).abs().max())
    if not diff <= atol * scale:
        raise ModelError(f"{_CALL}: the folded copy's outputs differ from the model's by "
                         f"{diff:.3g} (allowed {atol * scale:.3g}) after folding "
                         f"{plan.pairs}; the model's forward() probably uses these layers in a "
                         "way the graph does not show.")
