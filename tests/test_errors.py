"""Every documented bad input raises our error with a message that says what to do, and leaves
the study exactly as it was."""

from __future__ import annotations

import pytest
import torch
from conftest import TinyMLP, make_study, state_equal
from torch import nn

import xprune_nb as xp


@pytest.fixture
def study(small_digits):
    s = make_study("mlp", small_digits)
    s.score("magnitude")
    return s


def _snapshot(study):
    return ({k: v.clone() for k, v in study.model.state_dict().items()}, len(study.history),
            study.current)


def _unchanged(study, snap):
    state, n, cur = snap
    return state_equal(study.model.state_dict(), state) and len(study.history) == n and (
        study.current == cur)


@pytest.mark.parametrize("amount", [1.0, -0.1, 1.5, "half", None, True])
def test_amount_out_of_range(study, amount):
    snap = _snapshot(study)
    with pytest.raises(xp.ConfigError, match=r"Study.prune\(amount=...\): expected a number in"):
        study.prune(amount)
    assert _unchanged(study, snap)


def test_unknown_names_list_valid_ones(study):
    with pytest.raises(xp.ConfigError, match="unknown name 'lrpp'.*'magnitude'"):
        study.score("lrpp")
    with pytest.raises(xp.ConfigError, match="granularity.*'block', 'channel', 'head', "
                                             "'head_mask', 'recurrent', 'weight'"):
        study.score("magnitude", granularity="filters")
    with pytest.raises(xp.ConfigError, match="scope.*'global', 'layer'"):
        study.prune(0.2, scope="everywhere")
    with pytest.raises(xp.ConfigError, match="layer name.*'fc1', 'fc2'"):
        study.prune(0.2, ignore=["fc9"])
    with pytest.raises(xp.ConfigError, match="schedule"):
        study.prune(0.2, steps=2, schedule="cubic")
    with pytest.raises(xp.ConfigError, match="unknown option"):
        study.score("magnitude", q=3)
    with pytest.raises(xp.ConfigError, match=r"p=...\): expected one of \[1, 2\]"):
        study.score("magnitude", p=3)
    with pytest.raises(xp.ConfigError, match="optimizer"):
        study.retrain(optimizer="adagrad")


def test_model_with_nothing_prunable(small_digits):
    class NoLayers(nn.Module):
        def forward(self, x):
            return torch.flatten(x, 1)[:, :10]

    with pytest.raises(xp.ModelError, match="no Conv or Linear layer"):
        xp.Study(NoLayers(), **small_digits)


def test_data_that_does_not_fit_the_model(small_digits):
    with pytest.raises(xp.DataError, match="cannot run on inputs of shape"):
        xp.Study(TinyMLP(n_in=30), **small_digits)


def test_empty_data():
    with pytest.raises(xp.DataError, match="empty"):
        xp.Study(TinyMLP(), train=(torch.zeros(0, 64), torch.zeros(0, dtype=torch.long)))


def test_nan_weights(small_digits):
    model = TinyMLP()
    with torch.no_grad():
        model.fc1.weight[0, 0] = float("nan")
    with pytest.raises(xp.ModelError, match="NaN or infinite"):
        xp.Study(model, **small_digits)


def test_nan_scores_are_refused(study):
    class NanCriterion(xp.criteria.Criterion):
        name = "nan_scores"
        needs_data = False

        def channel_scores(self, ctx):
            return {n: torch.full((m.weight.shape[0],), float("nan"))
                    for n, m in ctx.layers.items()}

    xp.criteria.register(NanCriterion)
    try:
        with pytest.raises(xp.ModelError, match="NaN or infinite scores"):
            study.score("nan_scores")
    finally:
        xp.criteria._REGISTRY.pop("nan_scores")


def test_removing_every_unit_of_a_layer(study):
    snap = _snapshot(study)
    with pytest.raises(xp.PruneError, match="remove every unit of 'fc1'.*smaller amount"):
        study.prune(0.2, layer_amounts={"fc1": 0.999})
    assert _unchanged(study, snap)


def test_samples_larger_than_data(study):
    with pytest.raises(xp.ConfigError, match=r"samples=...\): expected at most 320"):
        study.score("taylor", samples=10_000)
    with pytest.raises(xp.ConfigError, match="samples"):
        study.score("taylor", samples=0)


def test_bad_classes(study):
    with pytest.raises(xp.ConfigError, match="classes"):
        study.score("taylor", classes=[42])


def test_prune_before_score(small_digits):
    s = make_study("mlp", small_digits)
    with pytest.raises(xp.NotScoredError, match=r"call study.score\(criterion\) first"):
        s.prune(0.3)


def test_undo_at_start_and_bad_goto(small_digits):
    s = make_study("mlp", small_digits)
    with pytest.raises(xp.ConfigError, match="nothing to undo"):
        s.undo()
    with pytest.raises(xp.ConfigError, match=r"goto\(step=...\): expected a step index"):
        s.goto(5)


def test_bad_study_arguments(small_digits):
    with pytest.raises(xp.ConfigError, match="torch.nn.Module"):
        xp.Study("not a model", **small_digits)
    with pytest.raises(xp.ConfigError, match="either data"):
        xp.Study(TinyMLP(), xp.datasets.load("digits"), train=small_digits["train"])
    with pytest.raises(xp.DataError, match="labels must be a 1-D"):
        xp.Study(TinyMLP(), train=(torch.zeros(4, 64), torch.zeros(4, 2)))


def test_failing_retrain_leaves_study(study):
    snap = _snapshot(study)

    def broken(model, data):
        with torch.no_grad():
            model.fc1.weight.fill_(float("nan"))

    with pytest.raises(xp.ModelError, match="NaN"):
        study.retrain(train_fn=broken)
    assert _unchanged(study, snap)


def test_every_error_is_an_xprune_error():
    for cls in (xp.ConfigError, xp.DataError, xp.ModelError, xp.PruneError, xp.NotScoredError,
                xp.StudyFileError, xp.StoppedError, xp.MissingDependencyError):
        assert issubclass(cls, xp.XPruneError)
