"""Why-removed reports and the drift table: the numbers come straight from the Scores and the
per-class accuracies, and invalid requests fail with a message naming the parameter."""

from __future__ import annotations

import math

import matplotlib
import numpy as np
import pytest
import torch

from xprune_nb import explain
from xprune_nb.core.errors import ConfigError
from xprune_nb.core.scores import Scores

matplotlib.use("Agg")


def scores(per_class: bool = True) -> Scores:
    values = {"conv1": torch.tensor([0.5, 4.0, 1.0, 3.0]), "fc1": torch.tensor([10.0, 1.0, 7.0])}
    pc = None
    if per_class:
        pc = {"conv1": torch.arange(12, dtype=torch.float32).reshape(3, 4),
              "fc1": -torch.arange(9, dtype=torch.float32).reshape(3, 3)}
    return Scores("lrp", "channel", values, per_class=pc)


def test_removed_units_carry_score_rank_percentile_and_class_relevance():
    s = scores()
    report = explain.why_removed(s, {"conv1": [0, 2], "fc1": [1]},
                                 acc_before=[0.9, 0.8, 1.0], acc_after=[0.9, 0.5, 1.0],
                                 class_names=["cat", "dog", "eel"])
    frame = report.to_frame()
    assert list(zip(frame["layer"], frame["unit"])) == [("conv1", 0), ("conv1", 2), ("fc1", 1)]
    full = s.to_frame()
    for _, row in frame.iterrows():
        ref = full[(full.layer == row.layer) & (full.unit == row.unit)].iloc[0]
        assert row["rank"] == ref["rank"] and row["percentile"] == ref["percentile"]
        assert row["score"] == ref["score"]
    # under per-layer mean normalisation these are the three least important units
    assert sorted(frame["rank"]) == [0, 1, 2]
    assert frame.loc[0, "relevance[dog]"] == 4.0          # per_class["conv1"][1, 0]
    assert frame.loc[2, "relevance[eel]"] == -7.0         # per_class["fc1"][2, 1]
    acc = report.per_class_accuracy
    assert acc["change"].tolist() == pytest.approx([0.0, -0.3, 0.0])
    summary = report.summary()
    assert summary["units_removed"] == 3 and summary["of_units"] == 7
    assert summary["largest_drop"] == "class dog: -0.300"
    html = report._repr_html_()
    assert "relevance[dog]" in html and "accuracy_before" in html
    fig = report.plot()
    assert len(fig.axes) == 2


def test_explicit_per_class_overrides_and_class_agnostic_scores_have_no_columns():
    s = scores(per_class=False)
    report = explain.why_removed(s, {"fc1": [0]})
    assert not [c for c in report.to_frame().columns if c.startswith("relevance")]
    assert report.per_class_accuracy is None
    assert len(report.plot().axes) == 1
    override = {"fc1": torch.tensor([[0.25, 0.0, 0.0], [0.5, 0.0, 0.0]])}
    frame = explain.why_removed(s, {"fc1": [0]}, per_class=override).to_frame()
    assert frame["relevance[0]"].item() == 0.25 and frame["relevance[1]"].item() == 0.5


def test_why_removed_rejects_unknown_groups_and_indices():
    with pytest.raises(ConfigError, match=r"removed=\.\.\.\): unknown name 'fc9'; valid names "
                                          r"are 'conv1', 'fc1'"):
        explain.why_removed(scores(), {"fc9": [0]})
    with pytest.raises(ConfigError, match=r"expected unit indices of 'fc1' in \[0, 3\), got \[3\]"):
        explain.why_removed(scores(), {"fc1": [3]})
    with pytest.raises(ConfigError, match=r"acc_after=\.\.\.\): expected one accuracy per class"):
        explain.why_removed(scores(), {"fc1": [0]}, acc_before=[1, 1], acc_after=[1])


def test_why_unit_lists_every_criterion():
    by = {"lrp": scores(),
          "magnitude": Scores("magnitude", "channel",
                              {"conv1": torch.tensor([9.0, 1.0, 2.0, 3.0]),
                               "fc1": torch.tensor([1.0, 2.0, 3.0])})}
    frame = explain.why_unit("conv1", 1, by)
    assert frame["criterion"].tolist() == ["lrp", "magnitude"]
    assert frame["score"].tolist() == [4.0, 1.0]
    assert frame["units"].tolist() == [7, 7]
    assert frame.loc[0, "relevance[2]"] == 9.0
    assert math.isnan(frame.loc[1, "relevance[2]"])
    with pytest.raises(ConfigError, match=r"layer=\.\.\.\): unknown name 'conv9'"):
        explain.why_unit("conv9", 0, by)
    with pytest.raises(ConfigError, match=r"unit=\.\.\.\): expected an index in \[0, 4\)"):
        explain.why_unit("conv1", 4, by)


def test_drift_report_from_records():
    records = [
        {"step": 0, "sparsity": 0.0, "accuracy": 0.95, "agreement": 1.0,
         "saliency_spearman": 1.0, "saliency_topk_iou": 1.0, "accuracy_per_class": [1.0, 0.9]},
        {"step": 1, "sparsity": 0.3, "accuracy": 0.9, "agreement": 0.92,
         "saliency_spearman": 0.7, "saliency_topk_iou": 0.5,
         "accuracy_per_class": [0.95, float("nan")]},
    ]
    report = explain.DriftReport.from_records(records, class_names=["no", "yes"])
    frame = report.to_frame()
    assert frame["acc[yes]"].tolist()[0] == 0.9 and np.isnan(frame["acc[yes]"].tolist()[1])
    ax = report.plot()
    assert ax.get_xlabel() == "sparsity" and len(ax.lines) == 4
    assert "Drift on the probe set" in report._repr_html_()
