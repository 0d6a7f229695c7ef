"""Turn a study's history (the path from the original model to the current step) into a Recipe.

Only the path to the current step is replayed: steps on abandoned branches (after ``undo`` or
``goto``) are not part of the model the user has now. Every parameter comes from the steps'
recorded ``config``; retraining seeds are written out, so the replay does not depend on where a
step sat in a branching history. A ``prune(steps=N)`` call is written as one step when the path
holds all of its rounds, and as one step per round otherwise (e.g. after ``goto`` into the
middle of it).
"""

from __future__ import annotations

from torch import nn

from ...core.errors import ConfigError
from ...core.scores import score_call
from .core import Recipe, StepConfig
from .replay import IN_MEMORY
from .schema import _RETRAIN_KEYS

__all__ = ["study_recipe", "model_spec", "data_spec"]

_CALL = "Study.recipe"
_PRUNE_KEYS = ("amount", "scope", "normalize", "layer_amounts", "ignore", "steps", "schedule",
               "retrain", "rewind", "recalibrate", "round_to")


def _score_params(config: dict) -> dict:
    return score_call(config["criterion"], config["granularity"],
                      config.get("score_options", {}))


def _retrain_params(config: dict, seed: int, where: str) -> dict:
    if config.get("custom_train_fn") or "train_fn" in config:
        raise ConfigError(f"{_CALL}: {where} retrained with your own train_fn, which a recipe "
                          "cannot reproduce; retrain with Study.retrain's own loop instead.")
    out = {k: config[k] for k in _RETRAIN_KEYS if k in config}
    out.setdefault("seed", seed)
    return out


def _same_call(a: dict, b: dict) -> bool:
    return all(a.get(k) == b.get(k) for k in _PRUNE_KEYS + ("criterion", "granularity"))


