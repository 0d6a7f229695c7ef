"""auto_prune: reaches a budget in ordinary history steps, keeps constraints, refuses bad input."""

from __future__ import annotations

import io
import math
import re
import warnings
from types import SimpleNamespace

import pytest
import torch
from conftest import state_equal

import xprune_nb as xp
from xprune_nb.core.errors import ConfigError
from xprune_nb.pruning.allocate import allocate
from xprune_nb.pruning.auto import TOLERANCE, AutoPruneWarning, auto_prune


def _record(study) -> bytes:
    """Every byte of the study's record: history, current step and model."""
    buf = io.BytesIO()
    torch.save({"steps": [vars(s) for s in study.history], "current": study.current,
                "state": study.model.state_dict()}, buf)
    return buf.getvalue()


@pytest.fixture
def cnn(small_digits):
    return xp.Study(xp.zoo.load("digits_cnn"), **small_digits, seed=0)


def test_reaches_a_mac_budget_in_history_steps_and_replays(small_digits):
    data = SimpleNamespace(**small_digits)
    study = xp.Study(xp.zoo.load("digits_cnn"), data, seed=0)
    m0 = study.history[0].metrics["macs"]
    step = auto_prune(study, macs=0.5, steps=2, samples=64)
    assert step.metrics["macs"] <= 0.5 * m0 * (1 + TOLERANCE)
    assert step.auto.met and step.auto.rounds >= 1
    assert "reached macs" in step.note
    # every kept round is an ordinary prune step on the path to the current model
    prunes = [s for s in study.timeline.path() if s.kind == "prune"]
    assert len(prunes) == step.auto.rounds
    assert all(s.config["layer_amounts"] for s in prunes)
    # the recipe rebuilds exactly this model
    replay = xp.Study.from_recipe(study.recipe(), data=data, progress=False)
    assert state_equal(replay.model.state_dict(), study.model.state_dict())
    # and it can be undone like any step
    study.undo()
    assert study.current == prunes[-1].parent


def test_params_budget_with_retraining_each_round(cnn):
    p0 = cnn.history[0].metrics["params"]
    step = auto_prune(cnn, params=0.6, steps=2, samples=64, retrain={"epochs": 1})
    assert step.kind == "retrain" and step.metrics["params"] <= 0.6 * p0 * (1 + TOLERANCE)
    kinds = [s.kind for s in cnn.timeline.path()][1:]
    assert kinds == ["prune", "retrain"] * step.auto.rounds


def test_weight_masks_reach_a_nonzero_params_budget(cnn):
    n0 = cnn.history[0].metrics["nonzero_params"]
    step = auto_prune(cnn, params=0.5, criterion="magnitude", granularity="weight", steps=2)
    assert step.metrics["nonzero_params"] <= 0.5 * n0 * (1 + TOLERANCE)


def test_constraints_are_never_broken_and_the_stop_is_explained(cnn):
    start_acc = cnn.history[0].metrics["val_accuracy"]
    with pytest.warns(AutoPruneWarning, match=r"short of the budget 0\.1"):
        step = auto_prune(cnn, macs=0.1, max_accuracy_drop=0.02, max_class_drop=0.1,
                          max_drift=0.5, steps=2, samples=64)
    out = step.auto
    assert not out.met and out.rejected >= 1 and "short of the budget" in out.message
    # the kept path respects every constraint; rejected rounds are off the path, with a note
    for s in cnn.timeline.path()[1:]:
        assert s.metrics["val_accuracy"] >= start_acc - 0.02 - 1e-9
        assert 1 - s.drift["saliency_spearman"] <= 0.5
    on_path = {s.index for s in cnn.timeline.path()}
    rejected = [s for s in cnn.history if s.index not in on_path]
    assert rejected and all("auto_prune: rejected" in s.note for s in rejected
                            if s.kind == "prune")
    assert all(r["kept"] == (r["step"] in on_path) for r in out.history)


def test_nothing_kept_leaves_the_current_step(cnn):
    with pytest.warns(AutoPruneWarning):
        step = auto_prune(cnn, macs=0.3, max_accuracy_drop=0.0, max_class_drop=0.0, steps=1,
                          samples=64)
    if step.auto.rounds == 0:
        assert step.index == 0 and cnn.current == 0
    else:   # a round that lost nothing at all is allowed by a zero drop
        assert step.metrics["val_accuracy"] >= cnn.history[0].metrics["val_accuracy"]


