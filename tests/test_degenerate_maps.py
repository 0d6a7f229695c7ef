"""Degenerate maps (all zero, constant, non-finite) give NaN with a reason in every drift and
grounding number, never a perfect score; ties at the top-k cut do not depend on pixel order."""

import numpy as np
import pytest
import torch
from torch import nn

from xprune_nb.explain.compare import (
    PerInputDrift,
    deletion_insertion_auc,
    map_reasons,
    rank_correlation,
    top_set,
    topk_iou,
)
from xprune_nb.explain.drift import probe_drift
from xprune_nb.explain.grounding import (
    compare_grounding,
    pointing_game,
    relevance_mass_in_box,
    relevance_rank_accuracy,
)
from xprune_nb.explain.numbers import shown
from xprune_nb.explain.saliency import SaliencyComparison

NAN = float("nan")


def _maps():
    rng = np.random.default_rng(0)
    good = rng.normal(size=(4, 16))
    zero, const, nan = np.zeros(16), np.full(16, 0.5), good[0].copy()
    nan[3] = NAN
    return good, zero, const, nan


def test_zero_constant_and_nan_maps_are_nan_in_iou_and_rank_correlation():
    good, zero, const, nan = _maps()
    a = np.stack([zero, const, nan, good[1]])
    b = np.stack([zero, const, good[0], good[1]])
    iou, rho = topk_iou(a, b, 0.25), rank_correlation(a, b)
    # before: two all-zero maps scored 1.0 in IoU; a NaN pixel scored 1.0 / 0.979
    assert np.isnan(iou[:3]).all() and np.isnan(rho[:3]).all()
    assert iou[3] == 1.0 and rho[3] == pytest.approx(1.0)
    assert map_reasons(a) == ["all-zero map", "constant map", "non-finite values in the map", ""]


def test_topk_ties_at_the_cut_do_not_depend_on_feature_order():
    row = np.array([3.0, 1.0, 1.0, 1.0, 0.0, 0.0])
    perm = np.array([5, 2, 4, 0, 3, 1])
    assert top_set(row, 2) == {0, 1, 2, 3}                    # every tie at the cut is kept
    assert {int(perm[i]) for i in top_set(row[perm], 2)} == top_set(row, 2)
    a, b = np.array([[1.0, 1.0, 0.0, 0.0]]), np.array([[0.0, 1.0, 1.0, 0.0]])
    flipped = a[:, ::-1], b[:, ::-1]
    assert topk_iou(a, b, 0.25)[0] == topk_iou(*flipped, 0.25)[0] == pytest.approx(1 / 3)
    # zero relevance never counts as "top", even when fewer than k features have any
    assert top_set([2.0, 0.0, 0.0, 0.0], 3) == {0}


def test_topk_iou_ranks_by_magnitude_so_a_sign_flip_scores_one_but_rank_correlation_sees_it():
    good, *_ = _maps()
    assert topk_iou(good[:1], -good[:1], 0.25)[0] == 1.0
    assert rank_correlation(good[:1], -good[:1])[0] == pytest.approx(-1.0)


def test_deletion_insertion_of_a_map_that_orders_nothing_is_nan():
    net = nn.Sequential(nn.Linear(4, 3))
    x = torch.randn(3, 4)
    maps = np.array([[0.0] * 4, [1.0, NAN, 0.0, 2.0], [4.0, 3.0, 2.0, 1.0]])
    d, i = deletion_insertion_auc(net, x, maps, torch.tensor([0, 1, 2]), steps=4)
    assert np.isnan(d[:2]).all() and np.isnan(i[:2]).all() and np.isfinite([d[2], i[2]]).all()


def _comparison(before, after):
    n = len(before)
    zeros = np.zeros(n)
    return SaliencyComparison(
        method="saliency", inputs=before, targets=np.zeros(n, int), before=before, after=after,
        pred_before=np.zeros(n, int), pred_after=np.zeros(n, int),
        spearman=rank_correlation(before, after), topk_iou=topk_iou(before, after, 0.25),
        deletion_before=zeros, deletion_after=zeros, insertion_before=zeros,
        insertion_after=zeros)


def test_comparison_table_has_a_reason_and_the_summary_says_what_it_left_out():
    good, zero, *_ = _maps()
    comp = _comparison(good[:2], np.stack([zero, good[1]]))
    frame = comp.to_frame()
    assert frame["reason"].tolist() == ["after: all-zero map", ""]
    assert comp.summary()["saliency_rank_correlation"] == pytest.approx(1.0)
    assert comp.not_available()["saliency_rank_correlation"] == \
        "1 of 2 inputs n/a (after: all-zero map)"
    all_gone = _comparison(good[:1], zero[None])
    assert np.isnan(all_gone.summary()["saliency_topk_iou"])
    assert "saliency_rank_correlation=n/a: 1 of 1 inputs n/a (after: all-zero map)" in \
        repr(all_gone)
    assert "n/a: 1 of 1 inputs n/a" in all_gone._repr_html_()
    assert isinstance(comp, PerInputDrift)


