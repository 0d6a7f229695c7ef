"""Nothing lost: saves are atomic, damaged files get the package's error, loaded weights are
checked to be finite, and exported factory scripts run."""

from __future__ import annotations

import errno
import importlib.util
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import xprune_nb as xp
from xprune_nb.core import atomic
from xprune_nb.core.errors import StudyFileError
from xprune_nb.models import ToyMLP

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg",
       "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


@pytest.fixture(scope="module")
def study():
    # the package's own class, not the zoo's shipped weights: recipes then carry a weights
    # file, and the study file loads without trust
    torch.manual_seed(0)
    s = xp.Study(ToyMLP(), xp.datasets.load("moons"), seed=0)
    s.score("magnitude", granularity="weight")
    s.prune(0.5)
    return s


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def _failing_save(exc: BaseException):
    real = torch.save

    def save(obj, f, *args, **kwargs):
        real({"half": torch.zeros(1000)}, f)   # part of a file is on disk when it fails
        raise exc

    return save


# ------------------------------------------------------------------ atomic saves
SAVES = {
    "study": lambda s, p: s.save(p),
    "checkpoint": lambda s, p: s.save_pruned(p),
    "recipe weights": lambda s, p: s.recipe().save(p.with_suffix(".yaml")),
}


@pytest.mark.parametrize("what", list(SAVES))
@pytest.mark.parametrize("exc", [OSError(errno.ENOSPC, "No space left on device"),
                                 KeyboardInterrupt()], ids=["disk-full", "ctrl-c"])
def test_a_failed_save_keeps_the_old_file(study, tmp_path, monkeypatch, what, exc):
    path = tmp_path / "out.pt"
    target = path.with_name("out.weights.pt") if what == "recipe weights" else path
    target.write_bytes(b"the previous file")
    target.chmod(0o640)
    monkeypatch.setattr(torch, "save", _failing_save(exc))
    expected = KeyboardInterrupt if isinstance(exc, KeyboardInterrupt) else StudyFileError
    with pytest.raises(expected) as info:
        SAVES[what](study, path)
    if expected is StudyFileError:
        assert "the disk is full" in str(info.value) and "unchanged" in str(info.value)
    assert target.read_bytes() == b"the previous file"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert _leftovers(tmp_path) == []
    assert not path.with_suffix(".yaml").exists()       # no recipe naming half-written files
    monkeypatch.undo()
    SAVES[what](study, path)                             # and a good save replaces it
    assert target.read_bytes() != b"the previous file"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640  # keeping its permissions


@pytest.mark.parametrize("exc", [OSError(errno.EIO, "I/O error"), KeyboardInterrupt()],
                         ids=["io-error", "ctrl-c"])
def test_failing_replace_keeps_the_old_file(study, tmp_path, monkeypatch, exc):
    path = tmp_path / "s.xprune"
    study.save(path)
    before = path.read_bytes()

    def replace(src, dst):
        raise exc

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(KeyboardInterrupt if isinstance(exc, KeyboardInterrupt)
                       else StudyFileError):
        study.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before and _leftovers(tmp_path) == []
    assert xp.Study.load(path).current == study.current


def test_text_writes_are_atomic(study, tmp_path, monkeypatch):
    script = study.export_script(tmp_path / "prune.py")
    recipe = study.recipe().save(tmp_path / "r.yaml")
    old_script, old_recipe = script.read_text(), recipe.read_text()

    def boom(fd):
        raise OSError(errno.EFBIG, "File too large")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(StudyFileError, match=r"export_script\(path=...\): could not write .*"
                                             "the file-size limit was reached"):
        study.export_script(script)
    with pytest.raises(StudyFileError, match=r"Recipe.save\(path=...\): could not write"):
        study.recipe().save(recipe)
    monkeypatch.undo()
    assert script.read_text() == old_script and recipe.read_text() == old_recipe
    assert _leftovers(tmp_path) == []
    assert os.access(script, os.X_OK)


FSIZE_CHILD = """
import resource, signal, sys
import xprune_nb as xp
from xprune_nb.core.errors import StudyFileError
from xprune_nb.models import ToyMLP
study = xp.Study(xp.zoo.load("toy_mlp"), xp.datasets.load("moons"), seed=0)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # writes past the limit fail with EFBIG instead
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
try:
    study.save(sys.argv[1])
except StudyFileError as exc:
    print("refused:", exc)
"""


