"""Study files: one file of tensors and plain data, read without running code.

The file is written with ``torch.save`` (atomically: the previous file survives any failure)
and read with ``torch.load(weights_only=True)``, which refuses anything but tensors and plain
containers. Three layers, kept apart on purpose:

* :func:`write_study_file` / :func:`read_study_file` -- plain payload dict <-> file, with every
  check a damaged or hostile file needs (format, version, shape of the payload, finite weights);
* :func:`build_architecture` -- the original ``nn.Module``, from the zoo, from ``model=``, or
  (only with ``trust_source=True``) from the importable class the file names;
* :func:`save_study` / :func:`load_study` -- a ``Study`` <-> payload.

Examples
--------
>>> import tempfile, xprune_nb as xp
>>> study = xp.Study(xp.zoo.load("toy_mlp"), xp.datasets.load("moons"), seed=0)
>>> path = study.save(tempfile.mkdtemp() + "/toy.xprune")
>>> payload = read_study_file(path)
>>> payload["model_source"], payload["current"]
({'kind': 'zoo', 'name': 'toy_mlp'}, 0)
"""

from __future__ import annotations

import copy
import types
from pathlib import Path

import torch
from torch import nn

from ...core.atomic import as_path, check_target, torch_save
from ...core.errors import ConfigError, DataError, StudyFileError, XPruneError
from ...core.history import History, Step
from ...core.reading import WHAT_TO_DO, check_finite_state, read_torch_file
from ...core.scores import Scores
from ...data.batch import plain
from ...measure.step import attach_measurer
from .resolver import build_module

__all__ = ["FORMAT", "VERSION", "read_study_file", "write_study_file", "build_architecture",
           "study_payload", "save_study", "load_study"]

FORMAT = "xprune_nb.study"
VERSION = 1

#: payload keys and the type each must have (a file lacking one is damaged)
_REQUIRED = {"seed": int, "model_source": dict, "output_layers": list,
             "original_state": dict, "data_meta": dict, "steps": list, "states": list,
             "scores": dict, "current": int, "executed": list, "skipped": dict, "probe": dict}


def _scores_to_dict(s: Scores) -> dict:
    return {"criterion": s.criterion, "granularity": s.granularity, "values": s.values,
            "groups": {k: list(v) for k, v in s.groups.items()}, "options": s.options,
            "step": s.step, "per_class": s.per_class, "skipped": s.skipped,
            "seconds": s.seconds, "errors": s.errors}


def _scores_from_dict(d: dict) -> Scores:
    return Scores(criterion=d["criterion"], granularity=d["granularity"], values=d["values"],
                  groups={k: tuple(v) for k, v in d["groups"].items()}, options=d["options"],
                  step=d["step"], per_class=d["per_class"], skipped=d["skipped"],
                  seconds=d["seconds"], errors=d.get("errors"))


# ------------------------------------------------------------------ payload <-> file
def write_study_file(path: str | Path, payload: dict, *, call: str = "Study.save") -> Path:
    """Write a study payload to ``path`` atomically (the old file survives any failure).

    Saving to a folder, a device or a full disk raises :class:`StudyFileError`.
    """
    return torch_save({"format": FORMAT, "version": VERSION, **payload}, path, call=call)


def read_study_file(path: str | Path, call: str = "Study.load") -> dict:
    """The validated payload of a study file, as plain data. Never runs code.

    Raises :class:`StudyFileError` for a missing, damaged or foreign file, an unsupported
    version, a payload missing parts, or weights holding NaN/inf.
    """
    path = as_path(path, call=call)
    payload = read_torch_file(path, call=call, kind="xprune_nb study")
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise StudyFileError(f"{call}(path=...): {str(path)!r} is not an xprune_nb study file "
                             "(written by Study.save).")
    if payload.get("version") != VERSION:
        raise StudyFileError(f"{call}(path=...): study file version {payload.get('version')!r} "
                             f"is not supported (this xprune_nb reads version {VERSION}).")
    for key, kind in _REQUIRED.items():
        value = payload.get(key)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise StudyFileError(f"{call}: {str(path)!r} is damaged or incomplete ({key!r} is "
                                 f"missing or not a {kind.__name__}); {WHAT_TO_DO}.")
    if len(payload["states"]) != len(payload["steps"]):
        raise StudyFileError(f"{call}: {str(path)!r} is damaged (the weights of "
                             f"{len(payload['states'])} steps for {len(payload['steps'])} "
                             f"steps); {WHAT_TO_DO}.")
    _check_history(payload, path, call)
    check_finite_state(payload["original_state"], path=path, call=call,
                       where="the original model")
    for i, state in enumerate(payload["states"]):
        if state is not None:
            if not isinstance(state, dict):
                raise StudyFileError(f"{call}: {str(path)!r} is damaged (the weights of step "
                                     f"{i} are not a state dict); {WHAT_TO_DO}.")
            check_finite_state(state, path=path, call=call, where=f"step {i}")
    return payload


