"""Pruned Hugging Face models as standard Hugging Face folders, and back.

:func:`save_pretrained` writes ``config.json`` and ``model.safetensors`` with Hugging Face's own
``save_pretrained``. The config also records the pruned structure under one key,
:data:`PRUNING_KEY` (``"xprune_pruning"``)::

    {"format": "xprune_nb.hf_pruned", "version": 1,
     "heads_kept": {attention module: [original indices of the heads kept]},
     "layers_removed": [module names of the removed layers],
     "structure": [the study's replayable record: {"kind": ..., "plan": ...}, ...],
     "masked": [masked parameters], "input": {shape and dtype of one input},
     "stock": true | false, "original_config": {config field: its original value}}

Two cases (docs/huggingface.md):

* **stock** -- the pruned model *is* a model the stock config can describe: layers removed
  from the end or anywhere in the one layer list (the later layers move up; the config's layer
  count and any per-layer ``*layer_types`` list follow), heads removed evenly where the config
  has an explicit ``head_dim``, masked weights (saved as zeros). The folder is then written
  from a stock model built from the new config and checked to give the pruned model's outputs
  (max abs difference <= 1e-5) before anything is written; ``AutoModelFor...from_pretrained``
  loads it as is.
* **recorded** -- everything else (heads removed unevenly, or evenly in a config without
  ``head_dim``; channels removed). The config keeps the original sizes, and its layer-count
  field (else its head-count field) holds a string saying to call
  :func:`xprune_nb.load_pruned`, so a stock ``from_pretrained`` fails at once with that
  message instead of loading a wrong model.

:func:`load_pretrained` (what ``xprune_nb.load_pruned(folder)`` calls) builds the class named in
``architectures`` -- only a class of the ``transformers`` package, never ``auto_map`` remote
code -- from the original config, replays the recorded structure, and loads the weights.
"""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
import types
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ...core.errors import ConfigError, StudyFileError

__all__ = ["PRUNING_KEY", "is_pretrained", "pruning_record", "save_pretrained",
           "save_study_pretrained", "mark_pruned", "input_spec",
           "example_from", "call_model"]

#: The one config key that records the pruned structure.
PRUNING_KEY = "xprune_pruning"
FORMAT, VERSION = "xprune_nb.hf_pruned", 1
_WEIGHTS = "model.safetensors"
#: outputs of the stock rebuild must match the pruned model within this
TOLERANCE = 1e-5
_POISON = ("pruned by xprune_nb into a structure this config cannot describe (see "
           f"'{PRUNING_KEY}'): load this folder with xprune_nb.load_pruned(folder)")


def is_pretrained(model: object) -> bool:
    """True for a Hugging Face ``PreTrainedModel`` (checked without importing transformers)."""
    return any(c.__name__ == "PreTrainedModel" and c.__module__.startswith("transformers.")
               for c in type(model).__mro__)


from ...models.mechanisms.model_tools import call_model  # noqa: E402 - re-exported: one way to run a model on inputs


def _trace(model: nn.Module, x) -> torch.Tensor:
    from ...models.mechanisms.model_tools import trace_output

    return trace_output(call_model(model, x))


def input_spec(example) -> dict:
    """Shape (without the batch axis) and dtype of one input, or of each entry of a dict."""
    if isinstance(example, Mapping):
        return {"keys": {str(k): input_spec(v) for k, v in example.items()}}
    return {"shape": [int(d) for d in example.shape[1:]],
            "dtype": str(example.dtype).replace("torch.", "")}


def example_from(spec: dict, batch: int = 2):
    """A neutral input of ``spec`` (zeros; an ``attention_mask`` of ones) to trace a model."""
    if "keys" in spec:
        return {k: (torch.ones if k == "attention_mask" else torch.zeros)(
            batch, *v["shape"], dtype=getattr(torch, v["dtype"])) for k, v in spec["keys"].items()}
    dtype = getattr(torch, str(spec.get("dtype", "float32")), None)
    if not isinstance(dtype, torch.dtype):
        raise StudyFileError(f"load_pruned: unknown input dtype {spec.get('dtype')!r}")
    return torch.zeros(batch, *spec["shape"], dtype=dtype)


