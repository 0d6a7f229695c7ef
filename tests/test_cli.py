"""The ``xprune-nb`` command line, run as users run it: in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import xprune_nb as xp
from xprune_nb.ui.cli import main

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
RECIPE = {"seed": 0, "model": {"zoo": "toy_mlp"}, "data": {"dataset": "moons"},
          "steps": [{"score": {"criterion": "magnitude"}}, {"prune": {"amount": 0.3}},
                    {"retrain": {"epochs": 1}}]}


def command(*args: str) -> list[str]:
    exe = Path(sys.executable).with_name("xprune-nb")
    return ([str(exe)] if exe.exists() else [sys.executable, "-m", "xprune_nb.ui.cli"]) + list(args)


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(command(*args), cwd=cwd, env=ENV, capture_output=True, text=True,
                          timeout=120)


def test_demo_writes_everything(tmp_path):
    proc = cli("demo", "--out", "demo", "--epochs", "1", "--samples", "64", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "demo"
    names = {p.name for p in out.iterdir()}
    assert {"prune_digits.py", "recipe.yaml", "report.html", "model.pt",
            "metrics.json"} <= names
    assert "accuracy" in proc.stdout and "params" in proc.stdout    # the summary table
    assert "retrain" in proc.stderr                                  # the progress bar
    report = (out / "report.html").read_text()
    assert report.count("data:image/png;base64,") >= 3 and "<table" in report
    assert "id='summary'" in report
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["params"] < metrics["original_params"]
    model = xp.load_pruned(out / "model.pt")
    assert sum(p.numel() for p in model.parameters()) == metrics["params"]
    assert xp.Recipe.load(out / "recipe.yaml").steps[0].params["criterion"] == "taylor"


def test_run_a_recipe(tmp_path):
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(RECIPE))
    proc = cli("run", "r.yaml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "r_out"
    metrics = json.loads((out / "metrics.json").read_text())
    study = xp.Study.from_recipe(tmp_path / "r.yaml", progress=False)
    assert metrics["params"] == study.step.metrics["params"]
    assert metrics["accuracy"] == pytest.approx(study.step.metrics["accuracy"], abs=1e-9)
    assert (out / "reproduce.py").is_file() and (out / "report.html").is_file()


def test_export_a_saved_study(tmp_path):
    study = xp.Study(xp.zoo.load("toy_mlp"), xp.datasets.load("moons"), seed=0)
    study.score("magnitude")
    study.prune(0.5)
    study.save(tmp_path / "s.xprune")
    proc = cli("export", "s.xprune", "again.py", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    text = (tmp_path / "again.py").read_text()
    assert "study.prune(" in text and "xp.zoo.load('toy_mlp')" in text


def test_lab_copies_the_notebooks_without_launching(tmp_path, capsys):
    proc = cli("lab", "--no-launch", "--dir", "work", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    shipped = sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert shipped and sorted(p.name for p in (tmp_path / "work").glob("*.ipynb")) == shipped
    assert "jupyterlab" in proc.stdout
    # the classroom exercises (student versions) and the nbgrader template, never solutions
    classroom = sorted(p.name for p in (ROOT / "notebooks" / "classroom").glob("*.ipynb"))
    copied = tmp_path / "work" / "classroom"
    assert classroom and sorted(p.name for p in copied.glob("*.ipynb")) == classroom
    assert (copied / "nbgrader_config.py").is_file()
    assert not list((tmp_path / "work").rglob("solutions"))
    (tmp_path / "work" / shipped[0]).write_text("{}")   # the user's edits are kept...
    assert main(["lab", "--no-launch", "--dir", str(tmp_path / "work")]) == 0
    assert "kept" in capsys.readouterr().out
    assert (tmp_path / "work" / shipped[0]).read_text() == "{}"
    assert main(["lab", "--no-launch", "--force", "--dir", str(tmp_path / "work")]) == 0
    assert (tmp_path / "work" / shipped[0]).read_text() != "{}"  # ...unless --force


def test_errors_are_one_line_with_status_2(tmp_path):
    (tmp_path / "broken.yaml").write_text("steps: [\n  - score: {criterion: magnitude\n")
    typo = json.loads(json.dumps(RECIPE))
    typo["steps"][1] = {"prune": {"amout": 0.3}}
    (tmp_path / "typo.yaml").write_text(yaml.safe_dump(typo))
    magic = json.loads(json.dumps(RECIPE))
    magic["steps"][0] = {"score": {"criterion": "magic"}}
    (tmp_path / "magic.json").write_text(json.dumps(magic))
    (tmp_path / "garbage.xprune").write_bytes(b"not a study")
    cases = {  # in a subprocess: exit status, stderr, no traceback, as a user sees them
        ("run", "missing.yaml"): "no such file 'missing.yaml'",
        ("run", "broken.yaml"): "is not valid YAML",
        ("run", "magic.json"): "steps[0].score.criterion=...): unknown name 'magic'; valid "
                               "names are",
        ("export", "garbage.xprune", "x.py"): "is not a readable xprune_nb study",
    }
    procs = {args: subprocess.Popen(command(*args), cwd=tmp_path, env=ENV, text=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for args in cases}
    debug = subprocess.Popen(command("run", "missing.yaml", "--debug"), cwd=tmp_path, env=ENV,
                             text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    for args, expected in cases.items():
        _, stderr = procs[args].communicate(timeout=120)
        assert procs[args].returncode == 2, (args, stderr)
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("xprune-nb: error: "), (args, stderr)
        assert expected in lines[0], (args, lines[0])
        assert "Traceback" not in stderr
    _, stderr = debug.communicate(timeout=120)
    assert debug.returncode != 0 and "Traceback" in stderr and "StudyFileError" in stderr


def test_usage_errors_exit_2(tmp_path):
    proc = cli("demo", "--amount", "1.5", cwd=tmp_path)
    assert proc.returncode == 2 and "expected a number in [0, 1), got '1.5'" in proc.stderr


@pytest.mark.parametrize("args, expected", [
    (["run", "typo.yaml"], "steps[1].prune=...): unknown name 'amout'"),
    (["demo", "--criterion", "magic"], "Study.score(criterion=...): unknown name 'magic'"),
    (["export", "missing.xprune", "x.py"], "no such file"),
])
def test_more_errors_in_process(tmp_path, monkeypatch, capsys, args, expected):
    monkeypatch.chdir(tmp_path)
    typo = json.loads(json.dumps(RECIPE))
    typo["steps"][1] = {"prune": {"amout": 0.3}}
    (tmp_path / "typo.yaml").write_text(yaml.safe_dump(typo))
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("xprune-nb: error: ") and err.count("\n") == 1 and expected in err
