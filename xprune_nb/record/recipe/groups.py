"""Sensitive groups in recipes and exported scripts: the names, the labels, and how a replay
gives them to the study it builds.

A recipe of a study with groups has a ``groups`` entry (plain data)::

    groups: {names: [majority, minority], file: study.groups.pt}

``names`` are the group names (data, never code); ``file`` holds the int64 label codes of
every split (``{"names": [...], "labels": {"train": ..., "val": ..., "test": ...}}``, plain
tensors, read with ``weights_only=True``). It is left out when the labels come with the data:
a recipe's data file (``x.data.pt``) stores them next to ``X`` and ``y``, and a user's loader
or dataset yielding ``(x, y, g)`` brings them again. Replaying names the groups the same way,
so per-group accuracy and ``worst_group_accuracy`` come out as in the study.

Examples
--------
>>> import torch
>>> from xprune_nb.data import bundle
>>> s = (torch.zeros(4, 2), torch.tensor([0, 1, 0, 1]))
>>> opts = study_group_options(["a", "b"], {k: torch.tensor([0, 1, 1, 0]) for k in
...                            ("train", "val", "test")}, bundle(s, s, s), "demo")
>>> opts["group_names"], opts["groups"]["test"].tolist()
(['a', 'b'], [0, 1, 1, 0])
"""

from __future__ import annotations

from pathlib import Path

import torch

from ...core.errors import DataError, StudyFileError

__all__ = ["study_group_spec", "study_group_options", "read_groups_file", "groups_payload",
           "recipe_group_options", "group_limit_report", "replay_group_limits"]

_SPLITS = ("train", "val", "test")


def study_group_spec(study, data_kind: str) -> tuple[dict | None, dict | None]:
    """The recipe's ``groups`` entry for ``study`` and the labels to store next to it (None:
    the data carries them, ``data_kind == "file"``, or the study has no groups).

    Labels of a streamed split are those given aligned with the user's whole dataset
    (``Study(groups=...)``); a stream whose items are ``(x, y, g)`` needs none stored."""
    data = study.data
    names = getattr(data, "group_names", None)
    if not names:
        return None, None
    spec = {"names": list(names)}
    limits = _limits_on_path(study)
    if limits:
        spec["limits"] = limits
    if data_kind == "file":
        return spec, None
    labels = {}
    for name in _SPLITS:
        split = data.split(name)
        # a stream's labels as given, one per item of the user's dataset (its sample's codes
        # would not align with the dataset on replay)
        labels[name] = (getattr(split, "given_groups", None) if hasattr(split, "source")
                        else split.groups)
    return spec, (labels if any(v is not None for v in labels.values()) else None)


def _limits_on_path(study) -> list[dict]:
    """``auto_prune(max_group_drop=)`` limits recorded on the path to the current step, as
    ``{"max_group_drop", "from", "at"}`` with positions on that path (the step indices of a
    replay, which has no abandoned branches)."""
    path = study.timeline.path()
    position = {s.index: i for i, s in enumerate(path)}
    out = []
    for i, step in enumerate(path):
        limit = step.config.get("group_limit")
        if isinstance(limit, dict) and limit.get("from") in position:
            out.append({"max_group_drop": float(limit["max_group_drop"]),
                        "from": position[limit["from"]], "at": i})
    return out


def group_limit_report(study) -> list[dict]:
    """Every ``max_group_drop`` limit recorded on the path to the current step, re-checked
    from the steps' own measurements: the worst group's validation drop (what the limit
    judges), its test drop (what it promises nothing about) and whether the limit held.

    Examples
    --------
    >>> import xprune_nb as xp
    >>> group_limit_report(xp.Study(xp.zoo.load("toy_mlp"), xp.datasets.load("moons")))
    []
    """
    out = []
    for step in study.timeline.path():
        limit = step.config.get("group_limit")
        if not isinstance(limit, dict):
            continue
        start = study.history[int(limit["from"])]
        drops = {g: start.val_per_group_accuracy[g] - a
                 for g, a in step.val_per_group_accuracy.items()
                 if g in start.val_per_group_accuracy}
        worst = max(drops, key=drops.get) if drops else None
        test = {g: start.per_group_accuracy[g] - a for g, a in step.per_group_accuracy.items()
                if g in start.per_group_accuracy}
        bound = float(limit["max_group_drop"])
        out.append({"max_group_drop": bound, "from_step": int(limit["from"]),
                    "step": step.index, "group": worst,
                    "val_drop": drops[worst] if drops else float("nan"),
                    "test_drop": max(test.values()) if test else float("nan"),
                    "held": bool(drops) and drops[worst] <= bound + 1e-9})
    return out


