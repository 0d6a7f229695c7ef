"""The Study workflow: bundled and user data, history, undo/goto, schedules, retraining."""

from __future__ import annotations

import pytest
import torch
from conftest import TinyMLP, make_study, state_equal
from torch.utils.data import DataLoader, TensorDataset

import xprune_nb as xp
from xprune_nb.data import StreamSplit


def test_quickstart_on_bundled_model_and_data(digits):
    model = xp.zoo.load("digits_cnn")
    original_state = {k: v.clone() for k, v in model.state_dict().items()}
    study = xp.Study(model, digits, seed=0)
    scores = study.score("taylor", granularity="channel", samples=128)
    assert isinstance(scores, xp.Scores) and scores.num_units > 0
    step = study.prune(0.5)
    assert step.metrics["params"] < study.history[0].metrics["params"]
    study.retrain(epochs=1, progress=False)
    m = study.evaluate(latency=True)
    assert m.accuracy > 0.8 and m["params"] == m.params
    assert set(m.latency_ms) == {1, 64} and m.macs > 0 and m.size_bytes > 0
    assert len(study.history) == 3
    study.undo()
    assert study.current == 1
    study.goto(0)
    assert state_equal(study.model.state_dict(), study.original.state_dict())
    assert state_equal(model.state_dict(), original_state)   # the user's object is untouched


@pytest.mark.parametrize("form", ["tensors", "numpy", "dataset", "loader"])
def test_user_data_forms(form, digits):
    X, y = digits.train.X[:200], digits.train.y[:200]
    if form == "tensors":
        train = (X, y)
    elif form == "numpy":
        train = (X.numpy(), y.numpy())
    elif form == "dataset":
        train = TensorDataset(X, y)
    else:
        train = DataLoader(TensorDataset(X, y), batch_size=32)
    study = xp.Study(TinyMLP(), train=train, test=(digits.test.X, digits.test.y))
    assert len(study.data.train) == 200
    if form in ("dataset", "loader"):
        # kept as given (never copied whole): its sample is a seeded order of the same items
        assert isinstance(study.data.train, StreamSplit) and study.data.train.size == 200
        assert torch.equal(study.data.train.y.sort().values, y.sort().values)
    else:
        assert torch.equal(study.data.train.y, y)
    study.score("magnitude")
    study.prune(0.2)
    study.retrain(epochs=1, progress=False)


def test_undo_restores_exact_weights(small_digits):
    study = make_study("residual", small_digits, max_snapshots=2)
    snapshots = []
    study.score("taylor", samples=64)
    study.prune(0.3)
    snapshots.append({k: v.clone() for k, v in study.model.state_dict().items()})
    study.retrain(epochs=1, progress=False)
    snapshots.append({k: v.clone() for k, v in study.model.state_dict().items()})
    study.score("magnitude", granularity="weight")
    study.prune(0.5)
    assert study.timeline.snapshots.on_disk      # older snapshots were spilled
    study.undo()
    assert state_equal(study.model.state_dict(), snapshots[1])
    study.goto(1)
    assert state_equal(study.model.state_dict(), snapshots[0])
    study.goto(3)
    assert hasattr(study.model.c1, "weight_mask")


def test_branching_keeps_history(small_digits):
    study = make_study("mlp", small_digits)
    study.score("magnitude")
    study.prune(0.5)
    study.undo()
    study.score("random")
    step = study.prune(0.25)
    assert len(study.history) == 3 and step.parent == 0
    frame = study.history.to_frame()
    assert list(frame["parent"].fillna(-1)) == [-1, 0, 0]
    cmp = study.compare(1, 2)
    assert cmp.loc["params", "ratio"] > 1   # the 25% branch is bigger


def test_scores_are_per_step(small_digits):
    study = make_study("mlp", small_digits)
    study.score("magnitude")
    study.prune(0.2)
    with pytest.raises(xp.NotScoredError, match="call study.score"):
        study.prune(0.2)
    study.goto(0)
    study.prune(0.2)     # scores of step 0 are still there