def test_probe_drift_leaves_out_dead_maps_and_says_why():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    dead = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    with torch.no_grad():
        dead[2].weight.zero_()                 # every input gradient is zero
    x, y = torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    d = probe_drift(net, dead, x, y)
    assert np.isnan(d["saliency_spearman"]) and np.isnan(d["saliency_topk_iou"])
    assert d["saliency_reason"] == "6 of 6 probe inputs n/a (after: all-zero map)"
    assert probe_drift(net, net, x, y)["saliency_reason"] == ""
    assert shown(d["saliency_spearman"], d["saliency_reason"]).startswith("n/a: 6 of 6")


def test_pointing_game_counts_any_maximum_and_refuses_flat_or_nan_maps():
    m = np.zeros((4, 4, 4))
    m[0, 0, 0] = m[0, 3, 3] = 1.0          # two maxima, one in the box: a hit in any order
    m[1, 3, 3] = m[1, 0, 0] = 1.0
    m[2] = 0.5                              # constant
    m[3, 0, 0], m[3, 1, 1] = NAN, 1.0
    hits = pointing_game(m, [[0, 0, 2, 2]] * 4)
    assert hits[:2].tolist() == [1.0, 1.0] and np.isnan(hits[2:]).all()
    mass = relevance_mass_in_box(m, [[0, 0, 2, 2]] * 4)
    assert np.isnan(mass[3]) and mass[2] == pytest.approx(0.25)


def test_rank_accuracy_ties_at_the_cut_share_the_remaining_places():
    m = np.zeros((2, 3, 3))
    m[0, 0, 0], m[0, 0, 1], m[0, 2, 2] = 3.0, 1.0, 1.0      # box of 2: one sure hit, one tie
    m[1] = 0.7
    acc = relevance_rank_accuracy(m, [[0, 0, 1, 2], [0, 0, 1, 2]])
    assert acc[0] == pytest.approx(0.75) and np.isnan(acc[1])
    transposed = np.ascontiguousarray(m[:1].transpose(0, 2, 1))
    assert relevance_rank_accuracy(transposed, [[0, 0, 2, 1]])[0] == pytest.approx(0.75)


def test_grounding_comparison_reports_reasons_instead_of_dropping_silently():
    before = np.zeros((2, 1, 4, 4))
    before[:, 0, 0, 0] = 1.0
    after = before.copy()
    after[1] = 0.0
    comp = type("C", (), {"before": before, "after": after, "method": "saliency",
                          "steps": (0, 1)})()
    g = compare_grounding(comp, [[0, 0, 2, 2]] * 2)
    assert g.to_frame()["reason"].tolist() == ["", "after: all-zero map"]
    assert g.summary()["pointing_after"] == 1.0
    assert g.not_available()["pointing_after"] == "1 of 2 inputs n/a (after: all-zero map)"
    assert "rank_accuracy_before" in g.to_frame()


def test_an_empty_token_map_is_na_with_its_reason_in_table_repr_and_html():
    from xprune_nb.explain.token_compare import compare_token_saliency

    torch.manual_seed(0)
    before = nn.Sequential(nn.Embedding(10, 4), nn.Flatten(), nn.Linear(12, 2))
    after = nn.Sequential(nn.Embedding(10, 4), nn.Flatten(), nn.Linear(12, 2))
    with torch.no_grad():
        after[2].weight.zero_()                 # nothing reaches the tokens: an empty map
    ids = torch.tensor([[1, 2, 3], [4, 5, 6]])
    comp = compare_token_saliency(before, after, ids, labels=torch.tensor([0, 1]),
                                  method="saliency")
    assert np.isnan(comp.spearman).all() and np.isnan(comp.topk_iou).all()
    assert np.isnan(comp.deletion_after).all() and np.isfinite(comp.deletion_before).all()
    assert comp.to_frame()["reason"].tolist() == ["after: all-zero map"] * 2
    assert "saliency_rank_correlation=n/a: 2 of 2 inputs n/a (after: all-zero map)" in \
        repr(comp)
    assert "n/a: after: all-zero map" in comp._repr_html_()


def test_shapley_rank_correlation_of_a_model_that_ignores_its_inputs_is_na():
    """Its Shapley values are rounding noise (1e-17): ranking them scored 1.0 before."""
    from xprune_nb.explain import compare_shapley

    class Constant(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(2))

        def forward(self, x):
            return self.w.expand(len(x), 2) * 1.0

    torch.manual_seed(0)
    comp = compare_shapley(nn.Linear(3, 2), Constant(), torch.randn(4, 3), torch.randn(8, 3))
    assert np.isnan(comp.rank_correlation)
    assert comp.not_available() == {"rank_correlation": "global importance after: all-zero map"}
    assert "rank_correlation=n/a: global importance after: all-zero map" in repr(comp)
