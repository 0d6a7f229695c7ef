"""Study methods for recipes and export (``recipe``, ``from_recipe``, ``export_script``,
``save_pruned``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

    from .recipe import Recipe


class ExportMixin:
    """Recipe and export methods of :class:`~xprune_nb.study.Study`."""

    def recipe(self, *, model: dict | None = None, data: dict | None = None) -> Recipe:
        """The recipe that rebuilds the current model: model and data sources, seed, and the
        score → prune → retrain steps on the path from the original model to the current step.

        Parameters
        ----------
        model : dict, optional
            Overrides of the detected model source, e.g. ``{"kwargs": {"hidden": 32}}`` (the
            constructor arguments of your class) or ``{"factory": "mypkg.nets:make"}``.
        data : dict, optional
            The data source when it is not a bundled dataset, e.g.
            ``{"factory": "mypkg.data:load"}``; by default your tensors are stored in a file
            next to the recipe when it is saved.

        Returns
        -------
        Recipe
            Save it with ``recipe.save("study.yaml")``; run it with
            ``xp.Study.from_recipe(...)`` or ``xprune-nb run study.yaml``.

        Examples
        --------
        >>> import xprune_nb as xp
        >>> study = xp.Study(xp.zoo.load("toy_mlp"), xp.datasets.load("moons"), seed=0)
        >>> _ = study.score("magnitude"); _ = study.prune(0.3)
        >>> [s.action for s in study.recipe().steps]
        ['score', 'prune']
        """
        from .export.from_study import study_recipe

        return study_recipe(self, model=model, data=data)

    @classmethod
    def from_recipe(cls, recipe, *, model: nn.Module | None = None, data=None,
                    epochs: int | None = None, progress: bool = True,
                    trust_source: bool = False, **study_options):
        """Build a study and replay a recipe on it.

        Parameters
        ----------
        recipe : Recipe, dict or path
            A :class:`~xprune_nb.recipe.Recipe`, its plain-data form, or a ``.yaml``/``.json``
            file.
        model : nn.Module, optional
            Use this model (with its weights) instead of the recipe's model source.
        data : optional
            Use this data instead of the recipe's data source.
        epochs : int, optional
            Override the number of epochs of every retraining.
        trust_source : bool
            A recipe may carry the source code of a notebook class; building it runs that code,
            so it must be allowed explicitly.
        **study_options
            Other :class:`Study` arguments (``max_snapshots``, ``probe_size``...).

        Under ``torchrun`` the retraining is data-parallel, and scoring and pruning run on rank
        0 and are broadcast (see :mod:`xprune_nb.distributed`).

        Examples
        --------
        >>> import xprune_nb as xp
        >>> study = xp.Study(xp.zoo.load("toy_mlp"), xp.datasets.load("moons"), seed=0)
        >>> _ = study.score("magnitude"); _ = study.prune(0.3)
        >>> again = xp.Study.from_recipe(study.recipe())
        >>> again.step.metrics["params"] == study.step.metrics["params"]
        True
        """
        from . import distributed
        from .errors import ConfigError
        from .export.replay import build_data, build_model, plan, run
        from .recipe import Recipe

        call = "Study.from_recipe"
        if isinstance(recipe, (str, Path)):
            recipe = Recipe.load(recipe)
        elif isinstance(recipe, dict):
            recipe = Recipe.from_dict(recipe, call=call)
        elif not isinstance(recipe, Recipe):
            raise ConfigError.bad_value(call, "recipe", "a Recipe, a dict or a file path",
                                        recipe)
        else:
            recipe.validate(call)
        net = model if model is not None else build_model(recipe, trust_source=trust_source,
                                                          call=call)
        bundle = data if data is not None else build_data(recipe, call)
        study = cls(net, bundle, seed=recipe.seed, **study_options)
        if model is None:
            study._recipe_model = {k: v for k, v in recipe.model.items() if k != "weights"}
        ops = plan(recipe, expand=distributed.world_size() > 1, epochs=epochs)
        return run(study, ops, progress=progress)

    def export_script(self, path: str | Path, *, model: dict | None = None,
                      data: dict | None = None) -> Path:
        """Write a standalone Python script that reproduces this study's current model.

        The script rebuilds the original model, loads its weights, runs the recorded steps,
        evaluates, and writes ``model.pt``, ``recipe.yaml`` and ``metrics.json`` into
        ``--out``. Run it with ``python SCRIPT --out DIR [--epochs N] [--device cpu|cuda]`` or
        ``torchrun --nproc_per_node=2 SCRIPT --out DIR``. When the original weights are not
        the zoo's shipped ones (or the data is not a bundled dataset), they are written next
        to the script as ``<name>.weights.pt`` (and ``<name>.data.pt``).

        ``model`` and ``data`` are as in :meth:`recipe`. Returns the script's path.

        Examples
        --------
        >>> import tempfile, xprune_nb as xp
        >>> study = xp.Study(xp.zoo.load("toy_mlp"), xp.datasets.load("moons"), seed=0)
        >>> _ = study.score("magnitude"); _ = study.prune(0.3)
        >>> path = study.export_script(tempfile.mkdtemp() + "/prune_toy.py")
        >>> path.name
        'prune_toy.py'
        """
        from .export.script import write_script

        return write_script(self.recipe(model=model, data=data), path, study=self)

    def save_pruned(self, path: str | Path, *, step: int | None = None,
                    kwargs: dict | None = None) -> Path:
        """Save the current model (or that of ``step``) for :func:`xprune_nb.load_pruned`.

        The file holds plain tensors and data only (readable with
        ``torch.load(weights_only=True)``): the original class's import path and constructor
        arguments (``kwargs``; known for zoo models and models built from a recipe), the
        structural plans, the masked layers, the input shape and the weights.

        Examples
        --------
        >>> import tempfile, xprune_nb as xp
        >>> study = xp.Study(xp.zoo.load("toy_mlp"), xp.datasets.load("moons"), seed=0)
        >>> _ = study.score("magnitude"); _ = study.prune(0.5)
        >>> model = xp.load_pruned(study.save_pruned(tempfile.mkdtemp() + "/model.pt"))
        >>> model.head.in_features < study.original.head.in_features
        True
        """
        from .export.checkpoint import architecture_of, save_pruned

        index = self.current if step is None else self._index(step, "Study.save_pruned")
        model = self.model if index == self.current else self.model_at(index)
        s = self.history[index]
        if kwargs is None:
            known = getattr(self, "_recipe_model", None) or {}
            cls = type(self.original)
            # a factory function's arguments are not the class's: only keep the class's own
            same = "source" in known or known.get("factory") == (
                f"{cls.__module__}:{cls.__qualname__}")
            kwargs = known.get("kwargs", {}) if same else {}
        return save_pruned(model, path, structure=s.structure, masked=s.masked,
                           input_shape=self.data.input_shape,
                           architecture=architecture_of(self.original, kwargs),
                           metrics=s.metrics, input_dtype=self.data.train.X.dtype)