@pytest.mark.parametrize("kwargs, param", [
    ({}, "exactly one budget"),
    ({"macs": 0.5, "params": 0.5}, "exactly one budget"),
    ({"macs": 0.0}, "macs"),
    ({"macs": 1.0}, "macs"),
    ({"params": -0.2}, "params"),
    ({"latency": math.nan}, "latency"),
    ({"macs": True}, "macs"),
    ({"macs": 0.5, "max_accuracy_drop": -0.01}, "max_accuracy_drop"),
    ({"macs": 0.5, "max_accuracy_drop": math.nan}, "max_accuracy_drop"),
    ({"macs": 0.5, "max_drift": math.nan}, "max_drift"),
    ({"macs": 0.5, "max_drift": -1}, "max_drift"),
    ({"macs": 0.5, "max_class_drop": 2}, "max_class_drop"),
    ({"macs": 0.5, "steps": 0}, "steps"),
    ({"macs": 0.5, "criterion": "nope"}, "criterion"),
    ({"macs": 0.5, "granularity": "weight", "criterion": "magnitude"}, "granularity"),
    ({"latency": 0.5, "granularity": "weight", "criterion": "magnitude"}, "granularity"),
    ({"macs": 0.5, "retrain": {"epochs": 0}}, "epochs"),
    ({"macs": 0.5, "retrain": {"epoch": 1}}, "retrain"),
    ({"macs": 0.5, "retrain": 3}, "retrain"),
    ({"macs": 0.5, "recalibrate": "yes"}, "recalibrate"),
    ({"macs": 0.5, "progress": "yes"}, "progress"),
])
def test_bad_input_refused_before_any_change(cnn, kwargs, param):
    before = _record(cnn)
    with pytest.raises(ConfigError, match=re.escape(param)):
        auto_prune(cnn, **kwargs)
    assert _record(cnn) == before


def test_latency_budget_on_a_model_that_cannot_be_timed(small_digits):
    class Untimeable(torch.nn.Module):
        """Uses an input gradient in its forward (energy-based style): it runs under no_grad,
        but not under the inference mode the latency timer uses."""

        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(64, 10)

        def forward(self, x):
            h = x.flatten(1)
            with torch.enable_grad():
                z = h.detach().requires_grad_(True)
                (g,) = torch.autograd.grad((z ** 2).sum(), z)
            return self.fc(h + 0 * g)

    study = xp.Study(Untimeable(), **small_digits)
    before = _record(study)
    with pytest.raises(ConfigError, match=r"latency=.*can't be measured"):
        auto_prune(study, latency=0.5)
    assert _record(study) == before


def test_drift_already_beyond_max_drift_is_refused(cnn):
    cnn.score("magnitude")
    cnn.prune(0.6)
    before = _record(cnn)
    with pytest.raises(ConfigError, match=r"max_drift=.*already drifts"):
        auto_prune(cnn, macs=0.5, max_drift=1e-6)
    assert _record(cnn) == before


def test_allocation_prefers_cheap_savings():
    rows = [{"layer": "a", "amount": a, "saved": 100 * a, "damage": a} for a in (0.5, 0.9)]
    rows += [{"layer": "b", "amount": a, "saved": 100 * a, "damage": a / 10} for a in (0.5, 0.9)]
    assert allocate(rows, 30.0) == {"b": 0.3}
    assert allocate(rows, 120.0) == {"a": 0.3, "b": 0.9}
    # an amount that can't be evaluated (NaN damage) is never allocated, nor anything past it
    rows.append({"layer": "c", "amount": 0.5, "saved": 1e6, "damage": math.inf})
    assert "c" not in allocate(rows, 1e5)


def test_no_warning_when_met(cnn):
    with warnings.catch_warnings():
        warnings.simplefilter("error", AutoPruneWarning)
        auto_prune(cnn, macs=0.8, steps=1, samples=64)


def test_an_allocation_below_one_unit_still_removes_one(cnn):
    """A last round that needs less than one unit everywhere takes one unit, never zero (a
    prune that removes nothing is refused)."""
    from xprune_nb.pruning import units
    from xprune_nb.pruning.auto import _at_least_one_unit
    from xprune_nb.pruning.sensitivity import score_copy

    kind = units.get("channel", "test")
    scorer = xp.criteria.get("taylor", "test")()
    scores, found = score_copy(cnn, cnn.model, kind, scorer, samples=32, classes=None,
                               batch_size=64, call="test")
    out = _at_least_one_unit({"conv1": 0.01, "fc1": 0.005}, kind, cnn.model, found, scores)
    # fc1 is asked the most units (0.005 x 64 > 0.01 x 16): it gives one
    assert out == {"conv1": pytest.approx(0.01), "fc1": pytest.approx(1 / 64, abs=1e-6)}
    same = {"conv1": 0.1}
    assert _at_least_one_unit(same, kind, cnn.model, found, scores) == pytest.approx(same)


def test_stop_ends_after_the_round_in_progress_and_says_so(cnn):
    from xprune_nb.core.progress import StopSignal

    stop = StopSignal()
    ticks = []

    def progress(done, total):
        ticks.append((done, total))
        if done == 1:
            stop.set()

    with pytest.warns(AutoPruneWarning, match="stopped by the user after round 1"):
        step = auto_prune(cnn, macs=0.3, steps=3, samples=64, progress=progress, stop=stop)
    assert ticks == [(0, 3), (1, 3)]
    assert step.auto.rounds == 1 and step.kind == "prune" and cnn.current == step.index
