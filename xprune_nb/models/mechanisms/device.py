"""Where a study computes: resolving ``device=`` and moving inputs there.

A study keeps its models on one device (``study.device``) and its data where the user gave it
(the CPU, usually): inputs go to the device batch by batch inside ``Study.forward`` and the
logits come back to the inputs' device, so the metrics, scores and explanations built from
them are CPU tensors whatever the device. Snapshots and saved files always hold CPU tensors.
As in Hugging Face accelerate, ``"auto"`` means: where the model already is.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ...core.errors import ConfigError

__all__ = ["resolve_device", "model_device", "to_device", "call_on"]

DeviceSpec = str | torch.device


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter (or buffer); the CPU for a model without any.

    Examples
    --------
    >>> model_device(nn.Linear(2, 2))
    device(type='cpu')
    """
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def resolve_device(device: object, model: nn.Module, call: str = "Study") -> torch.device:
    """``device=`` as a ``torch.device``: ``"auto"`` (the model's own device), ``"cpu"``,
    ``"cuda"``, ``"cuda:1"``, ``"mps"`` or a ``torch.device``; refused when unavailable.

    Examples
    --------
    >>> resolve_device("auto", nn.Linear(2, 2))
    device(type='cpu')
    >>> try:
    ...     resolve_device("gpu", nn.Linear(2, 2))
    ... except ConfigError as exc:
    ...     print(str(exc)[:30])
    Study(device=...): expected "a
    """
    if isinstance(device, str) and device == "auto":
        found = model_device(model)
        return torch.device("cpu") if found.type == "meta" else found
    if not isinstance(device, (str, torch.device)):
        raise ConfigError(f'{call}(device=...): expected "auto", "cpu", "cuda", "cuda:N" or a '
                          f"torch.device; got {device!r}.")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ConfigError(f'{call}(device=...): expected "auto", "cpu", "cuda", "cuda:N" or a '
                          f"torch.device; got {device!r}.") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{call}(device={device!r}): CUDA is not available on this "
                              'machine (torch.cuda.is_available() is False); use "cpu" or '
                              '"auto".')
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"{call}(device={device!r}): this machine has "
                              f"{torch.cuda.device_count()} CUDA device(s).")
    elif dev.type == "mps" and not (getattr(torch.backends, "mps", None)
                                    and torch.backends.mps.is_available()):
        raise ConfigError(f"{call}(device={device!r}): MPS is not available on this machine.")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f'{call}(device={device!r}): expected "auto", "cpu", "cuda", '
                          f'"cuda:N" or "mps"; got a {dev.type!r} device.')
    return dev


def to_device(x, device: torch.device):
    """``x`` (a tensor, or a mapping of tensors such as a tokenizer's ``BatchEncoding``) on
    ``device``; anything else as it is. A tensor already there is returned unchanged, and so
    is a ``meta`` tensor (shapes without data, for a shape-only trial on a meta copy of the
    model: it has no values to move)."""
    if isinstance(x, torch.Tensor):
        return x if x.device == device or x.device.type == "meta" else x.to(device)
    if isinstance(x, Mapping):
        return type(x)({k: to_device(v, device) for k, v in x.items()}) \
            if not hasattr(x, "to") else x.to(device)
    return x


def call_on(model: nn.Module, x, device: torch.device):
    """Run ``model`` on ``x`` moved to ``device``: a tensor positionally, a dict /
    ``BatchEncoding`` (``input_ids``, ``attention_mask``...) as keyword arguments."""
    from .model_tools import call_model

    return call_model(model, to_device(x, device))


def input_device(x) -> torch.device | None:
    """The device of ``x`` (a tensor or the first tensor of a mapping), else None."""
    if isinstance(x, torch.Tensor):
        return x.device
    if isinstance(x, Mapping):
        for v in x.values():
            if isinstance(v, torch.Tensor):
                return v.device
    return None
