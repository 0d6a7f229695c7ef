"""Recipes: schema validation, YAML/JSON files, study -> recipe -> study replays."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import TinyMLP, state_equal

import xprune_nb as xp
from xprune_nb.core.errors import ConfigError, StudyFileError
from xprune_nb.record.recipe import Recipe, StepConfig

BASE = {"model": {"zoo": "toy_mlp"}, "data": {"dataset": "moons"},
        "steps": [{"score": {"criterion": "magnitude"}}, {"prune": {"amount": 0.3}},
                  {"retrain": {"epochs": 1}}]}


def _with(path: tuple, value) -> dict:
    d = copy.deepcopy(BASE)
    target = d
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return d


@pytest.fixture(scope="module")
def moons():
    return xp.datasets.load("moons")


# ------------------------------------------------------------------ validation
@pytest.mark.parametrize("path, value, match", [
    (("steps", 1, "prune", "amout"), 0.3,
     r"Recipe\(steps\[1\]\.prune=\.\.\.\): unknown name 'amout'; valid names are 'amount'"),
    (("steps", 1, "prune", "amount"), 1.5,
     r"Recipe\(steps\[1\]\.prune\.amount=\.\.\.\): expected a number in \[0, 1\), got 1\.5"),
    (("steps", 2, "retrain", "epochs"), 0,
     r"steps\[2\]\.retrain\.epochs=\.\.\.\): expected an integer in \[1, 1000000\], got 0"),
    (("steps", 2, "retrain", "optimizer"), "adagrad", r"steps\[2\]\.retrain\.optimizer"),
    (("steps", 0, "score", "criterion"), "magic",
     r"steps\[0\]\.score\.criterion=\.\.\.\): unknown name 'magic'; valid names are .*'taylor'"),
    (("steps", 0, "score", "q"), 2, r"steps\[0\]\.score=\.\.\.\): unknown name 'q'"),
    (("steps", 0, "score", "p"), 3, None),  # a criterion's own option is checked by it later
    (("steps", 1, "prune", "retrain"), {"epoch": 1},
     r"steps\[1\]\.prune\.retrain=\.\.\.\): unknown name 'epoch'"),
    (("model", "weigths"), "w.pt", r"Recipe\(model=\.\.\.\): unknown name 'weigths'"),
    (("model", "zoo"), "resnet1000", r"model\.zoo=\.\.\.\): unknown name 'resnet1000'"),
    (("data", "options"), [1], r"data\.options=\.\.\.\): expected a mapping"),
    (("seed",), "0", r"Recipe\(seed=\.\.\.\): expected an integer, got '0'"),
    (("extra",), 1, r"Recipe\(recipe=\.\.\.\): unknown name 'extra'"),
])
def test_validation_names_the_step_and_field(path, value, match):
    if match is None:
        Recipe.from_dict(_with(path, value))
        return
    with pytest.raises(ConfigError, match=match):
        Recipe.from_dict(_with(path, value))


def test_structural_errors():
    with pytest.raises(ConfigError, match=r"steps\[0\] action=\.\.\.\): unknown name 'trim'"):
        Recipe.from_dict(_with(("steps",), [{"trim": {}}]))
    with pytest.raises(ConfigError, match=r"steps\[1\]\.prune=\.\.\.\): a prune step needs a "
                                           "score step before it"):
        Recipe.from_dict(_with(("steps",), [{"retrain": {}}, {"prune": {"amount": 0.2}}]))
    with pytest.raises(ConfigError, match=r"model=\.\.\.\): expected a mapping with exactly one"):
        Recipe.from_dict(_with(("model",), {"zoo": "toy_mlp", "factory": "a:b"}))
    with pytest.raises(ConfigError, match=r"model\.factory=\.\.\.\): expected 'package"):
        Recipe.from_dict(_with(("model",), {"factory": "os; rm -rf /:x"}))
    with pytest.raises(ConfigError, match=r"model\.class_name=\.\.\.\): expected a Python "
                                           "identifier"):
        Recipe.from_dict(_with(("model",), {"source": "class A: pass", "class_name": "A()"}))
    with pytest.raises(ConfigError, match=r"format=\.\.\.\): expected 'xprune_nb.record.recipe'"):
        Recipe.from_dict(_with(("format",), "other"))


@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".json"])
def test_save_load_round_trip(tmp_path, suffix):
    recipe = Recipe.from_dict(BASE)
    path = recipe.save(tmp_path / f"r{suffix}")
    assert Recipe.load(path) == recipe
    assert Recipe.load(path).steps[1] == StepConfig("prune", {"amount": 0.3})


def test_load_errors(tmp_path):
    with pytest.raises(StudyFileError, match="no such file"):
        Recipe.load(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: [\n  - score: {criterion: magnitude\n")
    with pytest.raises(ConfigError, match=r"Recipe.load\(path=...\): .*bad.yaml' is not valid "
                                           "YAML"):
        Recipe.load(bad)
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{'model': 1}")
    with pytest.raises(ConfigError, match="is not valid JSON"):
        Recipe.load(bad_json)
    with pytest.raises(ConfigError, match="expected a file name ending in .yaml"):
        Recipe.from_dict(BASE).save(tmp_path / "r.txt")


def test_with_epochs_reaches_nested_retraining():
    r = Recipe.from_dict(_with(("steps", 1, "prune"), {"amount": 0.3, "steps": 2,
                                                      "retrain": {"epochs": 5}}))
    r2 = r.with_epochs(1)
    assert r2.steps[1].params["retrain"]["epochs"] == 1 and r2.steps[2].params["epochs"] == 1
    assert r.steps[1].params["retrain"]["epochs"] == 5  # the original is untouched


# ------------------------------------------------------------------ study -> recipe -> study
def test_branched_history_replays_exactly(moons):
    study = xp.Study(xp.zoo.load("toy_mlp"), moons, seed=4)
    study.score("taylor", samples=64)
    study.prune(0.3)
    study.retrain(epochs=1, progress=False)
    study.undo()                                     # back to step 1: a branch starts here
    study.retrain(epochs=2, lr=3e-3, progress=False)  # step 3, seeded by its own index
    study.score("magnitude", granularity="weight")
    study.prune(0.5, rewind="original")
    recipe = study.recipe()
    assert [s.action for s in recipe.steps] == ["score", "prune", "retrain", "score", "prune"]
    assert recipe.steps[2].params["seed"] == 4 + 3
    assert recipe.steps[4].params["rewind"] == "original"
    again = xp.Study.from_recipe(recipe, progress=False)
    assert state_equal(again.model.state_dict(), study.model.state_dict())
    assert again.step.metrics["accuracy"] == study.step.metrics["accuracy"]


def test_iterative_prune_whole_or_by_rounds(moons):
    study = xp.Study(xp.zoo.load("toy_mlp"), moons, seed=0)
    study.score("magnitude")
    study.prune(0.5, steps=2, retrain={"epochs": 1}, layer_amounts={"hidden.0": 0.4})
    whole = study.recipe()
    assert [s.action for s in whole.steps] == ["score", "prune"]
    assert whole.steps[1].params["steps"] == 2
    again = xp.Study.from_recipe(whole, progress=False)
    assert state_equal(again.model.state_dict(), study.model.state_dict())
    study.goto(2)                 # after round 1 and its retraining (re-scored for round 2)
    partial = study.recipe()
    assert [s.action for s in partial.steps] == ["score", "prune", "retrain", "score"]
    assert partial.steps[1].params["steps"] == 1
    again = xp.Study.from_recipe(partial, progress=False)
    assert state_equal(again.model.state_dict(), study.model.state_dict())


def test_trailing_score_is_kept(moons):
    study = xp.Study(xp.zoo.load("toy_mlp"), moons)
    study.score("magnitude", p=2)
    recipe = study.recipe()
    assert recipe.steps == [StepConfig("score", {
        "criterion": "magnitude", "granularity": "channel", "samples": 256, "classes": None,
        "prune_output": False, "p": 2, "batch_size": 64})]
    assert xp.Study.from_recipe(recipe).scores_.criterion == "magnitude"


def test_weights_and_data_files(tmp_path, moons):
    shipped = xp.Study(xp.zoo.load("toy_mlp"), moons)
    shipped.score("magnitude")
    shipped.recipe().save(tmp_path / "shipped.yaml")
    assert not (tmp_path / "shipped.weights.pt").exists()   # the zoo's own weights

    tuned = xp.zoo.load("toy_mlp")
    with torch.no_grad():
        tuned.head.bias.add_(0.5)
    torch.manual_seed(0)
    X = torch.randn(90, 2)
    y = (X[:, 0] > 0).long()
    study = xp.Study(tuned, train=(X[:60], y[:60]), test=(X[60:], y[60:]), seed=1)
    study.score("magnitude")
    study.prune(0.25)
    path = study.recipe().save(tmp_path / "sub" / "custom.yaml")
    assert (tmp_path / "sub" / "custom.weights.pt").exists()
    assert (tmp_path / "sub" / "custom.data.pt").exists()
    loaded = Recipe.load(path)
    assert loaded.model == {"zoo": "toy_mlp", "weights": "custom.weights.pt"}
    again = xp.Study.from_recipe(path)                       # relative to the recipe file
    assert state_equal(again.model.state_dict(), study.model.state_dict())
    assert torch.equal(again.data.test.X, study.data.test.X)


def test_user_class_needs_its_arguments(moons):
    torch.manual_seed(0)
    study = xp.Study(TinyMLP(n_in=2, num_classes=2), moons)
    with pytest.raises(ConfigError, match=r"Study.recipe\(model=...\): TinyMLP\(\*\*\{\}\) does "
                                          "not rebuild the study's architecture"):
        study.recipe()
    recipe = study.recipe(model={"kwargs": {"n_in": 2, "num_classes": 2}})
    assert recipe.model == {"factory": "conftest:TinyMLP",
                            "kwargs": {"n_in": 2, "num_classes": 2}}


def test_source_recipe_needs_trust(moons):
    source = ("from torch import nn\n\n\nclass Net(nn.Module):\n    def __init__(self):\n"
              "        super().__init__()\n        self.fc = nn.Linear(2, 8)\n"
              "        self.head = nn.Linear(8, 2)\n\n    def forward(self, x):\n"
              "        return self.head(self.fc(x).relu())\n")
    recipe = Recipe.from_dict({"model": {"source": source, "class_name": "Net"},
                               "data": {"dataset": "moons"},
                               "steps": [{"score": {"criterion": "magnitude"}},
                                         {"prune": {"amount": 0.25}}]})
    with pytest.raises(ConfigError, match="trust_source=True"):
        xp.Study.from_recipe(recipe)
    study = xp.Study.from_recipe(recipe, trust_source=True)
    assert study.model.fc.out_features == 6
    # the study remembers its source: its own recipe carries it on
    assert study.recipe().model["source"] == source


def test_stopped_and_custom_training_are_refused(moons):
    study = xp.Study(xp.zoo.load("toy_mlp"), moons)
    study.retrain(train_fn=lambda model, data: None, progress=False)
    with pytest.raises(ConfigError, match=r"step 1 \(retrain 1 ep\) retrained with your own "
                                          "train_fn"):
        study.recipe()
    stop = xp.StopSignal()
    stop.set()
    study.goto(0)
    study.retrain(stop=stop, progress=False)
    with pytest.raises(ConfigError, match="was stopped before it finished"):
        study.recipe()
