"""Which layers are columns of the map, and which original unit each unit of a pruned model is.

Channel maps use the prunable layers of the ``channel`` unit kind plus the output layer (its
units are the classes). Head maps use the attention modules whose heads the ``head`` kind
finds, plus the output layer. Units are named by their index in the *original* model, so a map
of a pruned model lines up with the original's: each layer's rows (channel maps) or each
head's output-projection columns (head maps) of a copy of the original are tagged with their
index, the recorded structural changes of the step are replayed on that copy
(:func:`xprune_nb.record.timeline.rebuild`), and the tags that survive say which units are left.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ...core.errors import ConfigError, ModelError
from .flow import NodeSpec

__all__ = ["GRANULARITIES", "node_specs", "original_ids", "check_supported"]

GRANULARITIES = ("channel", "head")

_RECURRENT = (nn.RNNBase, nn.RNNCellBase)


def check_supported(model: nn.Module, call: str) -> None:
    """Refuse recurrent models before any work (see the flow module's docstring)."""
    found = [n for n, m in model.named_modules() if isinstance(m, _RECURRENT)]
    if found:
        raise ModelError(
            f"{call}: the model has recurrent layers ({', '.join(found[:3])}); pathways need "
            "a conservative LRP rule for every layer between two columns, and zennit has none "
            "for LSTM/GRU gates (relevance through gated recurrences needs a dedicated rule, "
            "Arras et al. 2017), so a relevance-flow map would not add up. Use "
            "study.why(...) or study.saliency(...) for recurrent models.")


def _converted(model: nn.Module) -> nn.Module:
    """The model as the flow sees it: ``nn.MultiheadAttention`` replaced by module-based
    attention (a copy; the study's model is never changed)."""
    if not any(isinstance(m, nn.MultiheadAttention) for m in model.modules()):
        return model
    from ...models.mechanisms.attention.sdpa import convert_mha

    clone = copy.deepcopy(model)
    convert_mha(clone)
    return clone


def _out_units(module: nn.Module) -> int:
    return int(getattr(module, "out_channels", getattr(module, "out_features", 0)))


def node_specs(model: nn.Module, env, granularity: str, call: str) -> list[NodeSpec]:
    """The columns for ``model`` (a model of the study) at ``granularity``."""
    from ...pruning import units as _units

    outputs = [n for n in env.output_layers]
    seen = _converted(model)
    modules = dict(seen.named_modules())
    specs: list[NodeSpec] = []
    if granularity == "channel":
        kind = _units.get("channel", call)
        found = kind.find(model, env, prune_output=False)
        layers = [n for n in found.layers if n not in outputs]
        if not layers:
            raise ModelError(kind.nothing_found(found, call))
        specs = [NodeSpec(n, n, "out", _out_units(modules[n])) for n in layers]
    elif granularity == "head":
        from ...models.mechanisms.attention.discovery import find_heads

        groups, skipped = find_heads(seen, single=True)
        if not groups:
            why = f" ({skipped})" if skipped else ""
            raise ModelError(f"{call}(granularity='head'): the model has no attention heads"
                             f"{why}; use granularity='channel'.")
        specs = [NodeSpec(g.name, g.out_proj, "heads", g.num_heads, g.num_heads)
                 for g in groups]
    else:
        raise ConfigError.unknown_name(call, "granularity", GRANULARITIES, granularity)
    specs += [NodeSpec(n, n, "out", _out_units(modules[n])) for n in outputs if n in modules]
    return specs


def _tag_rows(model: nn.Module, names: list[str]) -> None:
    with torch.no_grad():
        for name in names:
            w = model.get_submodule(name).weight
            tags = torch.arange(1, w.shape[0] + 1, dtype=w.dtype)
            w.copy_(tags.reshape(-1, *([1] * (w.dim() - 1))).expand_as(w))


def _tag_heads(model: nn.Module, groups) -> None:
    with torch.no_grad():
        for g in groups:
            w = model.get_submodule(g.out_proj).weight
            tags = torch.arange(1, g.num_heads + 1, dtype=w.dtype).repeat_interleave(
                w.shape[1] // g.num_heads)
            w.copy_(tags.unsqueeze(0).expand_as(w))


def original_ids(study, index: int, granularity: str,
                 layers: list[str]) -> dict[str, list[int] | None]:
    """Original index of each unit alive at step ``index``, per layer (``None``: the layer is
    gone, e.g. its block was removed). Layers the step never changed map to themselves."""
    from ...pruning.rebuild import rebuild

    step = study.history[index]
    structural = [s for s in step.structure if isinstance(s, dict)]
    out: dict[str, list[int] | None] = {}
    if not structural:
        return {name: list(range(_size(study.original, name, granularity))) for name in layers}
    tagged = _converted(copy.deepcopy(study.original))
    if granularity == "head":
        from ...models.mechanisms.attention.discovery import find_heads

        groups = {g.name: g for g in find_heads(tagged, single=True)[0]}
        _tag_heads(tagged, [groups[n] for n in layers if n in groups])
    else:
        _tag_rows(tagged, [n for n in layers if _has(tagged, n)])
    rebuilt = rebuild(tagged, step.structure, [], study.env.example, study.forward)
    rebuilt = _converted(rebuilt)
    if granularity == "head":
        from ...models.mechanisms.attention.discovery import find_heads

        groups = {g.name: g for g in find_heads(rebuilt, single=True)[0]}
    for name in layers:
        if granularity == "head":
            g = groups.get(name)
            if g is None:
                out[name] = None if not _has(rebuilt, name) else []
                continue
            w = rebuilt.get_submodule(g.out_proj).weight
            width = w.shape[1] // g.num_heads
            out[name] = [int(round(float(v))) - 1 for v in w.detach()[0, ::width]]
        elif not _has(rebuilt, name):
            out[name] = None
        else:
            w = rebuilt.get_submodule(name).weight.detach()
            out[name] = [int(round(float(v))) - 1 for v in w.reshape(w.shape[0], -1)[:, 0]]
    return out


def _has(model: nn.Module, name: str) -> bool:
    try:
        model.get_submodule(name)
        return True
    except AttributeError:
        return False


def _size(model: nn.Module, name: str, granularity: str) -> int:
    model = _converted(model)
    if granularity == "head":
        from ...models.mechanisms.attention.discovery import find_heads

        for g in find_heads(model, single=True)[0]:
            if g.name == name:
                return g.num_heads
        return 0
    return _out_units(model.get_submodule(name))
