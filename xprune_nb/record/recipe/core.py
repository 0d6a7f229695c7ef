"""Recipes: the ordered steps of a study, its model, data and seed, as a file anyone can rerun.

A recipe is plain data (the schema is documented in ``docs/recipes.md``)::

    format: xprune_nb.record.recipe
    version: 1
    seed: 0
    model: {zoo: digits_cnn}
    data: {dataset: digits, options: {seed: 0, val_size: 0.2, test_size: 0.2}}
    steps:
    - score: {criterion: taylor, granularity: channel, samples: 128}
    - prune: {amount: 0.3}
    - retrain: {epochs: 2, lr: 0.001, seed: 3}

Validation is eager and strict: an unknown key is an error (a misspelt ``amout`` silently ignored
would reproduce a different study), and every message names the step and the field.

Examples
--------
>>> from xprune_nb.record.recipe import Recipe
>>> r = Recipe.from_dict({"model": {"zoo": "toy_mlp"}, "data": {"dataset": "moons"},
...                       "steps": [{"score": {"criterion": "magnitude"}},
...                                 {"prune": {"amount": 0.5}}]})
>>> [s.action for s in r.steps]
['score', 'prune']
>>> Recipe.from_dict({"model": {"zoo": "toy_mlp"}, "data": {"dataset": "moons"},
...                   "steps": [{"prune": {"amout": 0.5}}]})
Traceback (most recent call last):
...
xprune_nb.core.errors.ConfigError: Recipe(steps[0].prune=...): unknown name 'amout'; valid names are
...
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...core.errors import ConfigError, StudyFileError
from .schema import (
    _STEP_CHECKS,
    _TOP_KEYS,
    _check,
    _check_data,
    _check_description,
    _check_groups,
    _check_model,
    _check_sampling,
    _int,
    _known,
    _pos_int,
    is_import_path,
)

__all__ = ["Recipe", "StepConfig", "FORMAT", "VERSION", "ACTIONS", "is_import_path"]

FORMAT = "xprune_nb.record.recipe"
VERSION = 1
ACTIONS = ("score", "prune", "retrain", "dynamic")


def _plain(value):
    """A deep copy with tuples as lists: what YAML and JSON can hold."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return copy.deepcopy(value)


@dataclass
class StepConfig:
    """One step of a recipe: ``action`` (``score``, ``prune`` or ``retrain``) and the keyword
    arguments of the matching :class:`~xprune_nb.Study` method.

    Examples
    --------
    >>> StepConfig("prune", {"amount": 0.3}).to_dict()
    {'prune': {'amount': 0.3}}
    """

    action: str
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {self.action: copy.deepcopy(self.params)}

    @classmethod
    def from_dict(cls, d, *, call: str = "Recipe", where: str = "steps[0]") -> StepConfig:
        if not isinstance(d, dict) or len(d) != 1:
            raise ConfigError.bad_value(call, where, "a mapping with one key, the action "
                                        f"({', '.join(ACTIONS)})", d)
        (action, params), = d.items()
        if action not in ACTIONS:
            raise ConfigError.unknown_name(call, f"{where} action", ACTIONS, action)
        params = {} if params is None else params
        _STEP_CHECKS[action](params, call, f"{where}.{action}")
        return cls(action, copy.deepcopy(params))


