"""One transaction per mutating call: interrupts at every phase leave the study as it was, and a
second mutating call from another thread is refused at once."""

from __future__ import annotations

import threading

import pytest
import torch

import xprune_nb as xp
from xprune_nb.core.errors import StudyBusyError


def snapshot(study):
    return ({k: v.clone() for k, v in study.model.state_dict().items()},
            [s.to_dict() for s in study.history], study.current,
            {i: {k: v.clone() for k, v in s.values.items()}
             for i, s in study.timeline.scores.items()})


def assert_same(study, before):
    state, steps, current, scores = before
    now = study.model.state_dict()
    assert now.keys() == state.keys()
    assert all(torch.equal(now[k], state[k]) for k in state)
    assert [s.to_dict() for s in study.history] == steps and study.current == current
    assert {i: {k: v for k, v in s.values.items()}
            for i, s in study.timeline.scores.items()}.keys() == scores.keys()
    at = study.model_at(study.current).state_dict()
    assert all(torch.equal(at[k], now[k]) for k in now)


@pytest.fixture
def study():
    s = xp.Study(xp.zoo.load("digits_cnn"), xp.datasets.load("digits"), seed=0, probe_size=8)
    s.score("magnitude", granularity="channel", samples=32)
    return s


def _boom(*args, **kwargs):
    raise KeyboardInterrupt


@pytest.mark.parametrize("target", [
    "xprune_nb.pruning.groups.apply_channel_plan",          # surgery
    "xprune_nb.measure.step.evaluate_model",                      # evaluation of the new model
    "xprune_nb.explain.drift.probe_drift",                   # drift probe
    "xprune_nb.record.snapshots.SnapshotStore.put",                # snapshot
    "xprune_nb.record.timeline.History.append",                     # the record itself
])
def test_interrupted_prune_leaves_the_study_as_it_was(study, monkeypatch, target):
    before = snapshot(study)
    monkeypatch.setattr(target, _boom)
    with pytest.raises(KeyboardInterrupt):
        study.prune(0.3)
    monkeypatch.undo()
    assert_same(study, before)
    study.prune(0.3)                    # and the study still works
    assert study.current == 1


def test_interrupted_scoring_and_retraining(study, monkeypatch):
    before = snapshot(study)
    monkeypatch.setattr("xprune_nb.criteria.magnitude.MagnitudeCriterion.channel_scores", _boom)
    with pytest.raises(KeyboardInterrupt):
        study.score("magnitude")
    monkeypatch.undo()
    assert_same(study, before)

    class Interrupt(xp.Callback):
        def on_batch_end(self, epoch, batch, loss, accuracy):
            if batch == 2:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        study.retrain(epochs=1, callbacks=[Interrupt()], progress=False)
    assert_same(study, before)
    monkeypatch.setattr("xprune_nb.measure.retraining.measure_step", _boom)
    with pytest.raises(KeyboardInterrupt):
        study.retrain(epochs=1, progress=False)
    assert_same(study, before)


def test_interrupted_iterative_prune_rolls_back_every_round(study, monkeypatch):
    before = snapshot(study)
    calls = {"n": 0}
    from xprune_nb.measure import step as measure

    real = measure.evaluate_model

    def second_round_fails(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr("xprune_nb.measure.step.evaluate_model", second_round_fails)
    with pytest.raises(KeyboardInterrupt):
        study.prune(0.5, steps=2)
    assert_same(study, before)


def test_a_second_mutating_call_is_refused_while_one_runs(study):
    entered, release = threading.Event(), threading.Event()

    class Hold(xp.Callback):
        def on_batch_end(self, epoch, batch, loss, accuracy):
            if batch == 0:
                entered.set()
                release.wait(30)

    errors = []
    worker = threading.Thread(target=lambda: errors.append(
        study.retrain(epochs=1, callbacks=[Hold()], progress=False)))
    worker.start()
    assert entered.wait(30)
    try:
        assert study.busy_with == "Study.retrain"
        with pytest.raises(StudyBusyError, match=r"Study.prune: the study is busy with "
                                                 r"Study.retrain"):
            study.prune(0.3)
        with pytest.raises(StudyBusyError):
            study.goto(0)
        # reading stays possible while the other call runs
        assert len(study.history) == 1 and study.evaluate(latency=False).accuracy > 0.5
    finally:
        release.set()
        worker.join(60)
    assert study.busy_with is None and len(study.history) == 2
    assert study.history[1].kind == "retrain" and study.history[1].parent == 0


def test_prune_that_removes_nothing_is_refused(study):
    before = snapshot(study)
    with pytest.raises(xp.PruneError, match=r"removes no channels/neurons .*smallest "
                                            r"non-empty step removes 1 unit"):
        study.prune(1e-9)
    with pytest.raises(xp.PruneError, match="every group is ignored"):
        study.prune(0.3, ignore=list(study.scores_.values))
    assert_same(study, before)


def test_step_zero_shares_the_original_unless_the_copy_changed_before_its_commit():
    import torch
    from torch import nn

    from xprune_nb.core.history import Step
    from xprune_nb.record.timeline import Timeline

    torch.manual_seed(0)
    original = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2)).eval()
    t = Timeline(original, torch.zeros(2, 3))
    t.commit(Step(0, "original", None), t.model)   # untouched: the original's own tensors
    assert t.snapshots.get(0)["0.weight"].data_ptr() == original[0].weight.data_ptr()
    changed = Timeline(original, torch.zeros(2, 3))
    with torch.no_grad():
        changed.model[0].weight[0, 0] += 1.0   # in place: the version counter says so
    changed.commit(Step(0, "original", None), changed.model)
    kept = changed.snapshots.get(0)["0.weight"]
    assert kept.data_ptr() != original[0].weight.data_ptr()
    assert kept[0, 0] != original[0].weight[0, 0]
    swapped = Timeline(original, torch.zeros(2, 3))
    swapped.model[1].running_mean = torch.ones(2)   # a tensor replaced, not changed in place
    swapped.commit(Step(0, "original", None), swapped.model)
    assert torch.equal(swapped.snapshots.get(0)["1.running_mean"], torch.ones(2))


def test_a_loaded_study_pins_no_tensor_of_its_first_copy(tmp_path):
    study = xp.Study(xp.zoo.load("toy_mlp"), xp.datasets.load("moons"))
    assert study.timeline._copied is None   # cleared by the first commit
    study.save(tmp_path / "s.xps")
    loaded = xp.Study.load(tmp_path / "s.xps", data=xp.datasets.load("moons"))
    assert loaded.timeline._copied is None
