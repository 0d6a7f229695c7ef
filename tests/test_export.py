"""Exported scripts and pruned-model checkpoints.

Round trip: a study in this process, its exported script run in a fresh process
(``python script.py --out DIR``): same tensor shapes, parameter count and accuracy. For every zoo
model, for importable user models (a class with arguments, a factory function) and for a class
defined in a notebook cell (run by a real Jupyter kernel). User strings are hostile on purpose.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from export_helpers import HOSTILE, UserNet, make_user_net, small_digits

import xprune_nb as xp
from xprune_nb.core.errors import ConfigError, StudyFileError
from xprune_nb.record.io.checkpoint import read_checkpoint

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg",
       "PYTHONPATH": os.pathsep.join([str(TESTS), str(ROOT), os.environ.get("PYTHONPATH", "")])}
# a script file name with quotes, a newline and an attempt to close the comment it sits in
HOSTILE_FILE = "it's \"a\"\n'''x.py"

# criterion and granularity per zoo model: every family of criterion, masks on one model
ZOO_PLANS = {
    "digits_cnn": [("taylor", "channel")],
    "digits_concat": [("gradient", "channel")],
    "digits_resnet": [("activation", "channel")],
    "digits_transformer": [("magnitude", "channel")],
    "tabular_mlp": [("taylor", "channel"), ("magnitude", "weight")],
    "toy_mlp": [("random", "channel")],
}


def run_scripts(jobs: list[tuple[Path, Path]], parallel: int = 2) -> dict[Path, tuple]:
    """Run ``python SCRIPT --out OUT --quiet`` for each job, ``parallel`` at a time."""
    results, pending, running = {}, list(jobs), []
    while pending or running:
        while pending and len(running) < parallel:
            script, out = pending.pop(0)
            proc = subprocess.Popen([sys.executable, str(script), "--out", str(out), "--quiet"],
                                    cwd=script.parent, env=ENV, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
            running.append((script, proc))
        script, proc = running.pop(0)
        stdout, stderr = proc.communicate(timeout=120)
        results[script] = (proc.returncode, stdout, stderr)
    return results


def shapes(model) -> dict:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _zoo_study(name: str):
    info = xp.zoo.info(name)
    data = xp.datasets.load(info["dataset"], **info["dataset_options"])
    study = xp.Study(xp.zoo.load(name), data, seed=0)
    for criterion, granularity in ZOO_PLANS[name]:
        study.score(criterion, granularity=granularity, samples=64)
        study.prune(0.3)
        study.retrain(epochs=1, progress=False)
    return study


def _user_class_study():
    torch.manual_seed(0)
    tr, va, te = small_digits(300)
    study = xp.Study(UserNet(width=6, hidden=20), train=tr, val=va, test=te, seed=3)
    study.retrain(epochs=10, lr=1e-2, progress=False)      # trained from scratch here
    study.score("magnitude")
    study.prune(0.4, layer_amounts={HOSTILE: 0.2}, steps=2, retrain={"epochs": 1})
    return study, {"kwargs": {"width": 6, "hidden": 20}}, None


def _user_factory_study():
    tr, va, te = small_digits(200)
    study = xp.Study(make_user_net(width=5), train=tr, val=va, test=te, seed=1)
    study.retrain(epochs=10, lr=1e-2, progress=False)
    study.score("taylor", samples=30, classes=[1, 7])
    study.prune(0.25, ignore=[HOSTILE])
    study.retrain(epochs=1, progress=False)
    return (study, {"factory": "export_helpers:make_user_net", "kwargs": {"width": 5}},
            {"factory": "export_helpers:small_digits", "kwargs": {"n_train": 200}})


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Every study of this module exported and its script run, concurrently."""
    root = tmp_path_factory.mktemp("export")
    cases = {name: (_zoo_study(name), None, None) for name in ZOO_PLANS}
    cases["user_class"] = _user_class_study()
    cases["user_factory"] = _user_factory_study()
    scripts, jobs = {}, []
    for name, (study, model, data) in cases.items():
        folder = root / name
        script_name = HOSTILE_FILE if name == "user_class" else f"prune_{name}.py"
        scripts[name] = study.export_script(folder / script_name, model=model, data=data)
        jobs.append((scripts[name], folder / "out"))
    results = run_scripts(jobs)
    return {name: (cases[name][0], scripts[name], results[scripts[name]]) for name in cases}


CASES = list(ZOO_PLANS) + ["user_class", "user_factory"]