@pytest.mark.slow  # a child process importing torch
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file-size limit")
def test_a_real_file_size_limit_keeps_the_old_file(tmp_path):
    path = tmp_path / "s.xprune"
    path.write_bytes(b"old study")
    proc = subprocess.run([sys.executable, "-c", FSIZE_CHILD, str(path)], env=ENV,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "refused:" in proc.stdout and "unchanged" in proc.stdout, proc.stdout
    assert path.read_bytes() == b"old study" and _leftovers(tmp_path) == []


def test_saving_onto_a_folder_or_a_device_is_refused(study, tmp_path):
    folder = tmp_path / "taken.pt"
    folder.mkdir()
    for save in (lambda p: study.save(p), lambda p: study.save_pruned(p)):
        with pytest.raises(StudyFileError, match="is a folder; give a file name"):
            save(folder)
    (tmp_path / "r.yaml").mkdir()
    with pytest.raises(StudyFileError, match=r"Recipe.save\(path=...\): .* is a folder"):
        study.recipe().save(tmp_path / "r.yaml")
    assert not (tmp_path / "r.weights.pt").exists()     # refused before any side file
    assert folder.is_dir() and not any(folder.iterdir()) and _leftovers(tmp_path) == []
    full = Path("/dev/full")
    if full.exists():
        with pytest.raises(StudyFileError, match="is not a regular file"):
            study.save(full)
        assert full.is_char_device()                     # never replaced by a file


# ------------------------------------------------------------------ damaged files
def _damaged(tmp_path: Path, good: Path) -> dict[str, Path]:
    data = good.read_bytes()
    cases = {"truncated": data[: len(data) // 2], "text": b"hello, this is not a study\n",
             "empty": b"", "garbage": bytes(range(256)) * 4}
    out = {}
    for name, content in cases.items():
        out[name] = tmp_path / f"{name}.bin"
        out[name].write_bytes(content)
    out["folder"] = tmp_path / "folder.bin"
    out["folder"].mkdir()
    return out


@pytest.mark.parametrize("kind", ["study", "checkpoint"])
def test_damaged_files_get_a_study_file_error(study, tmp_path, kind):
    good = study.save(tmp_path / "good") if kind == "study" else study.save_pruned(
        tmp_path / "good")
    load = xp.Study.load if kind == "study" else xp.load_pruned
    for name, path in _damaged(tmp_path, good).items():
        with pytest.raises(StudyFileError) as info:
            load(path)
        text = str(info.value)
        assert str(path) in text, (name, text)
        if name == "folder":
            assert "is a folder" in text
        else:
            assert "damaged" in text and "not such a file" in text and (
                "earlier copy" in text), (name, text)
    if Path("/dev/null").exists():
        with pytest.raises(StudyFileError, match="is not a regular file"):
            load("/dev/null")


# ------------------------------------------------------------------ non-finite weights
def _poison(path: Path, where) -> Path:
    payload = torch.load(path, weights_only=True)
    state = where(payload)
    key = next(k for k, v in state.items() if v.is_floating_point())
    state[key] = state[key].clone()
    state[key].view(-1)[0] = float("nan")
    torch.save(payload, path)
    return path


def test_non_finite_weights_are_refused(study, tmp_path):
    for where, label in ((lambda p: p["original_state"], "in the original model"),
                         (lambda p: p["states"][1], "in step 1")):
        path = _poison(study.save(tmp_path / "s.xprune"), where)
        with pytest.raises(StudyFileError, match=rf"Study.load: '.*s.xprune' holds NaN or "
                                                 rf"infinite weights \('.*' {label}\)"):
            xp.Study.load(path)
    path = _poison(study.save_pruned(tmp_path / "m.pt"), lambda p: p["state_dict"])
    with pytest.raises(StudyFileError, match=r"load_pruned: '.*m.pt' holds NaN or infinite"):
        xp.load_pruned(path)
    recipe = study.recipe().save(tmp_path / "r.yaml")
    weights = tmp_path / "r.weights.pt"
    state = torch.load(weights, weights_only=True)
    state["head.weight"][0, 0] = float("inf")
    torch.save(state, weights)
    with pytest.raises(StudyFileError, match=r"model.weights=...\): '.*r.weights.pt' holds NaN"):
        xp.Study.from_recipe(recipe)


# ------------------------------------------------------------------ factory exports
def test_factory_export_without_kwargs_runs(tmp_path):
    """``export_script(model={"factory": ...})`` as documented, without ``kwargs``."""
    torch.manual_seed(0)
    study = xp.Study(ToyMLP(), xp.datasets.load("moons"), seed=0)
    study.score("magnitude")
    study.prune(0.3)
    script = study.export_script(tmp_path / "toy.py",
                                 model={"factory": "xprune_nb.models:ToyMLP"})
    assert "MODEL = {'factory': 'xprune_nb.models:ToyMLP', 'kwargs': {}}" in script.read_text()
    spec = importlib.util.spec_from_file_location("exported_factory_toy", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--out", str(tmp_path / "out"), "--quiet"])
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["params"] == study.step.metrics["params"]
    assert metrics["accuracy"] == pytest.approx(study.step.metrics["accuracy"], abs=1e-9)
    # the package's own class: the script's recipe replays without trust
    again = xp.Study.from_recipe(tmp_path / "out" / "recipe.yaml", progress=False)
    assert again.step.metrics["params"] == study.step.metrics["params"]


def test_atomic_helpers_clean_up(tmp_path):
    path = tmp_path / "a.txt"
    atomic.write_text(path, "one", call="t")
    with pytest.raises(ValueError), atomic.atomic_write(path, call="t") as handle:
        handle.write(b"two")
        raise ValueError("a bug in the payload is not a file error")
    assert path.read_text() == "one" and _leftovers(tmp_path) == []


def test_script_helpers_refuse_damaged_and_non_finite_files(tmp_path):
    """``load_weights`` / ``load_data`` (what exported scripts call) give the package's error."""
    from xprune_nb.export import load_data, load_weights

    text = tmp_path / "notes.pt"
    text.write_text("not weights")
    for load in (lambda p: load_weights(ToyMLP(), p), load_data):
        with pytest.raises(StudyFileError, match="damaged"):
            load(text)
        with pytest.raises(StudyFileError, match="no such file"):
            load(tmp_path / "missing.pt")
    state = ToyMLP().state_dict()
    state["head.bias"][0] = float("nan")
    torch.save(state, tmp_path / "nan.pt")
    with pytest.raises(StudyFileError, match=r"load_weights: '.*nan.pt' holds NaN"):
        load_weights(ToyMLP(), tmp_path / "nan.pt")
    torch.save({"w": torch.ones(2)}, tmp_path / "other.pt")
    with pytest.raises(StudyFileError, match="do not fit the model"):
        load_weights(ToyMLP(), tmp_path / "other.pt")
    # a tensor file that is not a data file: the reader says what a data file must hold
    with pytest.raises(StudyFileError, match=r"load_data\(path=...\): .*must hold a 'train'"):
        load_data(tmp_path / "other.pt")
