"""Sensitive groups through recipes, exported scripts, study files and streamed splits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import xprune_nb as xp
from xprune_nb.errors import ConfigError, DataError

ROOT = Path(__file__).resolve().parent.parent
NAMES = ["majority", "minority 'b'"]     # a quote: names are data, never code


def _split(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 4, generator=g)
    groups = (torch.arange(n) % 4 == 0).long()          # a 25 % minority
    y = torch.where(groups == 1, X[:, 1] > 0, X[:, 0] > 0).long()
    return X, y, groups


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))


def _pruned_study():
    tr, va, te = _split(40, 0), _split(20, 1), _split(20, 2)
    study = xp.Study(_model(), train=tr, val=va, test=te, group_names=NAMES)
    study.score("magnitude")
    study.prune(0.25)
    return study


def test_a_recipe_carries_the_groups_in_its_data_file(tmp_path):
    study = _pruned_study()
    recipe = study.recipe()
    assert recipe.groups == {"names": NAMES} and recipe.to_dict()["groups"] == {"names": NAMES}
    path = recipe.save(tmp_path / "r.yaml")
    stored = torch.load(tmp_path / "r.data.pt", weights_only=True)
    assert stored["meta"]["group_names"] == NAMES
    assert torch.equal(stored["test"]["groups"], study.data.test.groups)
    again = xp.Study.from_recipe(path, model=_model())
    assert again.data.group_names == NAMES
    assert torch.equal(again.data.val.groups, study.data.val.groups)
    assert again.step.per_group_accuracy == study.step.per_group_accuracy
    assert again.step.metrics["worst_group_accuracy"] == study.step.metrics[
        "worst_group_accuracy"]
    plain = xp.Study(_model(), train=_split(40, 0)[:2]).recipe()
    assert plain.groups is None and "groups" not in plain.to_dict()


def test_a_bundled_dataset_recipe_stores_the_labels_in_a_groups_file(tmp_path):
    data = xp.datasets.load("moons", n_samples=100)
    groups = {k: ["b", "a"] * (len(data.split(k)) // 2) for k in ("train", "val", "test")}
    model = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 2))
    study = xp.Study(model, data, groups=groups)
    study.score("magnitude")
    study.prune(0.25)
    path = study.recipe(model={"factory": "torch.nn:Identity"}).save(tmp_path / "m.json")
    text = json.loads(path.read_text())
    assert text["groups"] == {"names": ["a", "b"], "file": "m.groups.pt"}
    again = xp.Study.from_recipe(path, model=model)
    assert again.data.group_names == ["a", "b"]
    assert torch.equal(again.data.train.groups, study.data.train.groups)
    assert again.step.per_group_accuracy == study.step.per_group_accuracy
    # data passed by hand without labels takes the recipe's stored ones only if they fit
    with pytest.raises(DataError, match=r"train split has 20 examples but 60 group labels"):
        xp.Study.from_recipe(path, model=model, data=xp.data.bundle(*[
            (data.train.X[:20], data.train.y[:20])] * 3))


def test_a_bad_groups_entry_is_refused():
    base = {"model": {"zoo": "toy_mlp"}, "data": {"dataset": "moons"}}
    with pytest.raises(ConfigError, match=r"groups.names=...\): expected a list of distinct"):
        xp.Recipe.from_dict({**base, "groups": {"names": ["a", "a"]}})
    with pytest.raises(ConfigError, match=r"groups.*unknown name 'labels'"):
        xp.Recipe.from_dict({**base, "groups": {"names": ["a"], "labels": [0]}})
    recipe = xp.Recipe.from_dict({**base, "groups": {"names": ["a", "b"]}})
    with pytest.raises(DataError, match=r"measured accuracy per group \(\['a', 'b'\]\), but the "
                                        "data has no group labels"):
        xp.Study.from_recipe(recipe)


def test_the_exported_script_rebuilds_the_groups_and_prints_them(tmp_path, auto_study):
    study = auto_study
    script = study.export_script(tmp_path / "g.py")
    text = script.read_text()
    assert "minority" not in text            # the names live in g.groups.pt, not in code
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(script), "--out", str(tmp_path / "out"),
                           "--quiet"], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["per_group_accuracy"] == pytest.approx(study.step.per_group_accuracy)
    assert metrics["worst_group_accuracy"] == pytest.approx(
        study.step.metrics["worst_group_accuracy"])
    assert f"accuracy[{NAMES[1]}]: " in proc.stdout and "worst_group_accuracy: " in proc.stdout
    (limit,) = metrics["group_limits"]     # auto_prune's limit, re-checked by the script
    assert limit["held"] and limit["max_group_drop"] == 0.05 and "group limit: " in proc.stdout
    assert limit["val_drop"] == pytest.approx(
        xp.recipe.groups.group_limit_report(study)[0]["val_drop"])
    # the recipe the script writes carries the groups and the limit too
    again = xp.Study.from_recipe(tmp_path / "out" / "recipe.yaml", model=_model_16())
    assert again.data.group_names == NAMES
    assert again.recipe().groups["limits"] == study.recipe().groups["limits"]


def test_a_study_file_keeps_groups_of_a_stand_in_split(tmp_path):
    tr, te = _split(40, 0), _split(20, 2)
    study = xp.Study(_model(), train=tr, test=te, group_names=NAMES)   # val: the test split
    back = xp.Study.load(study.save(tmp_path / "s.xps"), model=_model())
    assert back.data.group_names == NAMES
    assert torch.equal(back.data.val.groups, te[2])
    assert back.history[0].val_per_group_accuracy == study.history[0].val_per_group_accuracy


def _trained_study():
    tr, va, te = _split(60, 0), _split(40, 1), _split(40, 2)
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    study = xp.Study(model, train=tr, val=va, test=te, group_names=NAMES)
    study.retrain(epochs=20, lr=0.05, progress=False)
    return study


@pytest.fixture(scope="module")
def auto_study():
    import warnings

    study = _trained_study()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # the budget may not be met under the limit
        study.auto_prune(params=0.5, steps=2, max_group_drop=0.05, criterion="magnitude")
    return study


def test_auto_prunes_group_limit_is_recorded_and_rechecked_on_replay(tmp_path, auto_study):
    study = auto_study
    step = study.step
    assert step.config["group_limit"] == {"max_group_drop": 0.05, "from": 1}
    recipe = study.recipe()
    assert recipe.groups["limits"] == [{"max_group_drop": 0.05, "from": 1,
                                        "at": study.current}]
    again = xp.Study.from_recipe(recipe.save(tmp_path / "a.yaml"), model=_model_16())
    (row,) = xp.recipe.groups.group_limit_report(again)
    assert row["held"] and row["val_drop"] <= 0.05 + 1e-9 and row["step"] == study.current
    assert row["val_drop"] == pytest.approx(xp.recipe.groups.group_limit_report(study)[0][
        "val_drop"])
    # a limit the replay breaks is said, not hidden
    drops = {g: again.history[0].val_per_group_accuracy[g] - a
             for g, a in again.step.val_per_group_accuracy.items()}
    assert max(drops.values()) > 0    # (this pruning costs a group something)
    recipe.groups["limits"] = [{"max_group_drop": 0.0, "from": 0, "at": study.current}]
    with pytest.warns(UserWarning, match=r"breaks auto_prune's max_group_drop=0.0"):
        xp.Study.from_recipe(recipe, model=_model_16())
    with pytest.raises(ConfigError, match=r"groups.limits\[0\].at=...\): expected a step index"):
        xp.Recipe.from_dict({**recipe.to_dict(), "groups": {
            "names": NAMES, "limits": [{"max_group_drop": 0.1, "from": 3, "at": 1}]}})


def _model_16():
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
