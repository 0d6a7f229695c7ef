"""Models built as nn.Sequential in a cell export to scripts without any class to import."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from collections import OrderedDict

import pytest
import torch
from torch import nn

import xprune_nb as xp
from xprune_nb.record.recipe.sequential import sequential_source

HOSTILE = "x'); import os  #"


def _model():
    torch.manual_seed(0)
    return nn.Sequential(OrderedDict([
        ("features", nn.Sequential(nn.Conv2d(1, 6, 3), nn.BatchNorm2d(6), nn.ReLU(),
                                   nn.MaxPool2d(2))),
        ("flat", nn.Flatten()),
        (HOSTILE, nn.Linear(6 * 3 * 3, 20)),
        ("act", nn.ReLU()),
        ("drop", nn.Dropout(0.1)),
        ("out", nn.Linear(20, 10)),
    ]))


def test_source_rebuilds_same_architecture():
    model = _model()
    captured = sequential_source(model)
    namespace = {"nn": nn, "OrderedDict": OrderedDict}
    exec(compile(captured.text(), "<test>", "exec"), namespace)  # noqa: S102
    rebuilt = namespace[captured.class_name]()
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()}
    tree = ast.parse(captured.text())
    names = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)]
    assert HOSTILE in names                       # the layer name is a string literal
    assert not any(isinstance(n, ast.Import) and n.names[0].name == "os"
                   for n in ast.walk(tree))


@pytest.mark.parametrize("layer", [
    nn.Conv2d(1, 4, 3, padding=1, padding_mode="reflect"),   # repr prints reflect unquoted
    nn.MultiheadAttention(8, 2),                              # repr holds no arguments
])
def test_layers_that_cannot_be_rebuilt_are_refused(layer):
    assert sequential_source(nn.Sequential(layer)) is None


def test_subclasses_are_not_treated_as_plain_sequential():
    class Mine(nn.Sequential):
        pass

    assert sequential_source(Mine(nn.Linear(2, 2))) is None


def test_exported_script_reproduces_sequential_study(tmp_path):
    data = xp.datasets.load("digits")
    study = xp.Study(_model(), data, seed=0)
    study.retrain(epochs=3, lr=1e-2, progress=False)
    study.score("taylor", samples=128)
    study.prune(0.3)
    study.retrain(epochs=1, progress=False)
    script = study.export_script(tmp_path / "prune_seq.py")
    env = {**os.environ, "MPLBACKEND": "Agg"}
    res = subprocess.run([sys.executable, str(script), "--out", str(tmp_path / "out"),
                          "--quiet"], capture_output=True, text=True, env=env, timeout=180)
    assert res.returncode == 0, res.stderr[-2000:]
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["params"] == study.step.metrics["params"]
    assert metrics["accuracy"] == pytest.approx(study.step.metrics["accuracy"], abs=1e-9)
    model = xp.load_pruned(tmp_path / "out" / "model.pt", model=_model())
    for key, value in study.model.state_dict().items():
        assert torch.allclose(model.state_dict()[key], value, atol=1e-6), key


def test_dropout_models_retrain_deterministically():
    results = []
    for i in range(2):
        study = xp.Study(_model(), xp.datasets.load("digits"), seed=0)
        torch.manual_seed(123 + i)  # the caller's global RNG state must not matter
        torch.rand(7 + i)
        study.retrain(epochs=1, progress=False)
        results.append(study.model.state_dict())
    assert all(torch.equal(results[0][k], results[1][k]) for k in results[0])
    state = torch.random.get_rng_state()
    study.retrain(epochs=1, progress=False)
    assert torch.equal(state, torch.random.get_rng_state())   # the caller's RNG is untouched
