"""The recipe schema: allowed keys and value checks, one message shape for every error.

Every check names the step and the field (``steps[1].prune.amount``), says what is allowed and
what was given; unknown keys are errors.
"""

from __future__ import annotations

import keyword
import math

from ...core.errors import ConfigError

_TOP_KEYS = ("format", "version", "seed", "model", "data", "steps", "sampling",
             "data_description", "groups")
_MODEL_KINDS = ("zoo", "factory", "source", "transformers")
_MODEL_KEYS = {"zoo": ("zoo", "weights"),
               "transformers": ("transformers", "config", "weights"),
               "factory": ("factory", "kwargs", "weights"),
               "source": ("source", "class_name", "kwargs", "weights")}
_DATA_KINDS = ("dataset", "factory", "file", "argument")
_DATA_KEYS = {"dataset": ("dataset", "options"), "factory": ("factory", "kwargs"),
              "file": ("file",), "argument": ("argument",)}
#: the Study arguments a recipe records and replays: the seeded sample sizes
_SAMPLING_KEYS = ("eval_samples", "score_samples", "probe_size")
_SCORE_KEYS = ("criterion", "granularity", "samples", "classes", "prune_output", "batch_size")
_RETRAIN_KEYS = ("epochs", "lr", "optimizer", "batch_size", "weight_decay", "seed",
                 "recalibrate", "recalibrate_samples", "steps_per_epoch")
_PRUNE_KEYS = ("amount", "scope", "normalize", "layer_amounts", "ignore", "steps", "schedule",
               "retrain", "rewind", "recalibrate", "round_to")


# ------------------------------------------------------------------ value checks
def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _pos_int(v) -> bool:
    return _int(v) and v >= 1


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _fraction(v) -> bool:
    return _number(v) and 0 <= v < 1


def _identifier(v) -> bool:
    return isinstance(v, str) and v.isidentifier() and not keyword.iskeyword(v)


def _plain_kwargs(v) -> bool:
    # what a recipe file can hold, so that a shared recipe passes nothing else to a factory
    from ..io.resolver import is_plain_json

    return isinstance(v, dict) and all(_identifier(k) for k in v) and is_plain_json(
        v, tuples=True)


def is_import_path(value) -> bool:
    """True for ``"package.module:attribute"`` made only of Python identifiers.

    Import paths end up as ``from package.module import attribute`` in exported scripts, so
    nothing but identifiers may pass.

    Examples
    --------
    >>> is_import_path("mypkg.models:make_net"), is_import_path("os; rm:x")
    (True, False)
    """
    if not isinstance(value, str) or value.count(":") != 1:
        return False
    module, attr = value.split(":")
    return all(_identifier(p) for p in module.split(".")) and all(
        _identifier(p) for p in attr.split("."))


def _check(ok: bool, call: str, where: str, allowed: str, got) -> None:
    if not ok:
        raise ConfigError.bad_value(call, where, allowed, got)


def _known(d, keys, call: str, where: str, required=()) -> dict:
    if not isinstance(d, dict):
        raise ConfigError.bad_value(call, where, "a mapping of " + ", ".join(keys), d)
    for key in d:
        if key not in keys:
            raise ConfigError.unknown_name(call, where, keys, key)
    for key in required:
        if key not in d:
            raise ConfigError.bad_value(call, f"{where}.{key}", "a value (it is required)",
                                        None)
    return d


def _kind(d, kinds, call: str, where: str) -> str:
    present = [k for k in kinds if isinstance(d, dict) and k in d]
    if len(present) != 1:
        raise ConfigError.bad_value(call, where, f"a mapping with exactly one of {list(kinds)}",
                                    d)
    return present[0]


def _check_retrain(p, call: str, where: str) -> None:
    from ...core.params import check

    _known(p, _RETRAIN_KEYS, call, where)
    # the same constraints as Study.retrain (one table: xprune_nb.core.params)
    for key, value in p.items():
        check(call, f"{where}.{key}", value, _param(key))


def _kinds() -> list[str]:
    from ...pruning import units

    return units.available()


def _param(key: str):
    from ...core.params import PARAMS

    return PARAMS[key]


