"""Pruned-model checkpoints: plain tensors and plain data only, rebuilt without running code.

A checkpoint holds the original architecture's import path and constructor arguments, the
structural removals (one plan per pruning step: ``{group root layer: removed channels}``), the
masked layers, the shape of one input, and the pruned state dict. :func:`load_pruned` builds the
original architecture, replays the plans with torch-pruning on a zero input of that shape, adds
the masks back and loads the weights. ``torch.load(weights_only=True)`` refuses anything but
tensors and plain containers, so reading a checkpoint never executes code from it; the only
object it names is a class, and it is used only when it imports and is an ``nn.Module``.

Examples
--------
>>> import tempfile, xprune_nb as xp
>>> study = xp.Study(xp.zoo.load("toy_mlp"), xp.datasets.load("moons"), seed=0)
>>> _ = study.score("magnitude"); _ = study.prune(0.5)
>>> path = study.save_pruned(tempfile.mkdtemp() + "/model.pt")
>>> model = xp.load_pruned(path)
>>> sum(p.numel() for p in model.parameters()) == study.step.metrics["params"]
True
"""

from __future__ import annotations

import importlib
import pickle
import zipfile
from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError, StudyFileError

__all__ = ["save_pruned", "load_pruned", "read_checkpoint", "FORMAT", "VERSION"]

FORMAT = "xprune_nb.pruned"
VERSION = 1


def architecture_of(model: nn.Module, kwargs: dict | None = None) -> dict:
    """Where the architecture of ``model`` comes from: zoo name and/or class path + kwargs."""
    cls = type(model)
    arch = {"module": cls.__module__, "qualname": cls.__qualname__,
            "kwargs": dict(kwargs or {}), "zoo": None}
    name = getattr(model, "_xprune_zoo_name", None)
    if name:
        from .. import zoo

        arch["zoo"] = name
        arch["kwargs"] = dict(zoo.info(name)["kwargs"])
    return arch


def save_pruned(model: nn.Module, path: str | Path, *, structure: list[dict] = (),
                masked: list[str] = (), input_shape: tuple[int, ...],
                architecture: dict | None = None, metrics: dict | None = None,
                input_dtype: torch.dtype = torch.float32) -> Path:
    """Write a pruned model to ``path`` (loadable with ``torch.load(weights_only=True)``).

    Parameters
    ----------
    model : nn.Module
        The pruned model.
    structure : list of dict
        The structural plans applied to the original architecture, in order (``Step.structure``).
    masked : list of str
        Layers carrying a weight mask (``Step.masked``).
    input_shape : tuple of int
        Shape of one input without the batch dimension (to trace the model when rebuilding).
    architecture : dict, optional
        ``{"module", "qualname", "kwargs", "zoo"}``; by default taken from ``model``'s class
        (a zoo model knows its name and constructor arguments).
    metrics : dict, optional
        Plain numbers to keep alongside (accuracy, params...).
    """
    path = Path(path)
    arch = dict(architecture or architecture_of(model))
    payload = {
        "format": FORMAT, "version": VERSION,
        "architecture": {"module": str(arch["module"]), "qualname": str(arch["qualname"]),
                         "kwargs": dict(arch.get("kwargs") or {}), "zoo": arch.get("zoo")},
        "structure": [{str(k): [int(i) for i in v] for k, v in plan.items()}
                      for plan in structure],
        "masked": [str(n) for n in masked],
        "input_shape": [int(d) for d in input_shape],
        "input_dtype": str(input_dtype).replace("torch.", ""),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "metrics": {k: v for k, v in (metrics or {}).items()
                    if isinstance(v, (int, float, str, bool)) or v is None},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, path)
    return path


def read_checkpoint(path: str | Path, call: str = "load_pruned") -> dict:
    """The checkpoint's contents as plain data (never runs code)."""
    path = Path(path)
    if not path.is_file():
        raise StudyFileError(f"{call}(path=...): no such file {str(path)!r}.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, zipfile.BadZipFile, EOFError, ValueError,
            AttributeError, TypeError) as exc:
        raise StudyFileError(
            f"{call}(path=...): {str(path)!r} is not a readable checkpoint (or it holds objects "
            f"other than tensors and plain data, which are refused): "
            f"{' '.join(str(exc).split())}") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise StudyFileError(f"{call}(path=...): {str(path)!r} is not a pruned-model "
                             "checkpoint written by xprune_nb (save_pruned or an exported "
                             "script).")
    if payload.get("version") != VERSION:
        raise StudyFileError(f"{call}(path=...): checkpoint version {payload.get('version')!r} "
                             f"is not supported (this xprune_nb reads version {VERSION}).")
    return payload


