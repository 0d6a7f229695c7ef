"""Dynamic pruning as a study step: recorded, measured honestly, explained, undone, saved,
replayed from its recipe and refused where it cannot apply."""

from __future__ import annotations

import pytest
import torch

import xprune_nb as xp


@pytest.fixture(scope="module")
def study():
    s = xp.Study(xp.zoo.load("digits_cnn"), xp.datasets.load("digits"), seed=0, probe_size=8)
    s.score("taylor", samples=64)
    s.prune(0.3)
    s.dynamic(epochs=1, finetune=0, samples=64)
    return s


def test_dynamic_step_is_recorded_and_measured(study):
    step = study.step
    assert step.kind == "dynamic" and step.parent == 1
    assert step.structure[-1]["kind"] == "dynamic"
    m = step.metrics
    assert 0 <= m["exit_share"] <= 1 and m["macs"] <= m["macs_longest"]
    assert m["macs_longest"] <= study.history[1].metrics["macs"]
    metrics = study.evaluate(latency=True)
    assert {"macs_longest", "exit_share", "latency_b1_mean_ms", "latency_b1_p95_ms"} <= set(
        metrics.dynamic)
    assert "exit_share" in study.history.to_frame().columns


def test_why_explains_the_channels_of_each_path(study):
    report = study.why()
    frame = report.to_frame()
    assert {"path", "classes", "group", "kept", "of", "kept_relevance"} <= set(frame)
    assert (frame["kept"] <= frame["of"]).all()
    assert report.summary()["branch_point"] == study.step.config["at"]


def test_undo_goto_save_load_and_recipe_restore_it(study, tmp_path):
    x = study.data.test.X[:40]
    with torch.no_grad():
        expected = study.model(x)
    study.undo()
    assert type(study.model).__name__ != "DynamicNet"
    study.goto(2)
    loaded = xp.Study.load(study.save(tmp_path / "dyn.xprune"))
    replayed = xp.Study.from_recipe(study.recipe(), progress=False)
    rebuilt = xp.load_pruned(study.save_pruned(tmp_path / "model.pt"))
    with torch.no_grad():
        for other in (study.model, loaded.model, replayed.model, rebuilt):
            torch.testing.assert_close(other(x), expected, rtol=0, atol=0)


def test_static_calls_on_a_dynamic_model_are_refused(study):
    before = len(study.history)
    with pytest.raises(xp.ModelError, match="dynamic"):
        study.score("magnitude")
    with pytest.raises(xp.ConfigError, match="dynamic"):
        study.retrain(epochs=1, progress=False)
    with pytest.raises(xp.ConfigError, match="dynamic already"):
        study.dynamic()
    assert len(study.history) == before


@pytest.mark.parametrize("kwargs, match", [
    ({"k": 10}, "k"), ({"confidence": 0.0}, "confidence"), ({"confidence": 1.5}, "confidence"),
    ({"keep": 0}, "keep"), ({"criterion": "magnitude"}, "criterion"),
    ({"at": "nope"}, "at"),
])
def test_bad_dynamic_arguments_change_nothing(kwargs, match):
    s = xp.Study(xp.zoo.load("digits_cnn"), xp.datasets.load("digits"), seed=0, probe_size=8)
    with pytest.raises(xp.XPruneError, match=match):
        s.dynamic(epochs=1, finetune=0, samples=32, **kwargs)
    assert len(s.history) == 1 and s.current == 0