def _plain(value):
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, torch.Tensor):
        return _plain(value.tolist())
    return value.item() if hasattr(value, "item") and not isinstance(value, str) else value


def pruning_record(original: nn.Module, structure, masked, example) -> dict:
    """What :data:`PRUNING_KEY` holds for a model pruned by ``structure`` from ``original``.

    Head plans index the heads alive before each call, so the original indices kept are found
    by walking the plans in order.
    """
    from ...models.mechanisms.attention import find_heads
    from ...pruning.rebuild import structure_entry

    entries = [structure_entry(e) for e in structure]
    counts = {g.name: g.num_heads for g in find_heads(original)[0]}
    kept = {name: list(range(n)) for name, n in counts.items()}
    removed: list[str] = []
    for entry in entries:
        if entry["kind"] == "head":
            for name, idx in entry["plan"].items():
                gone = {int(i) for i in idx}
                kept[name] = [h for i, h in enumerate(kept[name]) if i not in gone]
        elif entry["kind"] == "block":
            removed += [str(n) for n in entry["plan"]["blocks"]]
    return {"format": FORMAT, "version": VERSION,
            "heads_kept": {n: k for n, k in kept.items() if len(k) != counts[n]},
            "num_heads": counts,
            "layers_removed": removed, "structure": _plain(entries),
            "masked": [str(m) for m in masked], "input": input_spec(example),
            "stock": False, "original_config": {}}


def _dense_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """State dict with pruning masks folded in (``weight = weight_orig * weight_mask``)."""
    state = model.state_dict()
    out = {}
    for key, value in state.items():
        base = key[:-5]
        if key.endswith("_orig") and base + "_mask" in state:
            out[base] = (value * state[base + "_mask"]).detach().clone()
        elif not (key.endswith("_mask") and base + "_orig" in state):
            out[key] = value.detach().clone()
    return out


def _unmasked_copy(model: nn.Module) -> nn.Module:
    from torch.nn.utils import prune

    from ...models.mechanisms.masks import masked_params
    from ...models.mechanisms.model_tools import copy_model

    net = copy_model(model, "Study.save_pretrained")
    net.__dict__.pop("save_pretrained", None)
    for module in net.modules():
        for param in masked_params(module):
            prune.remove(module, param)
    return net


def _layer_list(model: nn.Module, names: list[str], count) -> tuple[str, list[int]] | str:
    """The one layer list the removed layers come from, and their indices (or why not)."""
    parents = {n.rpartition(".")[0] for n in names}
    if len(parents) != 1 or not all(n.rpartition(".")[2].isdigit() for n in names):
        return "the removed blocks are not entries of one layer list"
    parent = parents.pop()
    layers = model.get_submodule(parent)
    if not isinstance(layers, nn.ModuleList) or len(layers) != count:
        return (f"{parent!r} is not the config's list of {count} layers")
    return parent, sorted(int(n.rpartition(".")[2]) for n in names)