@pytest.mark.parametrize("name", CASES)
def test_script_reproduces_the_study(exported, name):
    study, script, (code, stdout, stderr) = exported[name]
    assert code == 0, stderr[-2000:]
    out = script.parent / "out"
    metrics = json.loads((out / "metrics.json").read_text())
    m = study.step.metrics
    assert metrics["params"] == m["params"] and metrics["nonzero_params"] == m["nonzero_params"]
    assert metrics["macs"] == m["macs"] and metrics["world_size"] == 1
    assert m["accuracy"] > 0.7                                  # trained models, not noise
    assert metrics["accuracy"] == pytest.approx(m["accuracy"], abs=1e-9)
    assert metrics["loss"] == pytest.approx(m["loss"], rel=1e-5)
    payload = torch.load(out / "model.pt", weights_only=True)  # plain tensors and data
    assert payload["structure"] == study.step.structure
    user = name.startswith("user")
    if user:  # the file names the user's class: importing it needs the opt-in
        with pytest.raises(StudyFileError, match=r"trust_source=True"):
            xp.load_pruned(out / "model.pt")
    model = xp.load_pruned(out / "model.pt", trust_source=user)  # no model= needed
    assert shapes(model) == shapes(study.model)
    for key, value in study.model.state_dict().items():
        assert torch.allclose(model.state_dict()[key], value, atol=1e-5), key
    x = study.data.test.X
    with torch.no_grad():
        acc = (model(x).argmax(1) == study.data.test.y).float().mean().item()
    assert acc == pytest.approx(m["accuracy"], abs=1e-6)  # float32 mean here