def _is_index(value, below: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < below


def _check_history(payload: dict, path: Path, call: str) -> None:
    """The history must be a tree rooted at step 0: every step ``i`` is a dict with
    ``index == i`` and a parent among the steps before it (steps are appended as they are
    made), so parents can never form a cycle; the current step and the stored scores must
    name existing steps; the probe is one label per input. Checked before anything walks the
    history (undo, replay and export follow parents)."""
    def damaged(what: str) -> StudyFileError:
        return StudyFileError(f"{call}: {str(path)!r} is damaged: {what}; {WHAT_TO_DO}.")

    steps = payload["steps"]
    if not steps:
        raise damaged("its history has no steps (step 0 is the original model)")
    for i, step in enumerate(steps):
        if not isinstance(step, dict) or step.get("index") != i or isinstance(
                step.get("index"), bool) or not isinstance(step.get("kind"), str):
            raise damaged(f"step {i} of its history is not a step record numbered {i}")
        parent = step.get("parent")
        if (i == 0 and parent is not None) or (i > 0 and not _is_index(parent, i)):
            raise damaged(f"step {i} names the parent {parent!r}; a step's parent must be an "
                          "earlier step (the history is a tree, never a cycle)")
    n = len(steps)
    if not _is_index(payload["current"], n):
        raise damaged(f"its current step {payload['current']!r} is not one of its {n} steps")
    if not all(_is_index(k, n) or (isinstance(k, str) and k.isdigit() and int(k) < n)
               for k in payload["scores"]):
        raise damaged("it holds scores of steps it does not have")
    probe = payload["probe"]
    x, y = probe.get("x"), probe.get("y")
    inputs = list(x.values()) if isinstance(x, dict) else [x]   # token models: a dict
    if not (isinstance(y, torch.Tensor) and y.dim() == 1 and inputs and all(
            isinstance(t, torch.Tensor) and t.dim() >= 1 and len(t) == len(y)
            for t in inputs)):
        raise damaged("its probe is not one label per input")


# ------------------------------------------------------------------ the architecture
def build_architecture(source: dict, *, model: nn.Module | None = None,
                       trust_source: bool = False, call: str = "Study.load") -> nn.Module:
    """A fresh original architecture for a study file's ``model_source``.

    ``model`` (a fresh instance of the original architecture) wins and is copied. A zoo
    source is rebuilt by the zoo. A class source is rebuilt only if it is one of the package's
    own model classes, or with ``trust_source=True`` (then the module it names is imported and
    the class must be an ``nn.Module``, with plain-JSON constructor arguments). Otherwise a
    :class:`StudyFileError` says to pass ``model=`` or opt in.

    Examples
    --------
    >>> net = build_architecture({"kind": "zoo", "name": "toy_mlp"})
    >>> type(net).__name__
    'ToyMLP'
    """
    if model is not None:
        if not isinstance(model, nn.Module):
            raise ConfigError.bad_value(call, "model", "a torch.nn.Module (a fresh instance "
                                        "of the original architecture) or None", model)
        return copy.deepcopy(model)
    if not isinstance(source, dict):
        raise StudyFileError(f"{call}: the file's model source is damaged ({source!r}).")
    if source.get("kind") == "zoo":
        from ...models import zoo

        if source.get("name") not in zoo.available():
            raise StudyFileError(f"{call}: the file names the zoo model {source.get('name')!r}"
                                 ", which this xprune_nb does not have; pass model=<a fresh "
                                 "instance of the original architecture>.")
        return zoo.load(source["name"], pretrained=False)
    return build_module(str(source.get("module")), str(source.get("qualname")),
                        source.get("kwargs"), trust_source=trust_source, call=call)


# ------------------------------------------------------------------ Study <-> payload
def study_payload(study) -> dict:
    """Everything :func:`load_study` needs, as tensors and plain data (read through the study's
    declared interface: ``timeline``, ``env`` and its public attributes)."""
    data = study.data
    timeline, env = study.timeline, study.env
    channel = env.analysis.get("channel") or {}
    return {
        "seed": study.seed,
        "model_source": study.model_source, "output_layers": list(env.output_layers),
        # CPU tensors: a study saved on a GPU loads on a CPU
        "original_state": {k: v.detach().cpu() for k, v in study.original.state_dict().items()},
        "data_source": data.source,
        # a user's own loader or dataset is described, never copied into the file
        "data_description": data.describe(), "data_sampling": dict(data.sampling),
        "data": None if data.source or data.streamed else {
            # a BatchEncoding is stored as the plain dict weights_only reads back
            name: {"X": plain(data.split(name).X), "y": data.split(name).y}
            for name in ("train", "val", "test")},
        # sensitive groups: kept even when the data itself is a bundled source; for a user's
        # loader or dataset, the labels given per item (None: its items are (x, y, g))
        "groups": None if not getattr(data, "group_names", None) else {
            "names": list(data.group_names),
            "labels": {name: (getattr(data.split(name), "given_groups", None)
                              if data.streamed else data.split(name).groups)
                       for name in ("train", "val", "test")}},
        "data_meta": {"class_names": data.class_names, "feature_names": data.feature_names,
                      "kind": data.kind, "num_classes": data.num_classes},
        "steps": [s.to_dict() for s in timeline.history],
        "states": [timeline.snapshots.get(s.index) for s in timeline.history],
        "scores": {i: _scores_to_dict(s) for i, s in timeline.scores.items()},
        "current": timeline.current,
        "analysis": env.analysis,
        # kept for readers of earlier files' layout
        "safe_channel_keys": channel.get("safe"), "skipped": channel.get("skipped", {}),
        "executed": sorted(env.executed),
        "probe": {"x": plain(study.probe_x), "y": study.probe_y},
    }


def save_study(study, path) -> Path:
    """Save the whole study to one file: the weights of every step, the history, the scores and
    the data (or its bundled source). Written atomically (the old file survives any failure);
    read with ``Study.load`` without running code. Returns the path.

    The save holds the study's lock, so the file is one consistent record: while another
    thread changes the study (a panel retrain, an ``auto_prune``), the save is refused at once
    with :class:`~xprune_nb.core.errors.StudyBusyError` (wait for it or stop it, then save), and
    changing calls from other threads are refused while the file is written. A save from
    inside a running call of the same thread (a training callback) writes the steps recorded
    so far. A save that returns always loads.
    """
    call = "Study.save"
    path = check_target(path, call=call)
    with study.timeline.hold(call):
        return write_study_file(path, study_payload(study), call=call)


def _data(payload: dict, data):
    """The study's data: ``data`` when given, else as the file holds it; the file's groups
    join data that comes without its own."""
    import dataclasses

    from ...data.groups import attach_groups

    found = _data_only(payload, data)
    stored = payload.get("groups")
    if stored and (not isinstance(stored, dict) or not isinstance(stored.get("labels"), dict)):
        raise StudyFileError(f"Study.load: the file's groups are damaged; {WHAT_TO_DO}.")
    if stored and not found.group_names:
        labels = {k: v for k, v in stored["labels"].items() if v is not None}
        if not labels:
            raise DataError(f"Study.load(data=...): the study measured accuracy per group "
                            f"({stored.get('names')}) read from its items (x, y, g), but the "
                            "data passed has no group labels; pass the loaders or datasets "
                            "that yield (x, y, g).")
        found = attach_groups(found, labels or None, stored.get("names") if labels else None,
                              call="Study.load")
    elif stored and len(stored.get("names") or []) == len(found.group_names):
        # data passed again that brings its own labels ((x, y, g) items): the saved names
        found = dataclasses.replace(found, group_names=list(stored["names"]))
    return found


def _data_only(payload: dict, data):
    """The study's data, the way the user gave it: ``data=`` passed again, the bundled dataset
    by name, or the tensors the file holds; sampled as when it was saved."""
    from ...data import Split, resolve_data

    sampling = {k: v for k, v in (payload.get("data_sampling") or {}).items()
                if k in ("seed", "eval_samples", "score_samples")}
    meta = payload["data_meta"]
    if data is None and payload.get("data_source"):
        from ...data import public as datasets

        data = datasets.load(**payload["data_source"])
    elif data is None:
        stored = payload.get("data")
        if not stored:
            described = (payload.get("data_description") or {}).get("splits") or {}
            what = "; ".join(f"{k}: {v.get('type')} ({v.get('size', '?')} examples)"
                             for k, v in described.items())
            raise StudyFileError(
                "Study.load(data=...): the study's data was your own loader or dataset"
                + (f" ({what})" if what else "") + "; a study file records what it was, not a "
                "copy. Pass it again: Study.load(path, data=xp.data.bundle(train, val, test)) "
                "(or any object with train/val/test).")
        splits = {k: Split(v["X"], v["y"]) for k, v in stored.items()}
        data = types.SimpleNamespace(
            train=splits["train"], val=splits["val"], test=splits["test"],
            class_names=meta["class_names"], feature_names=meta["feature_names"],
            kind=meta["kind"])
    return resolve_data(data, call="Study.load", **sampling)


def load_study(cls, path, *, model=None, data=None, trust_source: bool = False,
               output_fn=None, device="auto"):
    """Read ``path`` (:func:`read_study_file`), rebuild the architecture
    (:func:`build_architecture`) and make the ``cls`` study it holds, on ``device`` (the
    file holds CPU tensors; ``"auto"``: where ``model`` is, else the CPU)."""
    from ...models.mechanisms.device import resolve_device

    call = "Study.load"
    if not isinstance(trust_source, bool):
        raise ConfigError.bad_value(call, "trust_source", "True or False", trust_source)
    if model is not None and not isinstance(model, nn.Module):
        raise ConfigError.bad_value(call, "model", "a torch.nn.Module (a fresh instance of "
                                    "the original architecture) or None", model)
    where = resolve_device(device, model if model is not None else nn.Module(), call)
    path = as_path(path, call=call)
    payload = read_study_file(path, call)
    try:
        arch = build_architecture(payload["model_source"], model=model,
                                  trust_source=trust_source, call=call)
        try:
            arch.load_state_dict(payload["original_state"])
        except RuntimeError as exc:
            raise StudyFileError(
                f"Study.load: the model given does not match the saved architecture: {exc}"
            ) from exc
        study_data = _data(payload, data)
        analysis = payload.get("analysis")
        if analysis is None:       # files written before unit kinds were pluggable
            analysis = ({"channel": {"safe": payload["safe_channel_keys"],
                                     "skipped": payload["skipped"]}}
                        if payload.get("safe_channel_keys") is not None else {})
        history = History(Step.from_dict(d) for d in payload["steps"])
        study = cls._from_state(
            original=arch.to(where).eval(), data=study_data, seed=payload["seed"],
            output_fn=output_fn,
            model_source=payload["model_source"], analysis=analysis,
            output_layers=list(payload["output_layers"]), executed=payload["executed"],
            probe=(payload["probe"]["x"], payload["probe"]["y"]), history=history,
            states=payload["states"],
            scores={int(i): _scores_from_dict(d) for i, d in payload["scores"].items()},
            current=int(payload["current"]))
        for step in study.history:   # a big model's accuracy left for the first ask still is
            attach_measurer(study, step)
    except XPruneError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as exc:
        raise StudyFileError(
            f"Study.load: {str(path)!r} is damaged or incomplete ({type(exc).__name__}: "
            f"{exc}); {WHAT_TO_DO}."
        ) from exc
    return study
