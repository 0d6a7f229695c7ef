"""Save and load studies as one file of tensors and plain data.

The file is written with ``torch.save`` and read with ``torch.load(weights_only=True)``, which
refuses anything but tensors and plain containers: loading a study never runs code from it. The
architecture is rebuilt from its source (a zoo name, an importable class, or the ``model=``
given to :meth:`Study.load`) and the recorded structural removals.
"""

from __future__ import annotations

import copy
import importlib
import pickle
import zipfile
from pathlib import Path

import torch

from ._data import Split, StudyData
from .errors import StudyFileError
from .history import History, Step
from .scores import Scores

FORMAT = "xprune_nb.study"
VERSION = 1


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


def save_study(study, path) -> Path:
    path = Path(path)
    data = study.data
    payload = {
        "format": FORMAT, "version": VERSION, "seed": study.seed,
        "model_source": study.model_source, "output_layers": study.output_layers,
        "original_state": study.original.state_dict(),
        "data_source": data.source,
        "data": None if data.source else {
            name: {"X": data.split(name).X, "y": data.split(name).y}
            for name in ("train", "val", "test")},
        "data_meta": {"class_names": data.class_names, "feature_names": data.feature_names,
                      "kind": data.kind, "num_classes": data.num_classes},
        "steps": [s.to_dict() for s in study.history],
        "states": [study._snapshots.get(s.index) for s in study.history],
        "scores": {i: _scores_to_dict(s) for i, s in study._scores.items()},
        "current": study.current,
        "safe_channel_keys": study._safe_channel_keys, "executed": sorted(study._executed),
        "skipped": study._skipped,
        "probe": {"x": study.probe_x, "y": study.probe_y},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, path)
    return path


def _read(path: Path) -> dict:
    if not path.exists():
        raise StudyFileError(f"Study.load(path=...): no such file {str(path)!r}.")
    try:
        payload = torch.load(path, weights_only=True, map_location="cpu")
    except (pickle.UnpicklingError, RuntimeError, zipfile.BadZipFile, EOFError, ValueError,
            AttributeError, TypeError) as exc:
        raise StudyFileError(
            f"Study.load(path=...): {str(path)!r} is not a readable xprune_nb study (or it holds "
            f"objects other than tensors and plain data, which are refused): {exc}"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise StudyFileError(
            f"Study.load(path=...): {str(path)!r} is not an xprune_nb study file "
            "(written by Study.save)."
        )
    if payload.get("version") != VERSION:
        raise StudyFileError(
            f"Study.load(path=...): study file version {payload.get('version')!r} is not "
            f"supported (this xprune_nb reads version {VERSION})."
        )
    return payload


def _architecture(source: dict, model):
    if model is not None:
        return copy.deepcopy(model)
    if source.get("kind") == "zoo":
        from . import zoo

        return zoo.load(source["name"], pretrained=False)
    module, qualname = source.get("module"), source.get("qualname", "")
    try:
        obj = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
        return obj()
    except Exception as exc:  # noqa: BLE001 - any failure: the user must pass model=
        raise StudyFileError(
            f"Study.load: cannot rebuild the model class {module}.{qualname} by itself ({exc}); "
            "pass model=<a fresh instance of the original architecture>."
        ) from exc


def _data(payload: dict, data) -> StudyData:
    from ._data import resolve_data

    if data is not None:
        return resolve_data(data, call="Study.load")
    meta = payload["data_meta"]
    if payload.get("data_source"):
        from . import datasets

        return resolve_data(datasets.load(**payload["data_source"]), call="Study.load")
    stored = payload.get("data")
    if not stored:
        raise StudyFileError("Study.load: the file holds no data; pass data=...")
    splits = {k: Split(v["X"], v["y"]) for k, v in stored.items()}
    return StudyData(train=splits["train"], val=splits["val"], test=splits["test"],
                     num_classes=meta["num_classes"], class_names=meta["class_names"],
                     feature_names=meta["feature_names"], kind=meta["kind"])


def load_study(cls, path, *, model=None, data=None):
    path = Path(path)
    payload = _read(path)
    try:
        arch = _architecture(payload["model_source"], model)
        try:
            arch.load_state_dict(payload["original_state"])
        except RuntimeError as exc:
            raise StudyFileError(
                f"Study.load: the model given does not match the saved architecture: {exc}"
            ) from exc
        study_data = _data(payload, data)
        study = cls.__new__(cls)
        study.data = study_data
        study.seed = payload["seed"]
        study._output_fn = None
        arch.eval()
        study.original = arch
        study.output_layers = list(payload["output_layers"])
        with torch.no_grad():
            study._num_logits = int(study.forward(arch.eval(), study_data.train.X[:2]).shape[1])
        study.model_source = payload["model_source"]
        from ._snapshots import SnapshotStore

        study._snapshots = SnapshotStore()
        study._safe_channel_keys = payload["safe_channel_keys"]
        study._skipped = payload["skipped"]
        study._executed = set(payload["executed"])
        study.probe_x, study.probe_y = payload["probe"]["x"], payload["probe"]["y"]
        study.history = History(Step.from_dict(d) for d in payload["steps"])
        for step, state in zip(study.history, payload["states"], strict=True):
            study._snapshots.put(step.index, state)
        study._scores = {int(i): _scores_from_dict(d) for i, d in payload["scores"].items()}
        study._all_scores = {i: {f"{s.criterion}/{s.granularity}": s}
                             for i, s in study._scores.items()}
        study.history.current = 0
        study.model = copy.deepcopy(arch)
        study.goto(int(payload["current"]))
    except StudyFileError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise StudyFileError(
            f"Study.load: {str(path)!r} is damaged or incomplete ({type(exc).__name__}: {exc})."
        ) from exc
    return study