def test_scripts_are_valid_ruff_clean_and_carry_no_user_string_as_code(exported):
    scripts = [s for _, s, _ in exported.values()]
    for script in scripts:
        text = script.read_text()
        ast.parse(text)
        assert text.startswith("#!/usr/bin/env python3\n# Reproduces a pruned model")
        assert "import xprune_nb as xp" in text and "widgets" not in text
        # the hostile strings appear only inside literals: never as lines of their own
        assert "\nraise SystemExit('pwned')" not in text and "'''x.py" not in text
        names = {n.id for n in ast.walk(ast.parse(text)) if isinstance(n, ast.Name)}
        assert "SystemExit" not in names and "os" not in names
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    clean = [s for s in scripts if "user_class" not in str(s)]  # a hostile key makes a long line
    if Path(ruff).exists():
        proc = subprocess.run([ruff, "check", "--no-cache", "--config",
                               str(ROOT / "pyproject.toml"), *map(str, clean)],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout


def test_hostile_file_name_stays_a_literal(exported):
    _, script, _ = exported["user_class"]
    text = script.read_text()
    assert "load_weights(model, HERE / 'it\\'s \"a\"\\n\\'\\'\\'x.weights.pt')" in text
    assert (script.parent / "it's \"a\"\n'''x.weights.pt").is_file()
    assert (script.parent / "it's \"a\"\n'''x.data.pt").is_file()


def test_epochs_override(exported, tmp_path, capsys):
    import importlib.util

    _, script, _ = exported["toy_mlp"]
    # the script is a module too: its main(argv) runs here, cheaper than another process
    spec = importlib.util.spec_from_file_location("exported_toy_mlp", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--out", str(tmp_path), "--quiet", "--epochs", "2"])
    recipe = xp.Recipe.load(tmp_path / "recipe.yaml")
    assert [s.params["epochs"] for s in recipe.steps if s.action == "retrain"] == [2]
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--epochs", "0"])
    assert exit_info.value.code == 2
    assert "--epochs must be a positive integer" in capsys.readouterr().err


# ------------------------------------------------------------------ a class from a notebook
NOTEBOOK_CELLS = [
    "import json, torch\nimport torch.nn.functional as F\nfrom torch import nn\n"
    "import xprune_nb as xp\ntorch.set_num_threads(1)\nWIDTH = 12",
    "class Block(nn.Module):\n    def __init__(self, c):\n        super().__init__()\n"
    "        self.conv = nn.Conv2d(c, c, 3, padding=1)\n\n    def forward(self, x):\n"
    "        return F.relu(self.conv(x)) + x",
    "class Net(nn.Module):\n    def __init__(self, width=WIDTH, classes=10):\n"
    "        super().__init__()\n        self.stem = nn.Conv2d(1, width, 3, padding=1)\n"
    "        self.block = Block(width)\n        self.head = nn.Linear(width * 4, classes)\n\n"
    "    def forward(self, x):\n        x = self.block(F.relu(self.stem(x)))\n"
    "        return self.head(torch.flatten(F.max_pool2d(x, 4), 1))",
    "torch.manual_seed(0)\nstudy = xp.Study(Net(), xp.datasets.load('digits'), seed=0)\n"
    "study.retrain(epochs=2, lr=5e-3, progress=False)\nstudy.score('taylor', samples=64)\n"
    "study.prune(0.25)\nstudy.retrain(epochs=1, progress=False)\n"
    "script = study.export_script(OUT + '/nb_script.py')\n"
    "print(json.dumps(study.step.metrics))",
    "model = xp.load_pruned(OUT + '/out/model.pt', model=Net())\n"
    "same = all(torch.equal(model.state_dict()[k], v) for k, v in "
    "study.model.state_dict().items())\n"
    "try:\n    xp.load_pruned(OUT + '/out/model.pt')\n    needs_model = False\n"
    "except xp.StudyFileError:\n    needs_model = True\nprint(json.dumps([same, needs_model]))",
]


def _output(cell) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.get("name") == "stdout")


def test_notebook_class_round_trip(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    cells = [f"OUT = {str(tmp_path)!r}"] + NOTEBOOK_CELLS
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=120,
                                     resources={"metadata": {"path": str(tmp_path)}})
    with client.setup_kernel(env=ENV):
        for i in range(len(cells) - 1):
            client.execute_cell(nb.cells[i], i)
        metrics = json.loads(_output(nb.cells[-2]))
        script = tmp_path / "nb_script.py"
        text = script.read_text()
        assert "class Net(nn.Module):" in text and "class Block(nn.Module):" in text
        assert "WIDTH = 12" in text and "from torch import nn" in text
        (code, _, stderr), = run_scripts([(script, tmp_path / "out")]).values()
        assert code == 0, stderr[-2000:]
        client.execute_cell(nb.cells[-1], len(cells) - 1)
        assert json.loads(_output(nb.cells[-1])) == [True, True]
    got = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert got["params"] == metrics["params"] and metrics["accuracy"] > 0.5
    assert got["accuracy"] == pytest.approx(metrics["accuracy"], abs=1e-9)


# ------------------------------------------------------------------ refusals
def test_hostile_class_name_is_refused(tmp_path, monkeypatch):
    import export_helpers

    weird = type("Net'); import os #", (UserNet,), {"__module__": "export_helpers"})
    monkeypatch.setattr(export_helpers, weird.__qualname__, weird, raising=False)
    study = xp.Study(weird(width=4), train=small_digits(100)[0], seed=0)
    with pytest.raises(ConfigError, match=r"model\.factory=\.\.\.\): expected 'package"):
        study.export_script(tmp_path / "x.py", model={"kwargs": {"width": 4}})
    assert not (tmp_path / "x.py").exists()
    local = type("Local", (UserNet,), {"__module__": "__main__"})
    study = xp.Study(local(width=4), train=small_digits(100)[0], seed=0)
    with pytest.raises(ConfigError, match="cannot find the source code of Local"):
        study.recipe(model={"kwargs": {"width": 4}})


def test_checkpoint_never_runs_code(tmp_path):
    study = xp.Study(xp.zoo.load("toy_mlp"), xp.datasets.load("moons"), seed=0)
    study.score("magnitude", granularity="weight")
    study.prune(0.5)
    path = study.save_pruned(tmp_path / "model.pt")
    model = xp.load_pruned(path)                            # masks come back too
    assert hasattr(model.hidden[0], "weight_mask")
    assert torch.equal(model.hidden[0].weight, study.model.hidden[0].weight)
    payload = read_checkpoint(path)
    payload["architecture"].update(module="os", qualname="system", zoo=None,
                                   kwargs={"command": "echo pwned"})
    torch.save(payload, tmp_path / "evil.pt")
    with pytest.raises(StudyFileError, match="Pass model=.* or opt in with trust_source=True"):
        xp.load_pruned(tmp_path / "evil.pt")
    with pytest.raises(StudyFileError, match="os.system is not a torch.nn.Module class"):
        xp.load_pruned(tmp_path / "evil.pt", trust_source=True)
    torch.save(study.model, tmp_path / "pickled.pt")      # a whole pickled module: refused
    with pytest.raises(StudyFileError, match="not a readable checkpoint"):
        xp.load_pruned(tmp_path / "pickled.pt")
    with pytest.raises(StudyFileError, match="no such file"):
        xp.load_pruned(tmp_path / "missing.pt")
    with pytest.raises(StudyFileError, match="does not fit the model given"):
        xp.load_pruned(path, model=torch.nn.Linear(2, 2))


def test_export_needs_a_py_name(tmp_path):
    study = xp.Study(xp.zoo.load("toy_mlp"), xp.datasets.load("moons"), seed=0)
    with pytest.raises(ConfigError, match=r"export_script\(path=...\): expected a file name "
                                          "ending in .py"):
        study.export_script(tmp_path / "script.txt")


def test_source_capture_from_the_cell_history(monkeypatch):
    """Without a file or linecache entry, the class is found in IPython's ``In`` history."""
    import types

    from xprune_nb.export.script import render_script
    from xprune_nb.record.recipe.source import capture_model_source

    cells = ["import torch\nfrom torch import nn\nSCALE = torch.ones(1)",
             "class Scaled(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
             "        self.fc = nn.Linear(2, 2)\n\n    def forward(self, x):\n"
             "        return self.fc(x) * SCALE"]
    notebook = types.ModuleType("__main__")
    notebook.In = [""] + cells
    for cell in cells:
        exec(compile(cell, "<not in linecache>", "exec"), notebook.__dict__)
    monkeypatch.setitem(sys.modules, "__main__", notebook)
    model = notebook.Scaled()
    with pytest.raises(ConfigError, match=r"uses the notebook variable 'SCALE' \(Tensor\)"):
        capture_model_source(model)
    notebook.SCALE = 2.0
    text = capture_model_source(model).text()
    assert text.startswith("from torch import nn\nSCALE = 2.0\n") and "class Scaled" in text
    clash = xp.Recipe(model={"source": "def main():\n    pass\n\n\nclass Net:\n    pass",
                             "class_name": "Net"}, data={"dataset": "moons"})
    with pytest.raises(ConfigError, match=r"the notebook code defines \['main'\]"):
        render_script(clash)