def _construct(arch: dict, call: str) -> nn.Module:
    if arch.get("zoo"):
        from .. import zoo

        if arch["zoo"] in zoo.available():
            return zoo.build(arch["zoo"])
    module, qualname = arch.get("module"), arch.get("qualname")
    if module == "__main__":
        raise StudyFileError(
            f"{call}: the model class {qualname} was defined in a notebook or script, so it "
            "cannot be imported; pass model=<a fresh instance of the original architecture>.")
    try:
        obj = importlib.import_module(module)
        for part in str(qualname).split("."):
            obj = getattr(obj, part)
    except Exception as exc:  # noqa: BLE001 - any failure: the user must pass model=
        raise StudyFileError(
            f"{call}: cannot import the model class {module}.{qualname} ({exc}); pass "
            "model=<a fresh instance of the original architecture>.") from exc
    # the file names the class; refuse anything but a module class (e.g. os.system)
    if not (isinstance(obj, type) and issubclass(obj, nn.Module)):
        raise StudyFileError(f"{call}: {module}.{qualname} is not a torch.nn.Module class; "
                             "refusing to call it.")
    try:
        return obj(**arch.get("kwargs", {}))
    except Exception as exc:  # noqa: BLE001
        raise StudyFileError(f"{call}: cannot build {module}.{qualname}(**{arch.get('kwargs')})"
                             f" ({exc}); pass model=<a fresh instance>.") from exc


def rebuild(original: nn.Module, structure: list[dict], masked: list[str],
            example: torch.Tensor) -> nn.Module:
    """Apply the recorded structural plans and masks to ``original`` (in place)."""
    from ..pruning.groups import apply_channel_plan
    from ..pruning.unstructured import ensure_masks

    for plan in structure:
        apply_channel_plan(original, example, plan)
    ensure_masks(original, list(masked))
    return original


def load_pruned(path: str | Path, model: nn.Module | None = None) -> nn.Module:
    """Rebuild a pruned model saved by a study or an exported script.

    Parameters
    ----------
    path : str or Path
        A ``model.pt`` written by :func:`save_pruned` (``study.save_pruned`` or an exported
        script's ``--out`` folder).
    model : nn.Module, optional
        A fresh instance of the *original* (unpruned) architecture. Needed when the class was
        defined in a notebook and cannot be imported; otherwise the class is imported and built
        with the constructor arguments stored in the file.

    Returns
    -------
    nn.Module
        The pruned model in eval mode, on CPU, with the saved weights (and masks).
    """
    call = "load_pruned"
    if model is not None and not isinstance(model, nn.Module):
        raise ConfigError.bad_value(call, "model", "a torch.nn.Module or None", model)
    payload = read_checkpoint(path, call)
    try:
        import copy

        net = copy.deepcopy(model) if model is not None else _construct(
            payload["architecture"], call)
        net = net.cpu().eval()
        dtype = getattr(torch, str(payload.get("input_dtype", "float32")), None)
        if not isinstance(dtype, torch.dtype):
            raise StudyFileError(f"{call}: {str(path)!r} names an unknown input dtype.")
        example = torch.zeros(2, *payload["input_shape"], dtype=dtype)
        rebuild(net, payload["structure"], payload["masked"], example)
        net.load_state_dict(payload["state_dict"])
        from ..distributed import _refresh_masked

        _refresh_masked(net)  # a masked layer's `weight` is otherwise stale until a forward
    except StudyFileError:
        raise
    except (KeyError, RuntimeError, ValueError, TypeError, AttributeError) as exc:
        raise StudyFileError(
            f"{call}: {str(path)!r} does not fit the "
            + ("model given" if model is not None else "stored architecture")
            + f" ({type(exc).__name__}: {' '.join(str(exc).split())[:300]})") from exc
    return net.eval()
