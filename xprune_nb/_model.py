"""Helpers that look at a user's model: its logits, its prunable layers, its output layer."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn

from .errors import DataError, ModelError

__all__ = [
    "PRUNABLE_TYPES",
    "logits_of",
    "prunable_layers",
    "find_output_layers",
    "check_finite",
    "eval_mode",
    "weight_tensor",
    "weight_param",
    "model_device",
    "copy_model",
]

#: Layers whose output units (channels / neurons) and weights xprune_nb can score and prune.
PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def logits_of(output) -> torch.Tensor:
    """Extract the logits from what a model returns.

    Wrapped models often return a tuple, a dict or an object with a ``logits`` attribute (as
    Hugging Face models do); a plain tensor is taken as is.
    """
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict):
        if "logits" in output:
            return output["logits"]
        first = next(iter(output.values()), None)
        if isinstance(first, torch.Tensor):
            return first
    logits = getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise ModelError(
        f"the model returned {type(output).__name__}, not logits: return a tensor of shape "
        "(batch, classes), a tuple whose first item is one, or an object with a .logits tensor."
    )


def copy_model(model: nn.Module) -> nn.Module:
    """``copy.deepcopy`` that also works on models masked by torch.nn.utils.prune.

    A masked layer's ``weight`` is recomputed from ``weight_orig * weight_mask`` at every
    forward; after a forward with autograd it is a non-leaf tensor, which deepcopy refuses.
    Detaching it is harmless: the next forward recomputes it.
    """
    import copy

    from .pruning.unstructured import masked_params

    for module in model.modules():
        for param in masked_params(module):
            with torch.no_grad():
                setattr(module, param, (getattr(module, param + "_orig")
                                        * getattr(module, param + "_mask")).detach())
    return copy.deepcopy(model)


def model_device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")


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


def weight_param(module: nn.Module) -> torch.nn.Parameter:
    """The trainable weight of a layer, also when torch.nn.utils.prune has masked it."""
    return getattr(module, "weight_orig", None) if hasattr(module, "weight_orig") else module.weight


def weight_tensor(module: nn.Module) -> torch.Tensor:
    """The effective (masked, if masked) weight of a layer."""
    return module.weight


def prunable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every Conv/Linear layer of ``model`` by its qualified name, in definition order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, PRUNABLE_TYPES)}


def find_output_layers(model: nn.Module, example: torch.Tensor,
                       forward: Callable[[nn.Module, torch.Tensor], torch.Tensor]) -> list[str]:
    """Names of the layers that produce the model's logits (never pruned unless asked).

    The output layer is the last Conv/Linear layer run whose output width equals the number of
    logits; wrapped models that post-process the logits are handled the same way.
    """
    layers = prunable_layers(model)
    order: list[tuple[str, torch.Tensor]] = []
    handles = [
        m.register_forward_hook(lambda mod, inp, out, name=name: order.append((name, out)))
        for name, m in layers.items()
    ]
    try:
        with torch.no_grad(), eval_mode(model):
            out = forward(model, example)
    finally:
        for h in handles:
            h.remove()
    direct = [name for name, t in order if t is out]
    if direct:
        return direct[-1:]
    width = out.shape[-1] if out.dim() > 1 else 1
    candidates = [name for name, t in order if t.dim() >= 2 and t.shape[1] == width]
    return candidates[-1:] if candidates else []


def check_finite(model: nn.Module, call: str) -> None:
    """Raise if any parameter or buffer of ``model`` holds NaN or infinity."""
    for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ModelError(
                f"{call}: the model's {name!r} contains NaN or infinite values; "
                "load finite weights (or retrain with a lower learning rate) first."
            )


def check_fits(model: nn.Module, example: torch.Tensor, num_classes: int,
               forward: Callable[[nn.Module, torch.Tensor], torch.Tensor], call: str) -> int:
    """Run the model once on ``example``; return its number of logits or raise a DataError."""
    try:
        with torch.no_grad(), eval_mode(model):
            out = forward(model, example)
    except ModelError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure here means the data does not fit
        raise DataError(
            f"{call}: the model cannot run on inputs of shape {tuple(example.shape[1:])} "
            f"(plus a batch dimension): {type(exc).__name__}: {exc}"
        ) from exc
    if out.dim() != 2 or out.shape[0] != example.shape[0]:
        raise ModelError(
            f"{call}: expected logits of shape (batch, classes), got {tuple(out.shape)}."
        )
    if out.shape[1] < num_classes:
        raise DataError(
            f"{call}: the data has {num_classes} classes but the model outputs only "
            f"{out.shape[1]} logits."
        )
    return int(out.shape[1])