def _stock(model: nn.Module, record: dict, example) -> tuple[nn.Module | None, str]:
    """A stock model (new config, renumbered weights) equal to ``model``, or None and why."""
    kinds = {e["kind"] for e in record["structure"]} - {"head", "block"}
    if kinds:
        return None, f"{'/'.join(sorted(kinds))} pruning changes widths layer by layer"
    config = copy.deepcopy(model.config)
    state = _dense_state(model)
    changed = {}
    if record["layers_removed"]:
        count = getattr(config, "num_hidden_layers", None)
        found = _layer_list(model, record["layers_removed"], count)
        if isinstance(found, str):
            return None, found
        parent, gone = found
        kept = [i for i in range(count) if i not in gone]
        new = {f"{parent}.{i}.": f"{parent}.{j}." for j, i in enumerate(kept)}
        state = {next((new[p] + k[len(p):] for p in new if k.startswith(p)), k): v
                 for k, v in state.items()}
        config.num_hidden_layers = len(kept)
        changed["num_hidden_layers"] = len(kept)
        for key, value in config.to_dict().items():
            if key.endswith("layer_types") and isinstance(value, list) and len(value) == count:
                setattr(config, key, [value[i] for i in kept])
    if record["heads_kept"]:
        gone = tuple(n + "." for n in record["layers_removed"])
        left = {len(record["heads_kept"].get(name, range(n)))
                for name, n in record["num_heads"].items() if not name.startswith(gone)}
        if len(left) != 1:
            return None, "heads were removed unevenly across layers"
        if not isinstance(config.to_dict().get("head_dim"), int):
            return None, ("the config has no head_dim, so its head count also sets the head "
                          "width")
        heads = left.pop()
        kv = getattr(config, "num_key_value_heads", None)
        if kv is not None and kv != config.num_attention_heads:
            return None, "grouped-query attention"
        config.num_attention_heads = heads
        if kv is not None:
            config.num_key_value_heads = heads
        changed["num_attention_heads"] = heads
    try:
        stock = type(model)(config).eval()
        missing, unexpected = stock.load_state_dict(state, strict=False)
    except (RuntimeError, ValueError, TypeError) as exc:
        return None, f"the stock model does not take these weights ({type(exc).__name__})"
    if unexpected or _untied(stock, missing):
        return None, "the stock model's parameters differ from the pruned model's"
    with torch.no_grad():
        a, b = _trace(model.eval(), example), _trace(stock, example)
    if a.shape != b.shape or float((a - b).abs().max()) > TOLERANCE:
        return None, "a stock model built from the shortened config gives other outputs"
    return stock, ""


def _untied(net: nn.Module, missing) -> list[str]:
    """Missing keys that are not tied to a loaded parameter (those are really missing)."""
    from ...models.mechanisms.model_tools import tied_parameters

    tied = {n for group in tied_parameters(net) for n in group}
    return [k for k in missing if k not in tied]


def _poison(raw: dict, record: dict) -> bool:
    """Make a stock load fail with a message that says what to call (see module doc)."""
    for candidate in _COUNT_FIELDS:
        if isinstance(raw.get(candidate), int) and not isinstance(raw[candidate], bool):
            record["original_config"][candidate] = raw[candidate]
            raw[candidate] = _POISON
            return True
    return False


#: config.json fields of the layer count, then of the head count (GPT-2 and DistilBERT style
#: names too); the first one present is the one a recorded folder overwrites
_COUNT_FIELDS = ("num_hidden_layers", "n_layer", "n_layers", "num_layers",
                 "num_attention_heads", "n_head", "n_heads", "num_heads")


def save_pretrained(model: nn.Module, path, *, record: dict, example,
                    call: str = "Study.save_pretrained") -> Path:
    """Write ``model`` (pruned as ``record`` says) as a Hugging Face folder (see module doc).

    Files are written to a temporary folder first and then moved into ``path`` one by one
    (each move is atomic); other files in ``path`` (a tokenizer's) are kept.
    """
    from ...core.atomic import as_path, move_into, write_text

    folder = as_path(path, call=call)
    if folder.exists() and not folder.is_dir():
        raise ConfigError.bad_value(call, "path", "a folder (new or existing)", str(path))
    if type(model).__name__ == "DynamicNet":
        raise ConfigError(f"{call}: the step's model is dynamic (input-adaptive: a trunk, an "
                          "early-exit branch and sliced paths), which no Hugging Face config "
                          "describes; save it with study.save_pruned(path) (xp.load_pruned "
                          "rebuilds it), or save a static step with save_pretrained(path, "
                          "step=...).")
    if not is_pretrained(model):
        raise ConfigError.bad_value(call, "model", "a Hugging Face PreTrainedModel",
                                    type(model).__name__)
    record = copy.deepcopy(record)
    changed = bool(record["structure"] or record["masked"])
    stock, why = (_stock(model, record, example) if changed else (None, ""))
    record["stock"] = not changed or stock is not None
    if why:
        record["why_not_stock"] = why
    net = stock if stock is not None else _unmasked_copy(model)
    net.config.__dict__[PRUNING_KEY] = record   # plain data: strict configs validate setattr
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        # the model's own parameter names (not the legacy names Hugging Face converts to by
        # default), so the recorded structure's weights load without its renaming rules
        type(net).save_pretrained(net, tmp, save_original_format=False)
        cfg = tmp / "config.json"
        raw = json.loads(cfg.read_text())
        if not record["stock"]:
            if not _poison(raw, record):   # no count field: hide the weights from a stock load
                move_into(tmp / _WEIGHTS, tmp / ("xprune_" + _WEIGHTS), call=call)
            raw[PRUNING_KEY] = record
        write_text(cfg, json.dumps(raw, indent=2, sort_keys=True) + "\n", call=call)
        folder.mkdir(exist_ok=True)
        for item in sorted(tmp.iterdir(), key=lambda p: p.name == "config.json"):
            move_into(item, folder / item.name, call=call)   # config last: it names weights
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        net.config.__dict__.pop(PRUNING_KEY, None)
    return folder


