"""Run a recipe: build its model and data, then replay its steps on a Study.

:func:`plan` turns the recipe's steps into the exact calls to make (the same list drives
``Study.from_recipe`` and the code of exported scripts, so both do the same thing), and
:func:`run` makes them: under ``torchrun``, scoring and pruning on rank 0 only, followed by a
broadcast of the result; retraining on every rank (data-parallel).
"""

from __future__ import annotations

import types
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ...core.errors import ConfigError, DataError, StudyFileError
from ...core.reading import check_finite_state, read_torch_file
from ..io.resolver import TRUST_HINT, check_plain_kwargs, resolve_factory
from .core import Recipe, _plain

__all__ = ["Op", "plan", "run", "build_model", "build_data", "as_bundle"]

IN_MEMORY = "(in memory; written by Recipe.save)"


@dataclass
class Op:
    """One call to make on the study: ``getattr(study, action)(**params)``."""

    action: str
    params: dict[str, Any] = field(default_factory=dict)
    #: False for retraining (every rank takes part); True for scoring and pruning (rank 0)
    on_main: bool = True


def _kwargs(spec: dict, call: str, param: str) -> dict:
    # checked again here (a Recipe can be changed after validation); tuples of an in-memory
    # recipe stay tuples, as the user's own code gave them
    kwargs = spec.get("kwargs") or {}
    check_plain_kwargs(_plain(kwargs), call=call, param=param, error=ConfigError)
    return dict(kwargs)


def _load_weights(recipe: Recipe, model: nn.Module, call: str) -> None:
    state = recipe.model_state
    weights = recipe.model.get("weights")
    if state is None and weights:
        path = recipe.resolve(weights)
        state = read_torch_file(path, call=f"{call}(model.weights=...)", kind="state dict")
        if not isinstance(state, dict):
            raise StudyFileError(f"{call}(model.weights=...): {str(path)!r} is not a state "
                                 "dict (a mapping of tensor names to tensors).")
        check_finite_state(state, path=path, call=f"{call}(model.weights=...)",
                           where="the weights")
    if state is not None:
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise StudyFileError(f"{call}(model.weights=...): the weights do not fit the model: "
                                 f"{' '.join(str(exc).split())[:300]}") from exc


def build_model(recipe: Recipe, *, trust_source: bool = False,
                call: str = "Study.from_recipe") -> nn.Module:
    """The recipe's original model, with its weights.

    Zoo models build by themselves, and so do Hugging Face models (``{"transformers": class
    name, "config": plain config}``: only classes of the transformers package). A factory
    (``"package.module:callable"``) or a model given
    as source code runs code, so it needs ``trust_source=True``; nothing is imported without
    it. A factory must return an ``nn.Module``, and its arguments must be plain values.
    """
    spec = recipe.model
    if "zoo" in spec:
        from ...models import zoo

        model = zoo.load(spec["zoo"], pretrained=not spec.get("weights") and (
            recipe.model_state is None))
    elif "factory" in spec:
        factory = resolve_factory(spec["factory"], trust_source=trust_source, call=call,
                                  param="model.factory")
        model = factory(**_kwargs(spec, call, "model.kwargs"))
    elif "transformers" in spec:   # a transformers class from plain config data: no trust needed
        from ..io.pretrained_load import build_pretrained

        model = build_pretrained(spec["transformers"], spec["config"], call=call)
    else:
        if not trust_source:
            raise ConfigError(
                f"{call}(model.source=...): this recipe carries the model's source code, and "
                f"building the model runs it. Pass {TRUST_HINT} if you trust the recipe, or "
                "pass model=<an instance>.")
        # a module of its own, so the classes do not land in (or clash with) the caller's
        module = types.ModuleType("xprune_nb_recipe_model")
        exec(compile(spec["source"], "<recipe model.source>", "exec"), module.__dict__)
        cls = module.__dict__.get(spec["class_name"])
        if not isinstance(cls, type) or not issubclass(cls, nn.Module):
            raise ConfigError.bad_value(call, "model.class_name",
                                        "an nn.Module class defined in model.source",
                                        spec["class_name"])
        model = cls(**_kwargs(spec, call, "model.kwargs"))
    if not isinstance(model, nn.Module):
        raise ConfigError.bad_value(call, "model", "a factory returning a torch.nn.Module",
                                    type(model).__name__)
    _load_weights(recipe, model, call)
    return model.eval()


def as_bundle(data):
    """What a data factory returns, as something :class:`Study` takes as ``data``: a
    DataBundle (or any object with ``train``/``val``/``test``) as is, a ``(train, val, test)``
    tuple or a ``{"train": ..., "val": ..., "test": ...}`` dict wrapped.

    Examples
    --------
    >>> import torch
    >>> split = (torch.zeros(4, 2), torch.tensor([0, 1, 0, 1]))
    >>> as_bundle((split, split, split)).val.X.shape
    torch.Size([4, 2])
    """
    from ...data import bundle

    if isinstance(data, (tuple, list)) and len(data) == 3:
        return bundle(*data, call="data factory")
    if isinstance(data, dict):
        return bundle(**data, call="data factory")
    return data