def _check_prune(p, call: str, where: str) -> None:
    from ...core.scores import NORMALIZATIONS
    from ...pruning.schedules import SCHEDULES
    from ...pruning.selection import SCOPES

    _known(p, _PRUNE_KEYS, call, where, required=("amount",))
    la = p.get("layer_amounts", {})
    checks = {
        "amount": (_fraction(p.get("amount")), "a number in [0, 1)"),
        "scope": (p.get("scope", "global") in SCOPES, f"one of {list(SCOPES)}"),
        "normalize": (p.get("normalize", "mean") in NORMALIZATIONS,
                      f"one of {list(NORMALIZATIONS)}"),
        "layer_amounts": (isinstance(la, dict) and all(
            isinstance(k, str) and _fraction(v) for k, v in la.items()),
            "a mapping of layer name -> number in [0, 1)"),
        "ignore": (isinstance(p.get("ignore", []), list) and all(
            isinstance(n, str) for n in p.get("ignore", [])), "a list of layer names"),
        "steps": (_pos_int(p.get("steps", 1)), "a positive integer"),
        "schedule": (p.get("schedule", "linear") in SCHEDULES, f"one of {list(SCHEDULES)}"),
        "rewind": (p.get("rewind") in (None, "original") or (
            _int(p.get("rewind")) and p["rewind"] >= 0),
            "null, 'original' or a step index >= 0"),
    }
    for key, (ok, allowed) in checks.items():
        _check(ok, call, f"{where}.{key}", allowed, p.get(key))
    from ...core.params import check

    for key in ("amount", "steps", "recalibrate", "round_to"):   # one table: xprune_nb.core.params
        if key in p:
            check(call, f"{where}.{key}", p[key], _param(key))
    if p.get("retrain") is not None:
        _check_retrain(p["retrain"], call, f"{where}.retrain")


def _check_score(p, call: str, where: str) -> None:
    from ... import criteria

    if not isinstance(p, dict):
        raise ConfigError.bad_value(call, where, "a mapping with at least 'criterion'", p)
    name = p.get("criterion")
    if name not in criteria.available():
        raise ConfigError.unknown_name(call, f"{where}.criterion", criteria.available(), name)
    # a criterion's own options (e.g. p for magnitude) are keys of the step too
    _known(p, _SCORE_KEYS + tuple(criteria.get(name, call).options), call, where)
    classes = p.get("classes")
    checks = {
        "granularity": (p.get("granularity", "channel") in _kinds(),
                        f"one of {_kinds()}"),
        "samples": (_pos_int(p.get("samples", 1)), "a positive integer"),
        "classes": (classes is None or (isinstance(classes, list) and classes and all(
            _int(c) and c >= 0 for c in classes)), "null or a list of class indices"),
        "prune_output": (isinstance(p.get("prune_output", False), bool), "true or false"),
        "batch_size": (_pos_int(p.get("batch_size", 1)), "a positive integer"),
    }
    for key, (ok, allowed) in checks.items():
        _check(ok, call, f"{where}.{key}", allowed, p.get(key))


_DYNAMIC_KEYS = ("k", "confidence", "keep", "at", "criterion", "epochs", "samples",
                 "max_paths", "finetune")


def _check_dynamic(p, call: str, where: str) -> None:
    """A ``dynamic`` step: the arguments of ``Study.dynamic`` (checked the same way)."""
    from ...pruning.dynamic.build import check_dynamic_args

    _known(p, _DYNAMIC_KEYS, call, where)
    defaults = {"k": 2, "confidence": 0.9, "keep": 0.5, "epochs": 1, "max_paths": 1}
    args = {k: p.get(k, v) for k, v in defaults.items()}
    check_dynamic_args(**args, call=f"{call}({where})")
    _check(p.get("at") is None or isinstance(p.get("at"), str), call, f"{where}.at",
           "null or a module name", p.get("at"))
    _check(p.get("criterion") is None or isinstance(p.get("criterion"), str), call,
           f"{where}.criterion", "null or a criterion name", p.get("criterion"))


_STEP_CHECKS = {"score": _check_score, "prune": _check_prune, "retrain": _check_retrain,
                "dynamic": _check_dynamic}


