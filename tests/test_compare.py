"""compare_techniques: the documented columns, one row per technique, notes for missing ones."""

from __future__ import annotations

import math

import pytest
import torch

import xprune_nb as xp
from xprune_nb.core.errors import ConfigError
from xprune_nb.ui.compare import COLUMNS, TECHNIQUES, compare_techniques, format_table, pareto_plot


@pytest.fixture(scope="module")
def moons():
    return xp.datasets.load("moons")


@pytest.fixture(scope="module")
def frame(moons):
    return compare_techniques(xp.zoo.load("toy_mlp"), moons, budget=0.5,
                              techniques=["magnitude_weights", "taylor_channels", "dynamic"],
                              retrain_epochs=1, onnx=False, shapley_rows=0)


def test_columns_and_rows(frame):
    assert list(frame.columns) == COLUMNS
    assert frame["technique"].tolist() == ["original", "magnitude_weights", "taylor_channels",
                                           "dynamic"]
    orig, weights, channels = (frame.iloc[i] for i in range(3))
    assert orig["macs_fraction"] == 1.0 and orig["saliency_rank_correlation"] == pytest.approx(1.0)
    # masks: half the weights are zero, MACs stay dense (and the note says so)
    assert weights["nonzero_params"] < 0.6 * orig["nonzero_params"]
    assert weights["macs"] == orig["macs"] and "dense" in weights["note"]
    # channels: about half the MACs, removed for real
    assert abs(channels["macs_fraction"] - 0.5) <= 0.02 + 1e-9
    assert channels["params"] < orig["params"]
    for row in (weights, channels):
        assert 0 <= row["accuracy"] <= 1 and 0 <= row["noisy_accuracy"] <= 1
        assert row["seconds"] > 0 and row["latency_b1_ms"] > 0 and row["latency_b64_ms"] > 0
        assert -1 <= row["saliency_rank_correlation"] <= 1
        assert math.isfinite(row["worst_class_drop"])


def test_unavailable_technique_is_a_row_with_a_note(frame):
    row = frame.set_index("technique").loc["dynamic"]
    if math.isnan(row["accuracy"]):       # not in this build, or refused for this model
        assert row["note"].startswith("n/a:")
        assert math.isnan(row["macs"]) and math.isnan(row["seconds"])
    else:                                 # measured: no single ONNX graph, and it says so
        assert hasattr(xp.Study, "dynamic")
        assert "onnx n/a" in row["note"] and math.isnan(row["onnx_b1_ms"])


def test_blocks_row_says_why_a_mlp_has_none(frame_blocks):
    row = frame_blocks.set_index("technique").loc["blocks"]
    assert math.isnan(row["accuracy"]) and row["note"].startswith("n/a:")


@pytest.fixture(scope="module")
def frame_blocks(moons):
    return compare_techniques(xp.zoo.load("toy_mlp"), moons, techniques=["blocks"],
                              retrain_epochs=0, onnx=False, shapley_rows=0)


def test_table_text_and_pareto_plot(frame):
    text = format_table(frame)
    assert "n/a" in text and "taylor_channels" in text
    import matplotlib.pyplot as plt

    fig = pareto_plot(frame)
    assert fig.axes[0].get_xlabel() == "macs"
    plt.close(fig)


@pytest.mark.slow
def test_onnx_and_shapley_columns(moons):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    pytest.importorskip("shap")
    out = compare_techniques(xp.zoo.load("toy_mlp"), moons, budget=0.5,
                             techniques=["taylor_channels"], retrain_epochs=0, shapley_rows=4)
    row = out.iloc[1]
    assert row["onnx_b1_ms"] > 0 and row["onnx_b64_ms"] > 0, row["note"]
    assert 0 <= row["shapley_change"] <= 2


def test_model_is_never_changed(moons):
    model = xp.zoo.load("toy_mlp")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    compare_techniques(model, moons, techniques=["taylor_channels"], retrain_epochs=1,
                       onnx=False, shapley_rows=0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("kwargs, param", [
    ({"budget": 1.0}, "budget"),
    ({"budget": 0}, "budget"),
    ({"techniques": ["nope"]}, "techniques"),
    ({"techniques": "taylor_channels"}, "techniques"),
    ({"techniques": []}, "techniques"),
    ({"retrain_epochs": -1}, "retrain_epochs"),
    ({"noise": math.nan}, "noise"),
    ({"onnx": "yes"}, "onnx"),
    ({"shapley_rows": 1.5}, "shapley_rows"),
])
def test_bad_input(moons, kwargs, param):
    with pytest.raises(ConfigError, match=param):
        compare_techniques(xp.zoo.load("toy_mlp"), moons, **kwargs)


def test_every_technique_is_documented():
    assert list(TECHNIQUES) == ["magnitude_weights", "taylor_channels", "lrp_channels",
                                "blocks", "dynamic", "auto_prune"]