def build_data(recipe: Recipe, call: str = "Study.from_recipe", *,
               trust_source: bool = False):
    """The recipe's data: a DataBundle, or an object with ``train``/``val``/``test``.

    Bundled datasets and tensor files load by themselves; a data factory runs code, so it
    needs ``trust_source=True`` (nothing is imported without it).
    """
    spec = recipe.data
    if "dataset" in spec:
        from ...data import public as datasets

        options = dict(spec.get("options", {}))
        try:
            return datasets.load(spec["dataset"], **options)
        except TypeError as exc:
            raise ConfigError(f"{call}(data.options=...): {exc}") from exc
    if "factory" in spec:
        factory = resolve_factory(spec["factory"], trust_source=trust_source, call=call,
                                  param="data.factory")
        return as_bundle(factory(**_kwargs(spec, call, "data.kwargs")))
    if "argument" in spec:
        raise ConfigError(f"{call}(data=...): this recipe's data is passed when it is replayed "
                          f"({spec['argument']!r}): give it as data=... (a script takes "
                          "--data FILE).")
    stored = recipe.data_splits
    if stored is None:
        path = recipe.resolve(spec["file"])
        stored = read_torch_file(path, call=f"{call}(data.file=...)", kind="data")
    from ...data import bundle

    try:
        splits = {k: (v["X"], v["y"], v["groups"]) if v.get("groups") is not None else (
            v["X"], v["y"]) for k, v in stored.items() if k in ("train", "val", "test")}
        return bundle(**splits, **stored.get("meta", {}), call=f"{call}(data.file=...)")
    except (KeyError, TypeError, AttributeError) as exc:
        raise DataError(f"{call}(data.file=...): the data file is damaged ({exc}).") from exc


def plan(recipe: Recipe, *, expand: bool = False, epochs: int | None = None) -> list[Op]:
    """The calls that replay ``recipe`` on a fresh study.

    With ``expand``, an iterative ``prune`` that retrains between rounds is written as its
    rounds (score → prune one round → retrain), so that the retraining can run on every rank
    while scoring and pruning stay on rank 0. The rounds are the very computations the single
    call makes, with the retraining seeds it would use.
    """
    from ...pruning.schedules import step_fractions

    if epochs is not None:
        recipe = recipe.with_epochs(epochs)
    ops: list[Op] = []
    index = 1          # history index of the next step; step 0 is the original model
    recipe = _without_new_defaults(recipe)
    last_score: dict = {}
    for step in recipe.steps:
        p = dict(step.params)
        if step.action == "score":
            last_score = p
            ops.append(Op("score", p))
        elif step.action == "retrain":
            ops.append(Op("retrain", {**p, "seed": p.get("seed", recipe.seed + index)}, False))
            index += 1
        elif step.action == "dynamic":
            ops.append(Op("dynamic", p))
            index += 1
        elif not (expand and p.get("retrain")):
            ops.append(Op("prune", p))
            n = p.get("steps", 1)
            index += n * (2 if p.get("retrain") else 1)
        else:
            n = p.get("steps", 1)
            fractions = step_fractions(p["amount"], n, p.get("schedule", "linear"))
            la = {k: 1 - (1 - v) ** (1 / n) for k, v in p.get("layer_amounts", {}).items()}
            for i, frac in enumerate(fractions):
                if i > 0:  # Study.prune re-scores with the same options (batch size default)
                    ops.append(Op("score", {k: v for k, v in last_score.items()
                                            if k != "batch_size"}))
                ops.append(Op("prune", {**{k: v for k, v in p.items() if k != "retrain"},
                                        "amount": frac, "steps": 1, "layer_amounts": la}))
                index += 1
                r = dict(p["retrain"])
                ops.append(Op("retrain", {**r, "seed": r.get("seed", recipe.seed + index)},
                              False))
                index += 1
    return ops


def _without_new_defaults(recipe: Recipe) -> Recipe:
    """``recipe`` with ``recalibrate: False`` in every retraining that does not say: recipes
    written before BatchNorm recalibration after retraining existed replay exactly as before
    (new studies record the setting, so theirs replay as they ran)."""
    import copy

    recipe = copy.deepcopy(recipe)
    for step in recipe.steps:
        if step.action == "retrain":
            step.params.setdefault("recalibrate", False)
        elif step.action == "prune" and step.params.get("retrain"):
            step.params["retrain"].setdefault("recalibrate", False)
    return recipe


def run(study, ops: list[Op], *, progress: bool = True):
    """Make the calls ``ops`` on ``study``; under torchrun, rank 0 scores and prunes."""
    from .. import distributed

    pending_sync = False
    for op in ops:
        if op.on_main:
            if distributed.is_main():
                getattr(study, op.action)(**op.params)
            pending_sync = True
            continue
        if pending_sync:
            distributed.broadcast_study(study)
            pending_sync = False
        study.retrain(**op.params, progress=progress)
    if pending_sync:
        distributed.broadcast_study(study)
    return study
