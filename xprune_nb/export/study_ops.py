"""The services behind ``Study.from_recipe`` and ``Study.save_pruned``."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from ..core.errors import ConfigError

__all__ = ["study_from_recipe", "save_study_model", "export_study_script"]


def study_from_recipe(cls, recipe, *, model: nn.Module | None = None, data=None,
                      epochs: int | None = None, progress=True, trust_source: bool = False,
                      **study_options):
    """Build a ``cls`` study from ``recipe`` and replay its steps (see ``Study.from_recipe``)."""
    from ..record import distributed
    from ..record.recipe import Recipe
    from ..record.recipe.replay import build_data, build_model, plan, run

    call = "Study.from_recipe"
    if not isinstance(trust_source, bool):
        raise ConfigError.bad_value(call, "trust_source", "True or False", trust_source)
    if isinstance(recipe, (str, Path)):
        recipe = Recipe.load(recipe)
    elif isinstance(recipe, dict):
        recipe = Recipe.from_dict(recipe, call=call)
    elif not isinstance(recipe, Recipe):
        raise ConfigError.bad_value(call, "recipe", "a Recipe, a dict or a file path", recipe)
    else:
        recipe.validate(call)
    net = model if model is not None else build_model(recipe, trust_source=trust_source,
                                                      call=call)
    from ..record.recipe.groups import recipe_group_options

    bundle = data if data is not None else build_data(recipe, call, trust_source=trust_source)
    # the recipe's sensitive groups, named as in the study (unless given here)
    study_options.update(recipe_group_options(recipe, bundle, call, study_options))
    # the recorded sample sizes, unless the caller gives their own
    study = cls(net, bundle, seed=recipe.seed, **{**recipe.sampling, **study_options})
    if model is None:
        study.model_spec = {k: v for k, v in recipe.model.items() if k != "weights"}
    ops = plan(recipe, expand=distributed.world_size() > 1, epochs=epochs)
    run(study, ops, progress=progress)
    if recipe.groups and recipe.groups.get("limits"):   # auto_prune's group limit, re-checked
        from ..record.recipe.groups import replay_group_limits

        replay_group_limits(study, recipe.groups["limits"], call)
    return study


def save_study_model(study, path, *, step: int | None = None, kwargs: dict | None = None
                     ) -> Path:
    """Save the current model (or that of ``step``) for :func:`xprune_nb.load_pruned`.

    The file holds plain tensors and data only (readable with ``torch.load(weights_only=True)``):
    the original class's import path and constructor arguments (``kwargs``; known for zoo
    models and models built from a recipe), the structural changes, the masked layers, the
    input shape and the weights. Written atomically.

    Examples
    --------
    >>> import tempfile, xprune_nb as xp
    >>> study = xp.Study(xp.zoo.load("toy_mlp"), xp.datasets.load("moons"), seed=0)
    >>> _ = study.score("magnitude"); _ = study.prune(0.5)
    >>> model = xp.load_pruned(study.save_pruned(tempfile.mkdtemp() + "/model.pt"))
    >>> model.head.in_features < study.original.head.in_features
    True
    """
    from ..record.io.checkpoint import architecture_of, save_pruned

    index = study.current if step is None else study.timeline.index(step, "Study.save_pruned")
    model = study.model if index == study.current else study.model_at(index)
    s = study.history[index]
    if kwargs is None:
        known = study.model_spec or {}
        cls = type(study.original)
        # a factory function's arguments are not the class's: only keep the class's own
        same = "source" in known or known.get("factory") == f"{cls.__module__}:{cls.__qualname__}"
        kwargs = known.get("kwargs", {}) if same else {}
    from collections.abc import Mapping

    from ..record.io.pretrained import input_spec

    example = study.data.example(1)
    named = isinstance(example, Mapping)
    first = next(iter(example.values())) if named else example
    return save_pruned(model, path, structure=s.structure, masked=s.masked,
                       input_shape=study.data.input_shape,
                       architecture=architecture_of(study.original, kwargs),
                       metrics=s.metrics, input_dtype=first.dtype,
                       inputs=input_spec(example) if named else None)


def export_study_script(study, path, *, model: dict | None = None, data: dict | None = None,
                        deploy: bool = False, contract: bool = False) -> Path:
    """Write a standalone Python script that reproduces the current model.

    The script rebuilds the original model, loads its weights, runs the recorded steps,
    evaluates, and writes ``model.pt``, ``recipe.yaml`` and ``metrics.json`` into ``--out``:
    ``python SCRIPT --out DIR [--epochs N] [--device cpu|cuda]`` or ``torchrun
    --nproc_per_node=2 SCRIPT --out DIR``. Weights and data that are not bundled are written
    next to it (``<name>.weights.pt``, ``<name>.data.pt``). No user string is pasted as code.
    ``model`` and ``data`` are as in :meth:`Study.recipe`. ``deploy=True`` also writes
    ``model.onnx`` (BatchNorm folded; the ``deploy`` extra) and, for masked models, a
    compressed ``model.xpz``; ``contract=True`` writes ``test_model_contract.py``, a pytest file
    for your CI that fails when the exported model's accuracy or explanation drift on the
    study's probe leaves the bounds measured now.

    Examples
    --------
    >>> import tempfile, xprune_nb as xp
    >>> study = xp.Study(xp.zoo.load("toy_mlp"), xp.datasets.load("moons"), seed=0)
    >>> _ = study.score("magnitude"); _ = study.prune(0.3)
    >>> study.export_script(tempfile.mkdtemp() + "/prune_toy.py").name
    'prune_toy.py'
    """
    from ..core.params import Options, check
    from ..record.recipe.from_study import study_recipe
    from .script import write_script

    for name, flag in (("deploy", deploy), ("contract", contract)):   # 'yes' is not True
        check("Study.export_script", name, flag, Options((True, False)))
    return write_script(study_recipe(study, model=model, data=data), path, study=study,
                        deploy=deploy, contract=contract)
