"""BatchNorm statistics are re-estimated after retraining (on by default for models with
BatchNorm), recorded in the step and replayed by recipes; old recipes replay as before."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import make_study

from xprune_nb.core.errors import ConfigError
from xprune_nb.models.mechanisms.recalibrate import batchnorm_layers, recalibrate_batchnorm
from xprune_nb.record.recipe.replay import plan


def _bn_state(model):
    return {k: v.clone() for k, v in model.state_dict().items() if "running" in k}


def test_retrain_ends_with_fresh_statistics_of_the_final_weights(small_digits):
    on = make_study("residual", small_digits, seed=0)
    off = make_study("residual", small_digits, seed=0)
    step = on.retrain(1, progress=False, recalibrate_samples=200)
    off.retrain(1, progress=False, recalibrate=False)
    assert step.config["recalibrate"] is True and step.config["recalibrate_samples"] == 200
    assert step.config["recalibration"]["examples"] == 200
    assert set(step.config["recalibration"]["layers"]) == set(batchnorm_layers(on.model))
    assert "BatchNorm recalibrated on 200 examples" in step.note
    assert off.step.config["recalibrate"] is False and "recalibration" not in off.step.config
    # the same training; only the statistics differ, and they are those of one cumulative
    # pass (momentum=None) over the training inputs with the final weights
    weights = {k: v for k, v in off.model.state_dict().items() if "running" not in k
               and "num_batches" not in k}
    assert all(torch.equal(v, on.model.state_dict()[k]) for k, v in weights.items())
    assert any(not torch.equal(v, _bn_state(on.model)[k]) for k, v in _bn_state(off.model).items())
    manual = copy.deepcopy(off.model)
    recalibrate_batchnorm(manual, on.data.train.X, batch_size=64, samples=200,
                          forward=on.forward, seed=step.config["seed"])
    assert all(torch.equal(v, _bn_state(on.model)[k]) for k, v in _bn_state(manual).items())


def test_a_model_without_batchnorm_records_no_pass(small_digits):
    study = make_study("mlp", small_digits, seed=0)
    step = study.retrain(1, progress=False)
    assert step.config["recalibrate"] is False and "recalibration" not in step.config


def test_recipes_replay_the_pass_and_old_recipes_replay_without_it(small_digits):
    study = make_study("residual", small_digits, seed=0)
    study.retrain(1, progress=False, recalibrate_samples=128)
    recipe = study.recipe()
    retrain = [s for s in recipe.steps if s.action == "retrain"][0]
    assert retrain.params["recalibrate"] is True and retrain.params["recalibrate_samples"] == 128
    assert [op.params["recalibrate"] for op in plan(recipe) if op.action == "retrain"] == [True]
    # a recipe written before the pass existed names no such key: it replays without it
    for s in recipe.steps:
        s.params.pop("recalibrate", None)
    assert [op.params["recalibrate"] for op in plan(recipe) if op.action == "retrain"] == [False]


def test_iterative_prune_records_the_default_for_its_retraining(small_digits):
    study = make_study("residual", small_digits, seed=0)
    study.score("magnitude", granularity="channel")
    study.prune(0.3, steps=2, retrain={"epochs": 1})
    kinds = [s.kind for s in study.history]
    assert kinds.count("retrain") == 2
    assert all(s.config["recalibrate"] is True for s in study.history if s.kind == "retrain")
    ops = plan(study.recipe())
    assert all(op.params.get("retrain", {}).get("recalibrate", None) is None
               for op in ops if op.action == "prune")


@pytest.mark.parametrize("kwargs, match", [
    ({"recalibrate_samples": 1}, r"Study.retrain\(recalibrate_samples=...\): expected"),
    ({"recalibrate": "yes"}, r"Study.retrain\(recalibrate=...\): expected"),
])
def test_bad_arguments_change_nothing(small_digits, kwargs, match):
    study = make_study("residual", small_digits, seed=0)
    state = copy.deepcopy(study.model.state_dict())
    with pytest.raises(ConfigError, match=match):
        study.retrain(1, progress=False, **kwargs)
    assert len(study.history) == 1
    assert all(torch.equal(v, study.model.state_dict()[k]) for k, v in state.items())


def test_exported_scripts_replay_the_pass(small_digits, tmp_path):
    study = make_study("residual", small_digits, seed=0)
    study.retrain(1, progress=False, recalibrate_samples=128)
    text = study.export_script(tmp_path / "s.py").read_text()
    assert "recalibrate=True" in text and "recalibrate_samples=128" in text