def replay_group_limits(study, limits, call: str) -> list[dict]:
    """Record the recipe's ``max_group_drop`` limits on the replayed steps and re-check them;
    a limit the replay breaks (other data, other epochs) is warned about, never hidden."""
    import warnings

    from ...pruning.auto import AutoPruneWarning

    for limit in limits or []:
        at, start = int(limit["at"]), int(limit["from"])
        if at >= len(study.history):
            raise DataError(f"{call}(recipe=...): groups.limits names step {at}, but the "
                            f"replay made {len(study.history)} steps; the recipe is damaged.")
        study.history[at].config["group_limit"] = {
            "max_group_drop": float(limit["max_group_drop"]), "from": start}
    report = group_limit_report(study)
    for row in report:
        if not row["held"]:
            warnings.warn(f"{call}: the replay breaks auto_prune's max_group_drop="
                          f"{row['max_group_drop']} at step {row['step']}: group "
                          f"{row['group']!r} drops {row['val_drop']:.4f} on validation "
                          f"(from step {row['from_step']}).", AutoPruneWarning, stacklevel=3)
    return report


def groups_payload(names, labels, limits=None) -> dict:
    """What a groups file holds: names, int64 codes per split (plain data and tensors) and
    the recorded ``max_group_drop`` limits."""
    return {"names": list(names), "limits": list(limits or []),
            "labels": None if labels is None else {k: (v.detach().cpu().long() if isinstance(
                v, torch.Tensor) else None) for k, v in labels.items()}}


def read_groups_file(path: str | Path, call: str) -> tuple[list[str], dict | None, list]:
    """(names, labels per split or None, limits) of a groups file, checked."""
    from ...core.reading import read_torch_file

    stored = read_torch_file(path, call=f"{call}(groups.file=...)", kind="groups")
    names = stored.get("names") if isinstance(stored, dict) else None
    labels = stored.get("labels") if isinstance(stored, dict) else None
    limits = stored.get("limits", []) if isinstance(stored, dict) else []
    if not isinstance(limits, list) or not all(
            isinstance(lim, dict) and {"max_group_drop", "from", "at"} <= set(lim)
            for lim in limits):
        names = None   # damaged
    if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)) or (
            labels is not None and not (isinstance(labels, dict) and set(labels) <= set(
                _SPLITS) and all(v is None or isinstance(v, torch.Tensor)
                                 for v in labels.values()))):
        raise StudyFileError(f"{call}(groups.file=...): {str(path)!r} is damaged (not the "
                             "group names and labels Recipe.save / export_script write).")
    return names, labels, limits


def study_group_options(names, labels, data, call: str) -> dict:
    """``Study`` keyword arguments that give ``data`` the recipe's groups: the names only
    when the data brings its own labels (a data file, a loader yielding ``(x, y, g)``), else
    the stored labels and the names."""
    names = list(names)
    if getattr(data, "group_names", None):
        return {"group_names": names}
    given = {k: v for k, v in (labels or {}).items() if v is not None}
    if not given:
        raise DataError(
            f"{call}(data=...): the recipe's study measured accuracy per group ({names}), but "
            "the data has no group labels and the recipe stores none; give data whose splits "
            "are (X, y, groups) or whose items are (x, y, g), or pass groups= yourself.")
    return {"groups": given, "group_names": names}


def recipe_group_options(recipe, data, call: str, study_options: dict) -> dict:
    """The group options a replay of ``recipe`` passes to ``Study`` (none when the recipe has
    no groups or the caller gives ``groups=`` / ``group_names=`` themselves)."""
    spec = recipe.groups
    if not spec or {"groups", "group_names"} & set(study_options):
        return {}
    labels = recipe.group_labels
    if labels is None and spec.get("file") and not getattr(data, "group_names", None):
        _, labels, _ = read_groups_file(recipe.resolve(spec["file"]), call)
    return study_group_options(spec["names"], labels, data, call)
