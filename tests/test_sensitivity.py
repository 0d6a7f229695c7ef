"""Sensitivity analysis: each group pruned alone on copies; the study never changes."""

from __future__ import annotations

import io
import math
import re

import pytest
import torch
from conftest import no_hooks, state_equal

import xprune_nb as xp
from xprune_nb.core.errors import ConfigError, StoppedError
from xprune_nb.core.progress import StopSignal
from xprune_nb.pruning.sensitivity import sensitivity


@pytest.fixture(scope="module")
def cnn_study(small_digits):
    return xp.Study(xp.zoo.load("digits_cnn"), **small_digits, seed=0)


def _record(study) -> bytes:
    """Every byte of the study's record: history, current model, scores."""
    buf = io.BytesIO()
    torch.save({"steps": [vars(s) for s in study.history], "current": study.current,
                "state": study.model.state_dict(),
                "scores": sorted(study.timeline.scores),
                "all_scores": {k: sorted(v) for k, v in study.timeline.all_scores.items()}}, buf)
    return buf.getvalue()


def test_frame_columns_and_values(cnn_study):
    sens = sensitivity(cnn_study, "taylor", amounts=(0.2, 0.6), samples=64)
    frame = sens.to_frame()
    for col in ("layer", "amount", "accuracy", "loss", "drift", "macs", "params"):
        assert col in frame.columns
    assert sorted(frame["layer"].unique()) == ["conv1", "conv2", "fc1"]
    assert len(frame) == 3 * 2
    assert sens.seconds > 0 and sens.recalibrated   # digits_cnn has BatchNorm
    base = sens.baseline
    # removing units never adds MACs or parameters, and the unpruned model has no drift
    assert (frame["macs"] < base["macs"]).all() and (frame["params"] < base["params"]).all()
    assert base["drift"] == pytest.approx(0.0, abs=1e-9)
    assert frame["drift"].between(0, 2).all()
    # more removed from one layer: fewer MACs
    for _, rows in frame.groupby("layer"):
        assert rows.sort_values("amount")["macs"].is_monotonic_decreasing


def test_matches_a_real_prune_of_that_layer(small_digits):
    """A cell of the table is what Study.prune would give for that layer alone."""
    study = xp.Study(xp.zoo.load("digits_cnn"), **small_digits, seed=0)
    sens = sensitivity(study, "taylor", amounts=(0.5,), samples=64, recalibrate=False)
    row = sens.to_frame().set_index("layer").loc["conv2"]
    study.score("taylor", samples=64)
    step = study.prune(0.0, layer_amounts={"conv2": 0.5}, recalibrate=False)
    assert step.metrics["macs"] == row["macs"]
    assert step.metrics["params"] == row["params"]
    assert step.metrics["val_accuracy"] == pytest.approx(row["accuracy"])
    assert 1 - step.drift["saliency_spearman"] == pytest.approx(row["drift"], abs=1e-9)


def test_study_unchanged_byte_for_byte(small_digits):
    study = xp.Study(xp.zoo.load("digits_cnn"), **small_digits, seed=0)
    study.score("magnitude")
    study.prune(0.2)
    before = _record(study)
    model = study.model
    sensitivity(study, "taylor", amounts=(0.3, 0.9), samples=32)
    sensitivity(study, "magnitude", granularity="weight", amounts=(0.5,))
    assert _record(study) == before
    assert study.model is model and no_hooks(study.model)
    assert state_equal(study.model.state_dict(), study.model_at(study.current).state_dict())


def test_weight_granularity_counts_nonzero(cnn_study):
    sens = sensitivity(cnn_study, "magnitude", granularity="weight", amounts=(0.5,))
    frame = sens.to_frame()
    assert (frame["params"] == sens.baseline["params"]).all()           # masks keep shapes
    assert (frame["nonzero_params"] < sens.baseline["nonzero_params"]).all()
    assert not sens.recalibrated


def test_most_sensitive_plot_and_html(cnn_study):
    sens = sensitivity(cnn_study, "magnitude", amounts=(0.5, 0.9), metric="loss")
    ranked = sens.most_sensitive()
    assert list(ranked.index) == list(sens.damage().mean(axis=1).sort_values(
        ascending=False, kind="stable").index)
    assert len(sens.most_sensitive(1, amount=0.9)) == 1
    with pytest.raises(ConfigError, match="amount"):
        sens.most_sensitive(amount=0.33)
    html = sens._repr_html_()
    assert "Sensitivity" in html and "conv1" in html
    import matplotlib.pyplot as plt

    fig = sens.plot()
    assert len(fig.axes) == 3        # curves, heat map, colour bar
    fig2, ax = plt.subplots()
    assert sens.plot(ax=ax, metric="drift") is fig2
    plt.close("all")


def test_progress_one_tick_per_group_and_stop(cnn_study):
    seen = []
    sensitivity(cnn_study, "magnitude", amounts=(0.5,), progress=lambda d, t: seen.append((d, t)))
    assert seen == [(0, 3), (1, 3), (2, 3), (3, 3)]
    stop = StopSignal()
    calls = []

    def tick(done, total):
        calls.append(done)
        if done == 1:
            stop.set()

    before = _record(cnn_study)
    with pytest.raises(StoppedError):
        sensitivity(cnn_study, "magnitude", amounts=(0.5,), progress=tick, stop=stop)
    assert calls == [0, 1] and _record(cnn_study) == before


def test_a_cell_that_would_empty_a_group_is_reported(small_digits):
    """A cell whose selection would empty a layer is NaN with the reason, not an error."""
    from conftest import make_study

    study = make_study("concat", small_digits)
    sens = sensitivity(study, "magnitude", amounts=(0.5, 0.99))
    frame = sens.to_frame()
    bad = frame[frame["accuracy"].isna()]
    assert len(bad) >= 1
    assert all("every unit" in n for n in bad["note"])
    assert frame[frame["amount"] == 0.99]["accuracy"].isna().all()
    assert (frame["note"] == "").sum() == frame["accuracy"].notna().sum()


@pytest.mark.parametrize("kwargs, param", [
    ({"criterion": "nope"}, "criterion"),
    ({"granularity": "nope"}, "granularity"),
    ({"criterion": "attention", "granularity": "channel"}, "granularity"),
    ({"amounts": ()}, "amounts"),
    ({"amounts": 0.5}, "amounts"),
    ({"amounts": (0.5, 1.0)}, "amounts[1]"),
    ({"amounts": (0.0,)}, "amounts[0]"),
    ({"amounts": (math.nan,)}, "amounts[0]"),
    ({"metric": "f1"}, "metric"),
    ({"samples": 0}, "samples"),
    ({"recalibrate": "yes"}, "recalibrate"),
    ({"progress": "yes"}, "progress"),
    ({"stop": True}, "stop"),
    ({"classes": [99]}, "classes"),
])
def test_bad_input_refused_before_any_work(cnn_study, kwargs, param):
    args = {"criterion": "taylor", **kwargs}
    before = _record(cnn_study)
    with pytest.raises(ConfigError, match=re.escape(param)):
        sensitivity(cnn_study, args.pop("criterion"), **args)
    assert _record(cnn_study) == before