def _check_model(m, call: str) -> dict:
    kind = _kind(m, _MODEL_KINDS, call, "model")
    _known(m, _MODEL_KEYS[kind], call, "model",
           required=("class_name",) if kind == "source" else ())
    if kind == "zoo":
        from ...models import zoo

        if m["zoo"] not in zoo.available():
            raise ConfigError.unknown_name(call, "model.zoo", zoo.available(), m["zoo"])
    elif kind == "factory":
        _check(is_import_path(m["factory"]), call, "model.factory",
               "'package.module:callable' made of Python identifiers", m["factory"])
    elif kind == "transformers":
        from ..io.resolver import is_plain_json

        _check(_identifier(m["transformers"]), call, "model.transformers",
               "the name of a model class of the transformers package", m["transformers"])
        _check(isinstance(m.get("config"), dict) and is_plain_json(m["config"]), call,
               "model.config", "the model's config as a plain mapping (config.to_dict())",
               m.get("config"))
    else:
        _check(isinstance(m["source"], str) and m["source"].strip() != "", call,
               "model.source", "the source code of the model class", m["source"])
        _check(_identifier(m["class_name"]), call, "model.class_name",
               "a Python identifier defined in model.source", m["class_name"])
    _check(_plain_kwargs(m.get("kwargs", {})), call, "model.kwargs",
           "a mapping of argument name -> plain value (number, string, bool, null, or lists "
           "and mappings of those)", m.get("kwargs"))
    w = m.get("weights")
    _check(w is None or (isinstance(w, str) and w != ""), call, "model.weights",
           "null or the path of a state-dict file", w)
    return m


def _check_data(d, call: str) -> dict:
    kind = _kind(d, _DATA_KINDS, call, "data")
    _known(d, _DATA_KEYS[kind], call, "data")
    if kind == "dataset":
        from ...data import public as datasets

        if d["dataset"] not in datasets.available():
            raise ConfigError.unknown_name(call, "data.dataset", datasets.available(),
                                           d["dataset"])
        _check(isinstance(d.get("options", {}), dict), call, "data.options",
               "a mapping of datasets.load options", d.get("options"))
    elif kind == "factory":
        _check(is_import_path(d["factory"]), call, "data.factory",
               "'package.module:callable' made of Python identifiers", d["factory"])
        _check(_plain_kwargs(d.get("kwargs", {})), call, "data.kwargs",
               "a mapping of argument name -> plain value (number, string, bool, null, or "
               "lists and mappings of those)", d.get("kwargs"))
    elif kind == "file":
        _check(isinstance(d["file"], str) and d["file"] != "", call, "data.file",
               "the path of a tensor file", d["file"])
    else:   # given when replaying (Study.from_recipe(data=...), a script's --data FILE)
        _check(isinstance(d["argument"], str), call, "data.argument",
               "a description of the data to pass", d["argument"])
    return d


def _check_sampling(s, call: str) -> dict:
    """``sampling``: Study's ``eval_samples`` / ``score_samples`` / ``probe_size``."""
    _known(s, _SAMPLING_KEYS, call, "sampling")
    for key, v in s.items():
        ok = _pos_int(v) or v == "all" or (key == "eval_samples" and v == "auto")
        _check(ok, call, f"sampling.{key}", "a positive integer or 'all'"
               + (" or 'auto'" if key == "eval_samples" else ""), v)
    return s


def _check_description(d, call: str) -> dict:
    """``data_description``: what the data was (plain data; informative, never executed)."""
    from ..io.resolver import is_plain_json

    _check(d is None or (isinstance(d, dict) and is_plain_json(d)), call, "data_description",
           "null or a plain mapping (DataBundle.describe())", type(d).__name__)
    return d


def _check_groups(g, call: str) -> dict | None:
    """The ``groups`` entry: the group names (distinct strings) and an optional labels file."""
    if g is None:
        return None
    _known(g, ("names", "file", "limits"), call, "groups", required=("names",))
    names = g["names"]
    _check(isinstance(names, list) and names and all(isinstance(n, str) for n in names)
           and len(set(names)) == len(names), call, "groups.names",
           "a list of distinct group names (strings)", names)
    _check(g.get("file") is None or (isinstance(g["file"], str) and g["file"] != ""), call,
           "groups.file", "null or the path of a groups file", g.get("file"))
    limits = g.get("limits", [])
    _check(isinstance(limits, list), call, "groups.limits", "a list of limits", limits)
    for i, lim in enumerate(limits):
        where = f"groups.limits[{i}]"
        _known(lim, ("max_group_drop", "from", "at"), call, where,
               required=("max_group_drop", "from", "at"))
        _check(_number(lim["max_group_drop"]) and 0 <= lim["max_group_drop"] <= 1, call,
               f"{where}.max_group_drop", "a number in [0, 1]", lim["max_group_drop"])
        _check(_int(lim["from"]) and lim["from"] >= 0, call, f"{where}.from",
               "a step index >= 0", lim["from"])
        _check(_int(lim["at"]) and lim["at"] >= lim["from"], call, f"{where}.at",
               f"a step index >= from ({lim['from']})", lim["at"])
    return g
