"""Helpers that look at a user's model: its logits, its prunable layers, its output layer."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

import torch
from torch import nn

from ...core.errors import ModelError

__all__ = [
    "PRUNABLE_TYPES", "call_model", "logits_of", "prunable_layers", "check_finite",
    "eval_mode", "weight_tensor", "copy_model", "trace_output", "tied_parameters",
    "check_tied", "check_materialized",
]

#: Layers whose output units (channels / neurons) and weights xprune_nb can score and prune.
PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def call_model(model: nn.Module, x):
    """Run ``model`` on one batch of inputs as users hold them: a tensor positionally, a dict /
    ``BatchEncoding`` (``input_ids``, ``attention_mask``...) as keyword arguments.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> call_model(nn.Identity(), torch.ones(1)).tolist()
    [1.0]
    """
    return model(**x) if isinstance(x, Mapping) else model(x)


def logits_of(output) -> torch.Tensor:
    """Extract the logits from what a model returns.

    Only unambiguous places are read: a tensor as is, an object's ``.logits`` tensor (as
    Hugging Face models return) or a mapping's ``"logits"`` entry. Anything else (a tuple, a
    dict of other names) is refused rather than guessed: taking "the first value" can silently
    make a hidden layer "the output". Pass ``output_fn`` to :class:`~xprune_nb.Study` instead.

    Examples
    --------
    >>> import torch
    >>> logits_of({"logits": torch.zeros(2, 3)}).shape
    torch.Size([2, 3])
    >>> logits_of({"hidden": torch.zeros(2, 8)})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    xprune_nb.core.errors.ModelError: Study(output_fn=...): the model returned a dict with keys ...
    """
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping) and "logits" in output and isinstance(
            output["logits"], torch.Tensor):
        return output["logits"]
    logits = getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(output, Mapping):
        keys = [str(k) for k in output]
        example = f"out[{keys[0]!r}]" if keys else "out[...]"
        raise ModelError(
            f"Study(output_fn=...): the model returned a {type(output).__name__} with keys "
            f"{keys} and no 'logits' key, so its logits are unknown; pass output_fn=..., "
            f"e.g. output_fn=lambda out: {example}, to say which value holds them."
        )
    if isinstance(output, (tuple, list)):
        raise ModelError(
            f"Study(output_fn=...): the model returned a {type(output).__name__} of "
            f"{len(output)} items; which one holds the logits is ambiguous. Pass output_fn=..., "
            "e.g. output_fn=lambda out: out[0]."
        )
    raise ModelError(
        f"Study(output_fn=...): the model returned {type(output).__name__}, not logits: return "
        "a tensor of shape (batch, classes), a dict with a 'logits' tensor or an object with a "
        ".logits tensor, or pass output_fn=... to turn the output into logits."
    )


def trace_output(output) -> torch.Tensor:
    """A tensor to trace the model's graph through: the logits when :func:`logits_of` finds
    them, else the first tensor in the output. Only for structure analysis (which layers feed
    which), never for results: those go through the study's ``output_fn``."""
    try:
        return logits_of(output)
    except ModelError:
        values = output.values() if isinstance(output, Mapping) else (
            output if isinstance(output, (tuple, list)) else ())
        for value in values:
            if isinstance(value, torch.Tensor):
                return value
        raise


def copy_model(model: nn.Module, call: str = "Study") -> nn.Module:
    """``copy.deepcopy`` that also works on models masked by torch.nn.utils.prune.

    Refuses (:class:`ModelError`) a model whose tensors hold no data (the ``meta`` device).

    A masked layer's ``weight`` is recomputed from ``weight_orig * weight_mask`` at every
    forward; after a forward with autograd it is a non-leaf tensor, which deepcopy refuses.
    Detaching it is harmless: the next forward recomputes it.
    """
    import copy

    from .masks import masked_params

    check_materialized(model, call)
    for module in model.modules():
        for param in masked_params(module):
            with torch.no_grad():
                setattr(module, param, (getattr(module, param + "_orig")
                                        * getattr(module, param + "_mask")).detach())
    return copy.deepcopy(model)


