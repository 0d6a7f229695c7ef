"""Pruned-model checkpoints: plain tensors and plain data only, rebuilt without running code.

A checkpoint holds the original architecture's import path and constructor arguments, the
structural removals (one plan per pruning step: ``{group root layer: removed channels}``), the
masked layers, the shape of one input, and the pruned state dict. :func:`load_pruned` builds the
original architecture, replays the plans with torch-pruning on a zero input of that shape, adds
the masks back and loads the weights. ``torch.load(weights_only=True)`` refuses anything but
tensors and plain containers, so reading a checkpoint never executes code from it. The only
object it names is the original class: zoo models rebuild by themselves; any other class is
imported only with ``trust_source=True`` (or not at all when ``model=`` is given), must be an
``nn.Module``, and gets plain-JSON constructor arguments (see :mod:`xprune_nb.record.io.resolver`).
Checkpoints are written atomically and their weights are checked to be finite when loaded.

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

import copy
import math
from pathlib import Path

import torch
from torch import nn

from ...core.atomic import as_path, torch_save
from ...core.errors import ConfigError, StudyFileError
from ...core.reading import check_finite_state, read_torch_file
from ...pruning.rebuild import structure_entry
from .resolver import build_module

__all__ = ["save_pruned", "load_pruned", "read_checkpoint", "architecture_of", "rebuild",
           "FORMAT", "VERSION"]

FORMAT = "xprune_nb.pruned"
VERSION = 1


def architecture_of(model: nn.Module, kwargs: dict | None = None) -> dict:
    """Where the architecture of ``model`` comes from: zoo name and/or class path + kwargs."""
    cls = type(model)
    arch = {"module": cls.__module__, "qualname": cls.__qualname__,
            "kwargs": dict(kwargs or {}), "zoo": None}
    from .pretrained import is_pretrained

    if is_pretrained(model) and not kwargs:   # rebuilt from its config, like load_pruned(dir)
        from ..recipe.from_study import _transformers_spec

        spec = _transformers_spec(model)
        if spec is not None:
            arch["transformers"] = spec
    name = getattr(model, "_xprune_zoo_name", None)
    if name:
        from ...models import zoo

        arch["zoo"] = name
        arch["kwargs"] = dict(zoo.info(name)["kwargs"])
    return arch


def save_pruned(model: nn.Module, path: str | Path, *, structure: list[dict] = (),
                masked: list[str] = (), input_shape: tuple[int, ...],
                architecture: dict | None = None, metrics: dict | None = None,
                input_dtype: torch.dtype = torch.float32, inputs: dict | None = None) -> Path:
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
    inputs : dict, optional
        Shape and dtype of each named input (``io.pretrained.input_spec``): a model taking a
        dict / ``BatchEncoding`` is traced with these names when rebuilt.
    """
    path = as_path(path, call="Study.save_pruned")
    arch = dict(architecture or architecture_of(model))
    payload = {
        "format": FORMAT, "version": VERSION,
        "architecture": {"module": str(arch["module"]), "qualname": str(arch["qualname"]),
                         "kwargs": dict(arch.get("kwargs") or {}), "zoo": arch.get("zoo"),
                         **({"transformers": arch["transformers"]}
                            if arch.get("transformers") else {})},
        "structure": [_plain(structure_entry(entry)) for entry in structure],
        "masked": [str(n) for n in masked],
        "input_shape": [int(d) for d in input_shape],
        "input_dtype": str(input_dtype).replace("torch.", ""),
        **({"inputs": _plain(inputs)} if inputs else {}),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "metrics": {k: v for k, v in (metrics or {}).items()
                    if isinstance(v, (int, float, str, bool)) or v is None},
    }
    return torch_save(payload, path, call="Study.save_pruned")


#: values in one example input a checkpoint may declare (a 4096 x 4096 RGB image is 50M)
MAX_EXAMPLE = 1 << 26


def read_checkpoint(path: str | Path, call: str = "load_pruned") -> dict:
    """The checkpoint's contents as plain data (never runs code), its weights checked to be
    finite."""
    path = as_path(path, call=call)
    payload = read_torch_file(path, call=call, kind="checkpoint")
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise StudyFileError(f"{call}(path=...): {str(path)!r} is not a pruned-model "
                             "checkpoint written by xprune_nb (save_pruned or an exported "
                             "script).")
    if payload.get("version") != VERSION:
        raise StudyFileError(f"{call}(path=...): checkpoint version {payload.get('version')!r} "
                             f"is not supported (this xprune_nb reads version {VERSION}).")
    if not isinstance(payload.get("state_dict"), dict) or not isinstance(
            payload.get("architecture"), dict):
        raise StudyFileError(f"{call}: {str(path)!r} is damaged (its weights or architecture "
                             "are missing); export the model again.")
    shape = payload.get("input_shape")
    if not isinstance(shape, list) or len(shape) > 8 or not all(
            isinstance(d, int) and not isinstance(d, bool) and 0 < d for d in shape) or (
            math.prod(shape) > MAX_EXAMPLE):
        # an example of this shape is built before the model is rebuilt: a crafted shape
        # must not allocate terabytes
        raise StudyFileError(f"{call}: {str(path)!r} is damaged: its input shape {shape!r} is "
                             f"not a list of at most 8 positive sizes of at most "
                             f"{MAX_EXAMPLE} values in all; export the model again.")
    if not isinstance(payload.get("structure", []), list) or not isinstance(
            payload.get("masked", []), list) or not all(
            isinstance(n, str) for n in payload.get("masked", [])):
        raise StudyFileError(f"{call}: {str(path)!r} is damaged (its recorded structure or "
                             "masks are not lists); export the model again.")
    if "inputs" in payload and not _named_inputs_ok(payload["inputs"]):
        raise StudyFileError(f"{call}: {str(path)!r} is damaged: its named inputs are not "
                             "{'keys': {name: {'shape': [...], 'dtype': ...}}} of small "
                             "shapes and torch dtypes; export the model again.")
    check_finite_state(payload["state_dict"], path=path, call=call, where="the weights")
    return payload


