"""The bias-aware criterion ``group_relevance`` and worst-group sensitivity."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import xprune_nb as xp
from xprune_nb.core.errors import ConfigError


def _split(n: int, seed: int):
    """Unit 0's feature is used by everyone, feature 1 only by the 20 % minority (the
    majority's is 0), feature 2 only by the majority."""
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(n, 3, generator=g) + 0.5
    groups = (torch.arange(n) % 5 == 0).long()
    X[groups == 0, 1] = 0.0
    X[groups == 1, 2] = 0.0
    y = torch.randint(0, 2, (n,), generator=g)
    return X, y, groups


def _model():
    net = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 2))
    with torch.no_grad():   # hidden unit j copies feature j; both logits read every unit
        net[0].weight.copy_(torch.eye(3))
        net[0].bias.zero_()
        net[2].weight.copy_(torch.tensor([[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0]]))
        net[2].bias.zero_()
    return net


def _study(**kwargs):
    return xp.Study(_model(), train=_split(100, 0), val=_split(50, 1), test=_split(50, 2),
                    group_names=["majority", "minority"], **kwargs)


def test_group_specific_units_rank_apart_from_shared_ones():
    study = _study()
    lrp = study.score("lrp", samples=100).values["0"]
    fair = study.score("group_relevance", samples=100, strength=1.0).values["0"]
    # plain relevance: the minority's unit is rare, so it is the least important
    assert int(lrp.argmin()) == 1
    # per group, each group weighs the same: the majority-only unit goes first, the
    # minority's unit is kept below the shared one
    assert int(fair.argmin()) == 2 and fair[2] == 0
    assert 0 < fair[1] < fair[0]
    both = study.score("group_relevance", samples=100, target="any", strength=1.0).values["0"]
    assert both[1] == 0 and both[2] == 0 and both[0] > 0
    minority = study.score("group_relevance", samples=100, target="minority",
                           strength=1.0).values["0"]
    assert minority[1] == 0 and minority[2] > 0
    soft = study.score("group_relevance", samples=100, strength=0.0).values["0"]
    assert float(soft[1]) == pytest.approx(float(soft[2]), rel=0.3) and soft[1] > 0
    half = study.score("group_relevance", samples=100).values["0"]   # default strength 0.5
    assert float(half[2]) == pytest.approx(0.5 * float(soft[2]))
    assert float(half[1]) == pytest.approx(float(soft[1]))
    weights = study.score("group_relevance", "weight", samples=100,
                          strength=1.0).values["0"]
    assert weights[2, 2] == 0 and weights[1, 1] > 0
    taylor = study.score("group_relevance", samples=100, base="taylor",
                         strength=1.0).values["0"]
    assert taylor[2] == 0 and taylor[1] > 0


def test_score_then_prune_removes_the_majority_only_unit():
    study = _study()
    study.score("group_relevance", samples=100)
    step = study.prune(1 / 3)
    assert study.model[0].out_features == 2
    # the two kept units read features 0 and 1: the minority keeps its feature
    kept = study.model[0].weight.detach()
    assert torch.equal(kept[:, 2], torch.zeros(2)) and kept[1, 1] == 1
    assert set(step.per_group_accuracy) == {"majority", "minority"}


def test_refused_without_groups_or_with_bad_options():
    X, y, _ = _split(60, 0)
    study = xp.Study(_model(), train=(X, y), val=(X, y), test=(X, y))
    with pytest.raises(ConfigError, match=r"Study.score: criterion 'group_relevance' .* no "
                                          r"groups"):
        study.score("group_relevance")
    with pytest.raises(ConfigError, match=r"Study.sensitivity: criterion 'group_relevance'"):
        study.sensitivity("group_relevance", amounts=(0.5,))
    assert len(study.history) == 1
    grouped = _study()
    with pytest.raises(ConfigError, match=r"strength.*a number in \[0, 1\].*2"):
        grouped.score("group_relevance", strength=2)
    with pytest.raises(ConfigError, match=r"target.*one of \['majority', 'minority'\].*'x'"):
        grouped.score("group_relevance", samples=100, target="x")
    with pytest.raises(ConfigError, match=r"base.*one of \['lrp'"):
        grouped.score("group_relevance", base="shapley")
    with pytest.raises(ConfigError, match=r"\['minority'\] have no examples among the 4 "
                                          r"reference examples"):
        grouped.score("group_relevance", samples=4)


def _trained_study():
    """A small MLP whose two hidden layers serve the groups unevenly (trained briefly)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(),
                        nn.Linear(8, 2))
    splits = []
    for n, seed in ((200, 0), (100, 1), (100, 2)):
        X, _, groups = _split(n, seed)
        y = torch.where(groups == 1, X[:, 1] > 1.0, X[:, 2] > 1.0).long()
        splits.append((X, y, groups))
    study = xp.Study(net, train=splits[0], val=splits[1], test=splits[2],
                     group_names=["majority", "minority"])
    study.retrain(epochs=15, lr=0.05)
    return study


def test_sensitivity_ranks_layers_by_worst_group_cost():
    study = _trained_study()
    sens = study.sensitivity("magnitude", amounts=(0.5, 0.75), metric="worst_group_accuracy")
    frame = sens.to_frame()
    for col in ("worst_group_accuracy", "group_accuracy_gap", "accuracy[majority]",
                "accuracy[minority]"):
        assert frame[col].notna().all(), col
    by_group = frame[["accuracy[majority]", "accuracy[minority]"]]
    assert (frame["worst_group_accuracy"] == by_group.min(axis=1)).all()
    assert frame["group_accuracy_gap"].tolist() == pytest.approx(
        (by_group.max(axis=1) - by_group.min(axis=1)).tolist())
    ranked = sens.most_sensitive()
    assert ranked.name == "worst_group_accuracy damage"
    want = (sens.baseline["worst_group_accuracy"] - frame.groupby("layer")[
        "worst_group_accuracy"].mean()).sort_values(ascending=False, kind="stable")
    assert list(ranked.index) == list(want.index)
    assert ranked.tolist() == pytest.approx(want.tolist())
    overall = sens.most_sensitive(metric="accuracy")   # the other metrics still rank
    assert overall.name == "accuracy damage" and set(overall.index) == set(ranked.index)
    assert len(study.history) == 2


def test_worst_group_sensitivity_refused_without_groups():
    X, y, _ = _split(60, 0)
    study = xp.Study(_model(), train=(X, y), val=(X, y), test=(X, y))
    with pytest.raises(ConfigError, match=r"Study.sensitivity\(metric=.*study without "
                                          r"sensitive groups.*worst_group_accuracy"):
        study.sensitivity("magnitude", amounts=(0.5,), metric="worst_group_accuracy")
    sens = study.sensitivity("magnitude", amounts=(0.5,))
    assert "worst_group_accuracy" not in sens.to_frame().columns
    with pytest.raises(ConfigError, match=r"group metrics need a study with groups"):
        sens.most_sensitive(metric="group_accuracy_gap")


def test_panel_offers_group_metrics_only_with_groups():
    from xprune_nb.ui.widgets.sensitivity import SensitivityView

    assert "worst_group_accuracy" in SensitivityView(_study()).metric.options
    X, y, _ = _split(60, 0)
    plain = xp.Study(_model(), train=(X, y), val=(X, y), test=(X, y))
    assert "worst_group_accuracy" not in SensitivityView(plain).metric.options
