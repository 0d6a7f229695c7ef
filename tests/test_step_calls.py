"""Each step stores the calls that made it (recipe StepConfigs); recipes replay those calls."""

from __future__ import annotations

import xprune_nb as xp
from xprune_nb.record.recipe import StepConfig


def test_steps_store_their_calls_and_recipes_use_them(tmp_path):
    study = xp.Study(xp.zoo.load("toy_mlp"), xp.datasets.load("moons"), seed=0, probe_size=8)
    study.score("magnitude", samples=64, p=2)
    prune = study.prune(0.3, scope="layer")
    retrain = study.retrain(epochs=1, lr=2e-3, progress=False)
    score_call, prune_call = (StepConfig.from_dict(d) for d in prune.calls)
    assert score_call.action == "score" and score_call.params["p"] == 2
    assert score_call.params["samples"] == 64 and "seed" not in score_call.params
    assert prune_call.action == "prune" and prune_call.params["amount"] == 0.3
    assert prune_call.params["scope"] == "layer"
    assert retrain.calls == [{"retrain": {"epochs": 1, "lr": 2e-3, "optimizer": "adam",
                                          "batch_size": 64, "weight_decay": 0.0,
                                          "seed": retrain.config["seed"],
                                          "recalibrate": False,     # no BatchNorm here
                                          "recalibrate_samples": 2048}}]
    recipe = study.recipe()
    assert recipe.steps[0] == score_call and recipe.steps[2].params == retrain.calls[0][
        "retrain"]
    loaded = xp.Study.load(study.save(tmp_path / "s.xprune"))
    assert [s.calls for s in loaded.history] == [s.calls for s in study.history]


def test_a_custom_train_fn_records_no_call():
    study = xp.Study(xp.zoo.load("toy_mlp"), xp.datasets.load("moons"), seed=0, probe_size=8)
    step = study.retrain(train_fn=lambda model, data: None)
    assert step.calls == []