def test_iterative_linear_schedule_with_retraining(small_digits):
    study = make_study("mlp", small_digits)
    study.score("taylor", samples=64)
    study.prune(0.5, steps=2, schedule="linear", retrain={"epochs": 1})
    kinds = [s.kind for s in study.history]
    assert kinds == ["original", "prune", "retrain", "prune", "retrain"]
    total = 32 + 16
    left = study.model.fc1.out_features + study.model.fc2.out_features
    assert left == pytest.approx(total * 0.5, abs=1)


def test_geometric_schedule_for_weights(small_digits):
    study = make_study("mlp", small_digits)
    study.score("magnitude", granularity="weight")
    study.prune(0.75, steps=2, schedule="geometric")
    w = [study.model.fc1.weight, study.model.fc2.weight]
    frac = sum(int((t == 0).sum()) for t in w) / sum(t.numel() for t in w)
    assert frac == pytest.approx(0.75, abs=0.01)


def test_lottery_ticket_rewind(small_digits):
    study = make_study("mlp", small_digits)
    study.retrain(epochs=1, progress=False)
    study.score("magnitude", granularity="weight")
    study.prune(0.5, rewind="original")
    orig = study.original.fc1.weight
    now = study.model.fc1.weight
    mask = study.model.fc1.weight_mask.bool()
    assert torch.equal(now[mask], orig[mask])
    assert torch.all(now[~mask] == 0)
    study.goto(1)
    study.score("magnitude")
    study.prune(0.25, rewind=1)
    assert study.model.fc1.out_features == 24


def test_retrain_stop_leaves_consistent_study(small_digits):
    study = make_study("mlp", small_digits)
    stop = xp.StopSignal()

    class StopAfterThree(xp.Callback):
        def on_batch_end(self, epoch, batch, loss, accuracy):
            if batch == 2:
                stop.set()

    step = study.retrain(epochs=3, progress=False, stop=stop, callbacks=[StopAfterThree()])
    assert step.stopped and study.last_train_result.batches_done == 3
    assert study.current == step.index
    study.undo()
    assert state_equal(study.model.state_dict(), study.original.state_dict())


def test_custom_train_fn(small_digits):
    study = make_study("mlp", small_digits)
    calls = []

    def my_train(model, data):
        calls.append(len(data.train))
        with torch.no_grad():
            model.head.bias.add_(1.0)

    study.retrain(train_fn=my_train)
    assert calls == [320]
    assert torch.allclose(study.model.head.bias, study.original.head.bias + 1)


def test_retraining_recovers_accuracy(digits):
    study = xp.Study(xp.zoo.load("digits_cnn"), digits)
    study.score("random")
    pruned = study.prune(0.6).metrics["accuracy"]
    recovered = study.retrain(epochs=3, progress=False).metrics["accuracy"]
    assert recovered > pruned + 0.05


def test_same_seed_same_result(small_digits):
    results = []
    for _ in range(2):
        study = make_study("residual", small_digits, seed=3)
        study.score("random")
        study.prune(0.3)
        study.retrain(epochs=1, progress=False)
        results.append({k: v.clone() for k, v in study.model.state_dict().items()})
    assert state_equal(*results)


def test_history_table_and_reprs(small_digits):
    study = make_study("mlp", small_digits)
    scores = study.score("magnitude")
    study.prune(0.2)
    frame = study.history.to_frame()
    assert {"action", "accuracy", "params", "macs", "current"} <= set(frame.columns)
    assert "<table" in study._repr_html_() and "<table" in scores._repr_html_()
    assert "<table" in study.evaluate(latency=False)._repr_html_()
    assert len(scores.to_frame()) == scores.num_units
    assert scores.plot() is not None
    assert list(study.prunable()["group"])[:2] == ["fc1", "fc2"]