@dataclass
class Recipe:
    """The ordered steps of a study, its model and data sources, and its seed.

    Parameters
    ----------
    model : dict
        ``{"zoo": name}``, ``{"factory": "pkg.module:callable", "kwargs": {...}}`` or
        ``{"source": code, "class_name": name, "kwargs": {...}}``; each with an optional
        ``"weights"`` file (a state dict; relative paths are relative to the recipe file).
    data : dict
        ``{"dataset": name, "options": {...}}``, ``{"factory": "pkg.module:callable",
        "kwargs": {...}}`` (returning a DataBundle or a ``(train, val, test)`` tuple) or
        ``{"file": path}`` (tensors written by :meth:`save`) or ``{"argument": what}`` (the
        data is passed when replaying: ``Study.from_recipe(data=...)``, a script's ``--data``).
    steps : list of StepConfig
    seed : int
    sampling : dict
        The study's seeded sample sizes, replayed as given: ``eval_samples``,
        ``score_samples``, ``probe_size`` (each a positive integer or ``"all"``).
    data_description : dict, optional
        What the data was (``DataBundle.describe()``: source, split types and sizes); it is
        informative only, so a recipe never holds a copy of a large data set.
    groups : dict, optional
        ``{"names": [...], "file": path}``: the study's sensitive groups (docs/groups.md);
        ``file`` holds the labels unless the data brings them (see
        :mod:`xprune_nb.record.recipe.groups`).

    Notes
    -----
    ``model_state`` / ``data_splits`` / ``group_labels`` hold weights, data and group labels
    in memory (from :meth:`Study.recipe`) until :meth:`save` writes them next to the recipe.

    Examples
    --------
    >>> import xprune_nb as xp
    >>> study = xp.Study(xp.zoo.load("toy_mlp"), xp.datasets.load("moons"), seed=0)
    >>> _ = study.score("magnitude"); _ = study.prune(0.25)
    >>> recipe = study.recipe()
    >>> recipe.model, [s.action for s in recipe.steps], recipe.steps[1].params["amount"]
    ({'zoo': 'toy_mlp'}, ['score', 'prune'], 0.25)
    >>> Recipe.from_dict(recipe.to_dict()) == recipe
    True
    """

    model: dict
    data: dict
    steps: list[StepConfig] = field(default_factory=list)
    seed: int = 0
    version: int = VERSION
    sampling: dict = field(default_factory=dict)
    data_description: dict | None = field(default=None, compare=False, repr=False)
    groups: dict | None = None
    base_dir: Path | None = field(default=None, compare=False, repr=False)
    model_state: dict | None = field(default=None, compare=False, repr=False)
    data_splits: dict | None = field(default=None, compare=False, repr=False)
    group_labels: dict | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self, call: str = "Recipe") -> Recipe:
        """Check every field; raise :class:`ConfigError` naming the step and field."""
        _check(_int(self.seed), call, "seed", "an integer", self.seed)
        _check(self.version == VERSION, call, "version", f"{VERSION}", self.version)
        _check_model(self.model, call)
        _check_data(self.data, call)
        _check_sampling(self.sampling, call)
        _check_description(self.data_description, call)
        _check_groups(self.groups, call)
        steps = []
        for i, s in enumerate(self.steps):
            d = s.to_dict() if isinstance(s, StepConfig) else s
            steps.append(StepConfig.from_dict(d, call=call, where=f"steps[{i}]"))
        scored = False
        for i, s in enumerate(steps):
            if s.action == "prune" and not scored:
                raise ConfigError(f"{call}(steps[{i}].prune=...): a prune step needs a score "
                                  "step before it (after the last prune or retrain).")
            scored = s.action == "score"
        self.steps = steps
        return self

    # ------------------------------------------------------------------ plain data
    def to_dict(self) -> dict:
        """The recipe as plain data (what the YAML and JSON files hold)."""
        out = {"format": FORMAT, "version": self.version, "seed": self.seed,
               "model": self.model, "data": self.data}
        if self.sampling:
            out["sampling"] = self.sampling
        if self.data_description:
            out["data_description"] = self.data_description
        if self.groups is not None:   # only for a study with groups: older recipes unchanged
            out["groups"] = self.groups
        return _plain({**out, "steps": [s.to_dict() for s in self.steps]})

    @classmethod
    def from_dict(cls, d, *, call: str = "Recipe", base_dir: str | Path | None = None
                  ) -> Recipe:
        """Build and validate a recipe from plain data (unknown keys are errors)."""
        from ...core.limits import check_size

        check_size(d, call=call, param="recipe")   # bounded before anything walks it
        _known(d, _TOP_KEYS, call, "recipe", required=("model", "data"))
        if d.get("format", FORMAT) != FORMAT:
            raise ConfigError.bad_value(call, "format", repr(FORMAT), d["format"])
        steps = d.get("steps") or []
        _check(isinstance(steps, list), call, "steps", "a list of steps", steps)
        recipe = cls.__new__(cls)
        recipe.model, recipe.data = copy.deepcopy(d["model"]), copy.deepcopy(d["data"])
        recipe.steps, recipe.seed = list(steps), d.get("seed", 0)
        recipe.version = d.get("version", VERSION)
        recipe.sampling = copy.deepcopy(d.get("sampling") or {})
        recipe.data_description = copy.deepcopy(d.get("data_description"))
        recipe.groups = copy.deepcopy(d.get("groups"))
        recipe.base_dir = Path(base_dir) if base_dir is not None else None
        recipe.model_state = recipe.data_splits = recipe.group_labels = None
        return recipe.validate(call)

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None,
                              width=88)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def __str__(self) -> str:
        return self.to_yaml()

    def _repr_html_(self) -> str:
        import html

        return f"<b>Recipe</b> ({len(self.steps)} steps)<pre>{html.escape(self.to_yaml())}</pre>"

    # ------------------------------------------------------------------ files
    def resolve(self, path: str) -> Path:
        """A path of the recipe (weights, data file), relative to the recipe file's folder."""
        p = Path(path).expanduser()
        return p if p.is_absolute() or self.base_dir is None else self.base_dir / p

    def save(self, path: str | Path) -> Path:
        """Write the recipe as YAML (``.yaml``/``.yml``) or JSON (``.json``).

        Weights, data and group labels held in memory are written next to it as
        ``<stem>.weights.pt``, ``<stem>.data.pt`` and ``<stem>.groups.pt`` (plain tensors,
        readable with ``torch.load(weights_only=True)``)
        and referenced by relative path. Returns the recipe's path.
        """
        from ...core.atomic import as_path, check_target, torch_save, write_text

        path = as_path(path, call="Recipe.save")
        suffix = path.suffix.lower()
        if suffix not in (".yaml", ".yml", ".json"):
            raise ConfigError.bad_value("Recipe.save", "path",
                                        "a file name ending in .yaml, .yml or .json", str(path))

        call = "Recipe.save"
        check_target(path, call=call)  # a folder or a device: refused before any side file
        # a plain copy without the in-memory tensors: they go to their own files
        out = Recipe.from_dict(self.to_dict(), call=call, base_dir=self.base_dir)
        # each file is replaced atomically: a failure leaves the previous one intact
        if self.model_state is not None:
            weights = path.with_name(path.stem + ".weights.pt")
            torch_save({k: v.detach().cpu() for k, v in self.model_state.items()}, weights,
                       call=call)
            out.model["weights"] = weights.name
        elif out.model.get("weights"):
            out.model["weights"] = str(self.resolve(out.model["weights"]).resolve())
        if self.data_splits is not None:
            data = path.with_name(path.stem + ".data.pt")
            torch_save(self.data_splits, data, call=call)
            out.data = {"file": data.name}
        elif "file" in out.data:
            out.data["file"] = str(self.resolve(out.data["file"]).resolve())
        if self.group_labels is not None and self.groups:
            from .groups import groups_payload

            labels = path.with_name(path.stem + ".groups.pt")
            torch_save(groups_payload(self.groups["names"], self.group_labels,
                                      self.groups.get("limits")), labels, call=call)
            out.groups["file"] = labels.name
        elif out.groups and out.groups.get("file"):
            out.groups["file"] = str(self.resolve(out.groups["file"]).resolve())
        write_text(path, out.to_json() + "\n" if suffix == ".json" else
                   "# xprune_nb recipe: run it with `xprune-nb run " + path.name + "`\n"
                   + out.to_yaml(), call=call)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Recipe:
        """Read and validate a recipe written by :meth:`save` (or by hand)."""
        from ...core.atomic import as_path

        call = "Recipe.load"
        path = as_path(path, call=call)
        if path.is_dir():
            raise StudyFileError(f"{call}(path=...): {str(path)!r} is a folder; give the path "
                                 "of a recipe file (.yaml, .yml or .json).")
        if not path.is_file():
            raise StudyFileError(f"{call}(path=...): no such file {str(path)!r}.")
        import yaml

        from ...core.limits import MAX_BYTES, load_json, load_yaml

        is_json = path.suffix.lower() == ".json"
        try:
            if path.stat().st_size > MAX_BYTES:
                raise ConfigError(f"{call}(path=...): {str(path)!r} is larger than "
                                  f"{MAX_BYTES} bytes; it is not a recipe.")
            text = path.read_text(encoding="utf-8")
            d = (load_json if is_json else load_yaml)(text, call=call)
        except (ValueError, yaml.YAMLError) as exc:  # also UnicodeDecodeError, JSONDecodeError
            raise ConfigError(f"{call}(path=...): {str(path)!r} is not valid "
                              f"{'JSON' if is_json else 'YAML'}: "
                              f"{' '.join(str(exc).split())}") from exc
        return cls.from_dict(d, call=call, base_dir=path.resolve().parent)

    # ------------------------------------------------------------------ variations
    def with_epochs(self, epochs: int) -> Recipe:
        """A copy where every retraining (also inside iterative prune steps) runs ``epochs``."""
        _check(_pos_int(epochs), "Recipe.with_epochs", "epochs", "a positive integer", epochs)
        out = copy.deepcopy(self)
        for s in out.steps:
            if s.action == "retrain":
                s.params["epochs"] = epochs
            elif s.action == "prune" and s.params.get("retrain"):
                s.params["retrain"]["epochs"] = epochs
        return out