def save_study_pretrained(study, path, *, step: int | None = None) -> Path:
    """Save the current model (or that of ``step``) of a study on a Hugging Face model as a
    standard Hugging Face folder whose ``config.json`` records the pruned structure under
    ``"xprune_pruning"``; :func:`xprune_nb.load_pruned` rebuilds it (outputs equal within
    1e-5), and so does ``AutoModelFor...from_pretrained`` where the stock config can describe
    the structure (docs/huggingface.md says when). ``study.model.save_pretrained(path)`` does
    the same.

    Examples
    --------
    >>> import tempfile, torch, transformers, xprune_nb as xp
    >>> cfg = transformers.BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=2,
    ...                               num_attention_heads=4, intermediate_size=24)
    >>> ids = torch.randint(1, 40, (16, 6))
    >>> bert = transformers.BertForSequenceClassification(cfg)
    >>> study = xp.Study(bert, train=(ids, ids[:, 0] % 2))
    >>> _ = study.score("magnitude", granularity="head"); _ = study.prune(0.25)
    >>> model = xp.load_pruned(study.save_pretrained(tempfile.mkdtemp()))
    >>> bool((model(ids).logits - study.model(ids).logits).abs().max() < 1e-5)
    True
    """
    call = "Study.save_pretrained"
    if not is_pretrained(study.original):
        raise ConfigError.bad_value(call, "model", "a study on a Hugging Face PreTrainedModel "
                                    "(use study.save_pruned for other models)",
                                    type(study.original).__name__)
    index = study.current if step is None else study.timeline.index(step, call)
    model = study.model if index == study.current else study.model_at(index)
    s = study.history[index]
    record = pruning_record(study.original, s.structure, s.masked, study.timeline.example)
    return save_pretrained(model, path, record=record, example=study.timeline.example, call=call)


def _save_method(self, save_directory, *args, **kwargs):
    """``save_pretrained`` of a model pruned in a study: writes what ``study.save_pretrained``
    writes (extra arguments of Hugging Face's method are not supported here)."""
    record = self.__dict__["_xprune_pruning"]
    return save_pretrained(self, save_directory, record=record,
                           example=example_from(record["input"]),
                           call="model.save_pretrained")


def mark_pruned(model: nn.Module, original: nn.Module, structure, masked, example) -> None:
    """Give a pruned Hugging Face model a ``save_pretrained`` that writes a folder which
    loads right (the study's own); other models, and unpruned ones, are left as they are."""
    if not is_pretrained(model):
        return
    if not structure and not masked:
        model.__dict__.pop("save_pretrained", None)
        model.__dict__.pop("_xprune_pruning", None)
        return
    model.__dict__["_xprune_pruning"] = pruning_record(original, structure, masked, example)
    model.__dict__["save_pretrained"] = types.MethodType(_save_method, model)