def check_materialized(model: nn.Module, call: str = "Study") -> None:
    """Raise if a parameter or buffer of ``model`` is on the ``meta`` device (shapes only, no
    values: nothing can be evaluated, copied or saved).

    Examples
    --------
    >>> from torch import nn
    >>> check_materialized(nn.Linear(2, 2, device="meta"))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    xprune_nb.core.errors.ModelError: Study(model=...): the model's 'weight' is on the meta device
    ...
    """
    for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
        if tensor.is_meta:
            raise ModelError(
                f"{call}(model=...): the model's {name!r} is on the meta device (it has a shape "
                "but no values); materialise it first, e.g. model.to_empty(device='cpu') and "
                "then load its weights."
            )


def tied_parameters(model: nn.Module) -> list[tuple[str, ...]]:
    """Groups of parameter names that are one and the same tensor (tied weights).

    ``dec.weight = enc.weight`` makes two layers share one ``nn.Parameter``; ``named_parameters``
    lists it once, so this walks every module's own parameters instead. Each group lists the
    qualified names in definition order; untied parameters are not listed.

    Examples
    --------
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4))
    >>> net[2].weight = net[0].weight
    >>> tied_parameters(net)
    [('0.weight', '2.weight')]
    """
    by_tensor: dict[int, list[str]] = {}
    for mod_name, module in model.named_modules(remove_duplicate=False):
        for p_name, param in module.named_parameters(recurse=False):
            name = f"{mod_name}.{p_name}" if mod_name else p_name
            names = by_tensor.setdefault(id(param), [])
            if name not in names:
                names.append(name)
    return [tuple(names) for names in by_tensor.values() if len(names) > 1]


def check_tied(model: nn.Module, layers, call: str) -> None:
    """Refuse to prune ``layers`` (names of modules) when one of them shares a weight with
    another layer: removing units from one would silently untie (or break) the other.

    Examples
    --------
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4))
    >>> net[2].weight = net[0].weight
    >>> check_tied(net, ["0"], "Study.prune")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    xprune_nb.core.errors.ModelError: Study.prune: layers '0' and '2' share one weight tensor ...
    """
    wanted = set(layers)
    for group in tied_parameters(model):
        owners = [name.rpartition(".")[0] for name in group]
        if wanted.intersection(owners):
            shown = " and ".join(repr(o) for o in dict.fromkeys(owners))
            raise ModelError(
                f"{call}: layers {shown} share one weight tensor "
                f"({' is '.join(repr(n) for n in group)}); pruning one would untie them. "
                f"Leave both out with ignore={list(dict.fromkeys(owners))}, or untie them in "
                "the model first."
            )




@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for the block and restore every module's own mode after."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for module, mode in modes.items():
            module.training = mode




def weight_tensor(module: nn.Module) -> torch.Tensor:
    """The effective (masked, if masked) weight of a layer."""
    return module.weight


def prunable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every Conv/Linear layer of ``model`` by its qualified name, in definition order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, PRUNABLE_TYPES)}


def check_finite(model: nn.Module, call: str) -> None:
    """Raise if any parameter or buffer of ``model`` holds NaN or infinity."""
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        # the extremes, into which NaN propagates: no mask of the tensor's size (5x faster)
        if t.is_floating_point() and t.numel() and not bool(torch.isfinite(torch.stack(
                torch.aminmax(t.detach())) if t.element_size() > 1 else t).all()):
            raise ModelError(
                f"{call}: the model's {name!r} contains NaN or infinite values; "
                "load finite weights (or retrain with a lower learning rate) first."
            )


def model_source(model: nn.Module) -> dict:
    """Where ``model``'s architecture comes from: a zoo name or an importable class path."""
    zoo_name = getattr(model, "_xprune_zoo_name", None)
    if zoo_name:
        return {"kind": "zoo", "name": zoo_name}
    cls = type(model)
    return {"kind": "class", "module": cls.__module__, "qualname": cls.__qualname__}
