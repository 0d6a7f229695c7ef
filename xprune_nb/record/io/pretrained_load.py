"""Loading a Hugging Face folder written by :func:`xprune_nb.record.io.pretrained.save_pretrained`:
the class named in ``architectures`` (a class of the ``transformers`` package only; ``auto_map``
remote code is never imported), then the recorded structure, then the weights."""

from __future__ import annotations

import copy
import json
import types
from pathlib import Path

import torch
from torch import nn

from ...core.errors import MissingDependencyError, StudyFileError
from .pretrained import (
    _WEIGHTS,
    FORMAT,
    PRUNING_KEY,
    VERSION,
    _save_method,
    _trace,
    _untied,
    example_from,
)

__all__ = ["load_pretrained", "build_pretrained", "plain_config"]


def _read_weights(folder: Path, call: str) -> dict[str, torch.Tensor]:
    from ...core.reading import check_finite_state

    index = folder / (_WEIGHTS + ".index.json")
    hidden = folder / ("xprune_" + _WEIGHTS)
    files = ([folder / f for f in sorted(set(json.loads(index.read_text())["weight_map"]
                                             .values()))]
             if index.exists() else [hidden if hidden.exists() else folder / _WEIGHTS])
    if not all(f.exists() for f in files):
        raise StudyFileError(f"{call}(path=...): {str(folder)!r} has no model.safetensors "
                             "(or its shards); save it with study.save_pretrained.")
    from safetensors.torch import load_file

    state = {}
    for f in files:
        state.update(load_file(str(f)))
    check_finite_state(state, path=folder, call=call, where="the weights")
    return state


def _model_class(raw: dict, call: str, folder: Path):
    try:
        import transformers
    except ImportError as exc:
        raise MissingDependencyError(
            f"{call}: {str(folder)!r} is a Hugging Face folder; loading it needs transformers "
            "(pip install 'xprune_nb[hf]').") from exc
    names = raw.get("architectures") or []
    name = names[0] if names and isinstance(names[0], str) else ""
    cls = getattr(transformers, name, None) if name.isidentifier() else None
    if not (isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel)):
        raise StudyFileError(
            f"{call}: the config names the architecture {name!r}, which is not a "
            "model class of the transformers package (remote code is never run); give "
            "model=a fresh instance of the original architecture.")
    return cls


def load_pretrained(path, model: nn.Module | None = None, *, call: str = "load_pruned"
                    ) -> nn.Module:
    """Rebuild a model from a Hugging Face folder written by :func:`save_pretrained` (or any
    plain Hugging Face folder of a ``transformers`` class): class, then structure, then
    weights. ``model`` (a fresh instance of the original architecture) replaces the class
    named in the config."""
    from ...pruning.rebuild import rebuild

    folder = Path(path)
    try:
        raw = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise StudyFileError(f"{call}(path=...): {str(folder)!r} has no readable "
                             f"config.json ({type(exc).__name__}).") from exc
    record = raw.pop(PRUNING_KEY, None) or {}
    if record and (record.get("format") != FORMAT or record.get("version") != VERSION):
        raise StudyFileError(f"{call}(path=...): its {PRUNING_KEY!r} entry is not version "
                             f"{VERSION} of {FORMAT!r}; this xprune_nb cannot rebuild it.")
    raw.pop("auto_map", None)   # remote code is never imported
    raw.update(record.get("original_config", {}))
    if not record and model is None:   # a plain Hugging Face folder: its own loader and renames
        return _model_class(raw, call, folder).from_pretrained(folder).eval()
    state = _read_weights(folder, call)
    try:
        if model is not None:
            net = copy.deepcopy(model).cpu()
        else:
            cls = _model_class(raw, call, folder)
            net = cls(cls.config_class.from_dict(raw))
        net = net.eval()
        if record and not record.get("stock"):
            net = rebuild(net, record["structure"], [], example_from(record["input"]), _trace)
        missing, unexpected = net.load_state_dict(state, strict=False)
        if unexpected or _untied(net, missing):
            raise RuntimeError(f"missing {_untied(net, missing)[:5]}, unexpected "
                               f"{list(unexpected)[:5]}")
    except StudyFileError:
        raise
    except (KeyError, RuntimeError, ValueError, TypeError, AttributeError) as exc:
        raise StudyFileError(f"{call}: {str(folder)!r} does not fit the "
                             + ("model given" if model is not None else "architecture it names")
                             + f" ({type(exc).__name__}: {' '.join(str(exc).split())[:300]})"
                             ) from exc
    _remask(net, record.get("masked", []))
    if record and not record.get("stock"):
        net.__dict__["_xprune_pruning"] = record
        net.__dict__["save_pretrained"] = types.MethodType(_save_method, net)
    return net.eval()


def _remask(net: nn.Module, masked) -> None:
    """Masked weights were saved as zeros; their masks come back as ``weight != 0``."""
    from torch.nn.utils import prune

    for entry in masked:
        layer, _, param = str(entry).partition(":")
        module = net.get_submodule(layer) if layer else net
        tensor = getattr(module, param or "weight")
        prune.custom_from_mask(module, param or "weight", (tensor != 0).to(tensor.dtype))


def build_pretrained(name: str, config: dict, *, call: str = "build_pretrained") -> nn.Module:
    """A fresh (randomly initialised) ``transformers.<name>`` built from a plain config dict.

    Only model classes of the transformers package are built, so no code from a file or
    recipe runs: the name is looked up there, the config is plain data
    (``cls.config_class.from_dict``), and ``auto_map`` (remote code) is dropped.

    Examples
    --------
    >>> import transformers
    >>> config = transformers.BertConfig(vocab_size=20, hidden_size=8, num_hidden_layers=1,
    ...                                  num_attention_heads=2, intermediate_size=8).to_dict()
    >>> type(build_pretrained("BertModel", config)).__name__
    'BertModel'
    """
    if not isinstance(config, dict):
        raise StudyFileError(f"{call}(config=...): expected a plain config mapping, got "
                             f"{type(config).__name__}")
    raw = {k: v for k, v in config.items() if k != "auto_map"}
    raw["architectures"] = [name]
    cls = _model_class(raw, call, Path("."))
    return cls(cls.config_class.from_dict(raw)).eval()


def plain_config(model: nn.Module) -> dict:
    """``model.config`` as plain JSON data (what a recipe or checkpoint stores)."""
    return json.loads(model.config.to_json_string(use_diff=False))