def _whole_call(path: list, i: int, seed: int) -> int:
    """Length of the iterative prune call starting at ``path[i]`` if the path holds all of it
    (and its retraining seeds replay as recorded); 0 otherwise."""
    first = path[i].config
    n, retrain = first.get("steps", 1), first.get("retrain")
    length = n * (2 if retrain else 1)
    if first.get("round", 1) != 1 or i + length > len(path):
        return 0
    for k in range(length):
        s = path[i + k]
        if retrain and k % 2 == 1:
            if s.kind != "retrain" or s.config.get("seed", seed + s.index) != seed + i + k:
                return 0
        elif s.kind != "prune" or not _same_call(s.config, first) or (
                s.config.get("round") != k // (2 if retrain else 1) + 1):
            return 0
    return length


def _steps(study) -> list[StepConfig]:
    path = study.timeline.path()
    position = {s.index: i for i, s in enumerate(path)}
    seed = study.seed
    out: list[StepConfig] = []

    def rewind(value):
        # step 0 is always the original model: the config may hold either spelling
        if value in (None, "original") or value == 0:
            return "original" if value == 0 else value
        return position[value]

    i = 1
    while i < len(path):
        s, c = path[i], path[i].config
        where = f"step {s.index} ({s.label})"
        if s.stopped:
            raise ConfigError(f"{_CALL}: {where} was stopped before it finished, which a "
                              "recipe cannot reproduce; go back to its parent with "
                              f"study.goto({s.parent}) and retrain to the end.")
        recorded = [StepConfig.from_dict(d, call=_CALL, where=f"step {s.index}")
                    for d in s.calls]   # the calls stored in the step, as recipe steps
        if s.kind == "retrain":
            if recorded:
                _retrain_params(c, seed + s.index, where)   # refuses a custom train_fn
                out.append(recorded[0])
            else:
                out.append(StepConfig("retrain", _retrain_params(c, seed + s.index, where)))
            i += 1
            continue
        if s.kind == "dynamic":   # Study.dynamic re-scores and rebuilds from these arguments
            out.append(recorded[0] if recorded else StepConfig("dynamic", dict(c)))
            i += 1
            continue
        out.append(recorded[0] if recorded else StepConfig("score", _score_params(c)))
        length = _whole_call(path, i, seed)
        given = recorded[1].params if len(recorded) > 1 else c
        params = {k: given[k] for k in _PRUNE_KEYS if k in given}
        params["rewind"] = rewind(params.get("rewind"))
        if params.get("retrain") is not None:
            params["retrain"] = {k: v for k, v in params["retrain"].items()
                                 if k in _RETRAIN_KEYS}
        if length:
            i += length
        else:  # one round of a call the path does not hold entirely: replay it on its own
            n = c.get("steps", 1)
            params.update(amount=c.get("fraction", c["amount"]), steps=1, retrain=None,
                          layer_amounts={k: 1 - (1 - v) ** (1 / n)
                                         for k, v in c.get("layer_amounts", {}).items()})
            i += 1
        out.append(StepConfig("prune", params))
    scores = study.timeline.scores.get(study.current)
    if scores is not None:  # scored but not pruned yet: keep the scores in the replay
        out.append(StepConfig("score", scores.call()))
    return out


def _same_state(a: dict, b: dict) -> bool:
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _check_rebuilds(study, kwargs: dict) -> None:
    """The recorded class + kwargs must rebuild the original architecture."""
    import torch

    cls = type(study.original)
    try:
        with torch.random.fork_rng(devices=[]):  # building it must not move the user's RNG
            fresh = cls(**kwargs)
    except Exception as exc:  # noqa: BLE001 - the user must tell us the arguments
        raise ConfigError(
            f"{_CALL}(model=...): cannot rebuild {cls.__name__}(**{kwargs!r}) "
            f"({type(exc).__name__}: {exc}); give its constructor arguments, e.g. "
            "study.recipe(model={'kwargs': {...}}).") from exc
    want = {k: tuple(v.shape) for k, v in study.original.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in fresh.state_dict().items()}
    if want != got:
        raise ConfigError(
            f"{_CALL}(model=...): {cls.__name__}(**{kwargs!r}) does not rebuild the study's "
            "architecture (its tensors differ); give the constructor arguments used, e.g. "
            "study.recipe(model={'kwargs': {...}}).")


def _transformers_spec(model: nn.Module) -> dict | None:
    """``{"transformers": class name, "config": plain config}`` for a model class of the
    transformers package (rebuilt from its config: no factory, no download), else None."""
    from ..io.pretrained import is_pretrained

    if not is_pretrained(model):
        return None
    import transformers

    from ..io.pretrained_load import plain_config

    name = type(model).__name__
    if getattr(transformers, name, None) is not type(model):
        return None   # a subclass of the user's own: their class, as for any model
    return {"transformers": name, "config": plain_config(model)}


def model_spec(study, override: dict | None = None) -> tuple[dict, dict | None]:
    """The recipe's ``model`` entry and the original weights to store (None: not needed)."""
    from .source import capture_model_source, is_importable

    override = dict(override or {})
    state = {k: v.detach().clone() for k, v in study.original.state_dict().items()}
    kinds = [k for k in ("zoo", "factory", "source", "transformers") if k in override]
    if kinds:
        return override, (None if override.get("weights") else state)
    known = dict(study.model_spec or {})
    source = study.model_source
    if "kwargs" in override:
        known["kwargs"] = override["kwargs"]
    if source.get("kind") == "zoo":
        from ...models import zoo

        shipped = zoo.load(source["name"]).state_dict()
        return {"zoo": source["name"]}, (None if _same_state(shipped, state) else state)
    kwargs = dict(known.get("kwargs", {}))
    cls = type(study.original)
    hf = _transformers_spec(study.original)
    if hf is not None and not kwargs and "factory" not in known and "source" not in known:
        return hf, state
    if "source" in known and "class_name" in known:
        return {"source": known["source"], "class_name": known["class_name"],
                "kwargs": kwargs}, state
    if "factory" in known:  # built by a recipe: keep its factory (maybe a function)
        return {"factory": known["factory"], "kwargs": kwargs}, state
    if cls is nn.Sequential and not kwargs:
        from .sequential import sequential_source

        rebuilt = sequential_source(study.original)
        if rebuilt is not None:
            return {"source": rebuilt.text(), "class_name": rebuilt.class_name,
                    "kwargs": {}}, state
    _check_rebuilds(study, kwargs)
    if is_importable(cls):
        return {"factory": f"{cls.__module__}:{cls.__qualname__}", "kwargs": kwargs}, state
    captured = capture_model_source(study.original)
    return {"source": captured.text(), "class_name": captured.class_name,
            "kwargs": kwargs}, state


def data_spec(study, override: dict | None = None) -> tuple[dict, dict | None]:
    """The recipe's ``data`` entry and the splits to store (None: not needed)."""
    if override:
        return dict(override), None
    src = study.data.source
    if src:
        return {"dataset": src["name"],
                "options": {k: v for k, v in src.items() if k != "name"}}, None
    d = study.data
    if d.streamed:
        raise ConfigError.bad_value(
            "Study.recipe", "data", "a data source a recipe can name, e.g. {'factory': "
            "'mypkg.data:make'} (a function returning train/val/test; replayed under "
            "trust_source=True) or {'argument': 'what to pass'} (the data is passed when "
            "replaying: Study.from_recipe(data=...), a script's --data FILE): the study's data "
            "is your own loader or dataset, which a recipe does not copy", None)
    from ...data.batch import plain

    splits = {name: {"X": plain(d.split(name).X), "y": d.split(name).y}
              for name in ("train", "val", "test")}
    splits["meta"] = {"class_names": list(d.class_names), "feature_names": d.feature_names,
                      "kind": d.kind}
    if getattr(d, "group_names", None):   # the groups travel with the data they label
        for name in ("train", "val", "test"):
            splits[name]["groups"] = d.split(name).groups
        splits["meta"]["group_names"] = list(d.group_names)
    return {"file": IN_MEMORY}, splits


def study_recipe(study, *, model: dict | None = None, data: dict | None = None) -> Recipe:
    """The recipe that rebuilds the current model: model and data sources, seed, and the
    score → prune → retrain steps on the path from the original model to the current step.

    Parameters
    ----------
    model : dict, optional
        Overrides of the detected model source, e.g. ``{"kwargs": {"hidden": 32}}`` (your
        class's constructor arguments) or ``{"factory": "mypkg.nets:make"}``.
    data : dict, optional
        The data source when it is not a bundled dataset, e.g. ``{"factory":
        "mypkg.data:load"}``; by default your tensors go to a file next to the recipe.

    Returns
    -------
    Recipe
        Save it with ``recipe.save("study.yaml")``; replay it with ``xp.Study.from_recipe``
        or ``xprune-nb run study.yaml``.

    Examples
    --------
    >>> import xprune_nb as xp
    >>> study = xp.Study(xp.zoo.load("toy_mlp"), xp.datasets.load("moons"), seed=0)
    >>> _ = study.score("magnitude"); _ = study.prune(0.3)
    >>> [s.action for s in study.recipe().steps]
    ['score', 'prune']
    """
    if study.output_fn is not None:
        raise ConfigError(f"{_CALL}: the study uses a custom output_fn, which a recipe cannot "
                          "carry; wrap the model so that it returns logits instead.")
    from .groups import study_group_spec

    m, state = model_spec(study, model)
    d, splits = data_spec(study, data)
    groups, labels = study_group_spec(study, "file" if splits is not None else "other")
    recipe = Recipe(model=m, data=d, steps=_steps(study), seed=study.seed,
                    sampling=sampling_of(study), data_description=_description(study),
                    groups=groups)
    recipe.model_state, recipe.data_splits, recipe.group_labels = state, splits, labels
    return recipe


def sampling_of(study) -> dict:
    """The study's seeded sample sizes as ``Study`` takes them (a recipe replays them)."""
    from ...data.batch import batch_size

    given = study.data.sampling
    # a study loaded from a file made before probe_size was kept: its probe's size
    probe = getattr(study, "probe_size", None) or batch_size(study.probe_x)
    return {"eval_samples": given.get("eval_samples", "all"),
            "score_samples": given.get("score_samples", "all"), "probe_size": probe}


def _description(study) -> dict | None:
    """``DataBundle.describe()`` as plain data (None when it holds anything else)."""
    from ..io.resolver import is_plain_json
    from .core import _plain

    described = _plain(study.data.describe())
    return described if is_plain_json(described) else None
