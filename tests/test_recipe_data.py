"""Recipes record the data's sample sizes and description and replay them; exported scripts take
their data as an argument (``--data FILE``: .pt of plain tensors or .npz), checked before use."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import xprune_nb as xp
from xprune_nb.core.errors import ConfigError, StudyFileError
from xprune_nb.data import bundle
from xprune_nb.export import load_data
from xprune_nb.record.recipe import Recipe

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg",
       "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
SAMPLING = {"eval_samples": 30, "score_samples": 40, "probe_size": 8}


def _splits():
    moons = xp.datasets.load("moons", seed=0)
    return {name: (s.X, s.y) for name, s in moons.splits().items()}


@pytest.fixture(scope="module")
def study():
    s = _splits()
    st = xp.Study(xp.zoo.load("toy_mlp"), train=s["train"], val=s["val"], test=s["test"],
                  seed=2, **SAMPLING)
    st.score("taylor")
    st.prune(0.3)
    return st


def test_recipe_records_and_replays_the_sample_sizes(study):
    recipe = study.recipe()
    assert recipe.sampling == SAMPLING
    described = recipe.data_description
    assert described["splits"]["train"]["size"] == len(study.data.train)
    assert described["sampling"]["eval_samples"] == 30
    again = Recipe.from_dict(recipe.to_dict())
    assert again.sampling == SAMPLING and again.data_description == described
    replayed = xp.Study.from_recipe(recipe, progress=False)
    assert len(replayed.probe_y) == 8 and len(replayed.data.test) == 30
    assert replayed.history[1].config["score_options"]["samples"] == 40
    torch.testing.assert_close(replayed.probe_x, study.probe_x)
    assert replayed.step.metrics["accuracy"] == study.step.metrics["accuracy"]


def test_recipe_refuses_bad_sampling(study):
    d = study.recipe().to_dict()
    with pytest.raises(ConfigError, match=r"Recipe\(sampling.probe_size=...\): expected a "
                                          r"positive integer or 'all'"):
        Recipe.from_dict({**d, "sampling": {"probe_size": 0}})
    with pytest.raises(ConfigError, match=r"Recipe\(sampling=...\): unknown name 'probes'"):
        Recipe.from_dict({**d, "sampling": {"probes": 3}})


def test_recipe_with_data_as_an_argument_needs_it(study):
    d = {**study.recipe().to_dict(), "data": {"argument": "moons tensors"}}
    with pytest.raises(ConfigError, match=r"Study.from_recipe\(data=...\): this recipe's data "
                                          r"is passed when it is replayed"):
        xp.Study.from_recipe(d, progress=False)
    s = _splits()
    replayed = xp.Study.from_recipe(d, data=bundle(*s.values()), progress=False)
    assert replayed.step.metrics["params"] == study.step.metrics["params"]


def _npz(path: Path, splits: dict) -> Path:
    np.savez(path, **{f"{k}_{p}": t.numpy() for k, (X, y) in splits.items()
                      for p, t in (("X", X), ("y", y))})
    return path


def test_script_runs_on_data_given_as_an_argument(study, tmp_path):
    script = study.export_script(tmp_path / "prune_moons.py")
    (tmp_path / "prune_moons.data.pt").unlink()       # the script must use --data, not its copy
    data = _npz(tmp_path / "moons.npz", _splits())
    help_text = subprocess.run([sys.executable, str(script), "--help"], env=ENV, text=True,
                               capture_output=True, timeout=120, cwd=tmp_path).stdout
    flat = " ".join(help_text.split())
    assert "--data" in flat and "weights_only=True" in flat and ".npz" in flat
    assert "probe_size=8" in flat
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(script), "--data", str(data), "--out", str(out),
                           "--quiet"], env=ENV, text=True, capture_output=True, timeout=120,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    m = study.step.metrics
    assert metrics["params"] == m["params"] and metrics["macs"] == m["macs"]
    assert metrics["accuracy"] == pytest.approx(m["accuracy"], abs=1e-9)
    written = Recipe.load(out / "recipe.yaml")
    assert written.sampling == SAMPLING


def test_load_data_reads_pt_and_npz_and_refuses_bad_files(tmp_path):
    s = _splits()
    pt = tmp_path / "d.pt"
    torch.save({k: {"X": X, "y": y} for k, (X, y) in s.items()}, pt)
    a, b = load_data(pt), load_data(_npz(tmp_path / "d.npz", s))
    torch.testing.assert_close(a.train.X, b.train.X)
    named = {"input_ids": torch.randint(1, 9, (6, 5)), "attention_mask": torch.ones(6, 5)}
    torch.save({"train": {"X": named, "y": torch.tensor([0, 1] * 3)}}, pt)
    assert set(load_data(pt).train.X) == {"input_ids", "attention_mask"}
    np.savez(tmp_path / "n.npz", **{"train_X.input_ids": named["input_ids"].numpy(),
                                    "train_y": np.array([0, 1] * 3)})
    assert set(load_data(tmp_path / "n.npz").train.X) == {"input_ids"}
    torch.save({"train": {"X": torch.zeros(4, 2), "y": torch.zeros(3, dtype=torch.long)}}, pt)
    with pytest.raises(StudyFileError, match=r"load_data\(path=...\): .*split 'train': X has "
                                             r"\{'X': 4\} rows and y 3"):
        load_data(pt)
    torch.save({"train": {"X": torch.zeros(4, 2), "y": torch.zeros(4)}}, pt)
    with pytest.raises(StudyFileError, match=r"y must be a 1-D tensor of integer class labels"):
        load_data(pt)
    torch.save({"tran": {}}, pt)
    with pytest.raises(StudyFileError, match=r"must hold a 'train' split"):
        load_data(pt)
    np.savez(tmp_path / "bad.npz", weights=np.zeros(3))
    with pytest.raises(StudyFileError, match=r"holds array 'weights'; expected train_X"):
        load_data(tmp_path / "bad.npz")
    np.save(tmp_path / "obj.npy", np.array([object()], dtype=object))
    (tmp_path / "obj.npy").rename(tmp_path / "obj.npz")
    with pytest.raises(StudyFileError, match=r"not a readable .npz"):
        load_data(tmp_path / "obj.npz")