def _named_inputs_ok(spec) -> bool:
    """A named-input record that builds a small example (checked before anything is built)."""
    keys = spec.get("keys") if isinstance(spec, dict) else None
    if not isinstance(keys, dict) or not keys or len(keys) > 16:
        return False
    for name, v in keys.items():
        shape = v.get("shape") if isinstance(v, dict) else None
        if not isinstance(name, str) or not isinstance(shape, list) or len(shape) > 8 or not all(
                isinstance(d, int) and not isinstance(d, bool) and 0 < d for d in shape) or (
                math.prod(shape) > MAX_EXAMPLE) or not isinstance(
                getattr(torch, str(v.get("dtype")), None), torch.dtype):
            return False
    return True


def _construct(arch: dict, call: str, trust_source: bool) -> nn.Module:
    hf = arch.get("transformers")
    if isinstance(hf, dict):   # a transformers class from its plain config: runs no file code
        from .pretrained_load import build_pretrained

        return build_pretrained(hf.get("transformers"), hf.get("config"), call=call)
    if arch.get("zoo"):
        from ...models import zoo

        if arch["zoo"] in zoo.available():
            return zoo.build(arch["zoo"])
    return build_module(str(arch.get("module")), str(arch.get("qualname")),
                        arch.get("kwargs"), trust_source=trust_source, call=call)


def rebuild(original: nn.Module, structure: list[dict], masked: list[str],
            example: torch.Tensor) -> nn.Module:
    """Apply the recorded structural changes and masks to ``original`` (in place); the one
    rebuild lives in :func:`xprune_nb.record.timeline.rebuild`."""
    from ...pruning.rebuild import rebuild as _rebuild

    return _rebuild(original, structure, masked, example)


def _plain(value):
    """Tensors, numpy numbers and tuples as plain ints, floats, strings, lists and dicts."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, torch.Tensor):
        return _plain(value.tolist())
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return value.item()
    return value


def load_pruned(path: str | Path, model: nn.Module | None = None, *,
                trust_source: bool = False) -> nn.Module:
    """Rebuild a pruned model saved by a study or an exported script.

    Parameters
    ----------
    path : str or Path
        A ``model.pt`` written by :func:`save_pruned` (``study.save_pruned`` or an exported
        script's ``--out`` folder), or a Hugging Face folder written by
        ``study.save_pretrained`` (see :mod:`xprune_nb.record.io.pretrained`): its class must be one
        of the ``transformers`` package (``architectures`` in ``config.json``; remote code
        is never run), then the recorded structure is replayed and the weights loaded.
    model : nn.Module, optional
        A fresh instance of the *original* (unpruned) architecture. Needed for your own
        classes unless ``trust_source=True``; zoo models rebuild by themselves.
    trust_source : bool, default False
        Allow importing the module the checkpoint names and building the class there (with
        the plain constructor arguments stored in the file). Importing a module runs its code,
        so only opt in for checkpoints you trust. The class must be an ``nn.Module``.

    Returns
    -------
    nn.Module
        The pruned model in eval mode, on CPU, with the saved weights (and masks).
    """
    call = "load_pruned"
    if model is not None and not isinstance(model, nn.Module):
        raise ConfigError.bad_value(call, "model", "a torch.nn.Module or None", model)
    if not isinstance(trust_source, bool):
        raise ConfigError.bad_value(call, "trust_source", "True or False", trust_source)
    if (as_path(path, call=call) / "config.json").is_file():   # a Hugging Face folder
        from .pretrained_load import load_pretrained

        return load_pretrained(path, model, call=call)
    payload = read_checkpoint(path, call)
    try:
        net = copy.deepcopy(model) if model is not None else _construct(
            payload["architecture"], call, trust_source)
        net = net.cpu().eval()
        dtype = getattr(torch, str(payload.get("input_dtype", "float32")), None)
        if not isinstance(dtype, torch.dtype):
            raise StudyFileError(f"{call}: {str(path)!r} names an unknown input dtype.")
        if "inputs" in payload:   # named inputs (input_ids, attention_mask, ...)
            from .pretrained import example_from

            example = example_from(payload["inputs"])
        else:
            example = torch.zeros(2, *payload["input_shape"], dtype=dtype)
        net = rebuild(net, payload["structure"], payload["masked"], example)
        net.load_state_dict(payload["state_dict"])
        from ...models.mechanisms.masks import refresh_masked_weights

        refresh_masked_weights(net)  # a masked layer's `weight` is stale until a forward
    except StudyFileError:
        raise
    except (KeyError, RuntimeError, ValueError, TypeError, AttributeError) as exc:
        raise StudyFileError(
            f"{call}: {str(path)!r} does not fit the "
            + ("model given" if model is not None else "stored architecture")
            + f" ({type(exc).__name__}: {' '.join(str(exc).split())[:300]})") from exc
    return net.eval()
