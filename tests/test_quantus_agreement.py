"""Our explanation metrics against Quantus's implementations on the same maps and boxes.

Where we agree, the numbers are equal; where we deliberately differ (docs/benchmarks.md, the
Quantus agreement table), the test pins the difference. Quantus is a dev extra, imported here
only; it imports zennit, whose missing torchvision ``import_zennit`` stands in for.
"""

import numpy as np
import pytest
import torch
from torch import nn

from xprune_nb.explain.compare import deletion_insertion_auc, rank_correlation, topk_iou
from xprune_nb.explain.grounding import (
    pointing_game,
    relevance_mass_in_box,
    relevance_rank_accuracy,
)
from xprune_nb.models.mechanisms.lrp import import_zennit

import_zennit()
import quantus  # noqa: E402 - after zennit's torchvision stand-in (dev extra)

H = W = 6
BOXES = np.array([[1, 2, 4, 5], [0, 0, 3, 3], [2, 1, 6, 4], [3, 3, 5, 6], [0, 1, 2, 6]])


def _masks(boxes=BOXES) -> np.ndarray:
    s = np.zeros((len(boxes), 1, H, W))
    for i, (r0, c0, r1, c1) in enumerate(boxes):
        s[i, 0, r0:r1, c0:c1] = 1
    return s


def _maps(signed: bool = False) -> np.ndarray:
    rng = np.random.default_rng(0)
    a = rng.random((len(BOXES), 1, H, W))
    return (a - 0.4 if signed else a).astype(np.float64)


def _q(metric, a, s, x=None, model=None, y=None):
    n = len(a)
    x = np.zeros_like(a, dtype=np.float32) if x is None else x
    y = np.zeros(n, dtype=int) if y is None else y
    return np.asarray(metric(model=model, x_batch=x, y_batch=y, a_batch=a.astype(np.float32),
                             s_batch=s), dtype=np.float64)


def _plain(cls, **kw):
    return cls(disable_warnings=True, abs=False, normalise=False, **kw)


def test_relevance_mass_accuracy_equal_on_positive_maps_and_positive_part_on_signed():
    a, s = _maps(), _masks()
    ours = relevance_mass_in_box(a, BOXES)
    np.testing.assert_allclose(ours, _q(_plain(quantus.RelevanceMassAccuracy), a, s),
                               rtol=1e-5)
    # signed maps: Quantus sums the signed map (values outside [0, 1] possible); we keep the
    # positive part so the share stays in [0, 1] — the same as Quantus on max(a, 0)
    signed = _maps(signed=True)
    theirs = _q(_plain(quantus.RelevanceMassAccuracy), signed, s)
    np.testing.assert_allclose(relevance_mass_in_box(signed, BOXES),
                               _q(_plain(quantus.RelevanceMassAccuracy), np.clip(signed, 0, None),
                                  s), rtol=1e-5)
    assert not np.allclose(relevance_mass_in_box(signed, BOXES), theirs, rtol=1e-3)


def test_relevance_rank_accuracy_equal_without_ties_and_the_tie_mean_with_them():
    a, s = _maps(signed=True), _masks()
    np.testing.assert_allclose(relevance_rank_accuracy(a, BOXES),
                               _q(_plain(quantus.RelevanceRankAccuracy), a, s), rtol=1e-9)
    # a tie at the cut: Quantus takes the order its sort gives; we take the mean over both
    m = np.zeros((1, 1, H, W))
    m[0, 0, 0, 0], m[0, 0, 0, 1], m[0, 0, 5, 5] = 3.0, 1.0, 1.0
    box = np.array([[0, 0, 1, 2]])
    in_first, out_first = m.copy(), m.copy()
    in_first[0, 0, 0, 1] += 1e-3
    out_first[0, 0, 5, 5] += 1e-3
    q_in = _q(_plain(quantus.RelevanceRankAccuracy), in_first, _masks(box))[0]
    q_out = _q(_plain(quantus.RelevanceRankAccuracy), out_first, _masks(box))[0]
    assert (q_in, q_out) == (1.0, 0.5)
    assert relevance_rank_accuracy(m, box)[0] == pytest.approx((q_in + q_out) / 2)


def test_pointing_game_counts_any_maximum_like_quantus_but_a_flat_map_is_nan():
    a, s = _maps(), _masks()
    a[1, 0, 5, 5] = a[1, 0, 0, 0] = a[1].max() + 1    # two maxima, one inside box 1
    a[2] = 0.25                                          # constant: Quantus says "hit"
    ours = pointing_game(a, BOXES)
    theirs = _q(_plain(quantus.PointingGame), a, s)
    assert ours[1] == theirs[1] == 1.0
    keep = np.arange(len(a)) != 2
    np.testing.assert_array_equal(ours[keep], theirs[keep])
    assert np.isnan(ours[2]) and theirs[2] == 1.0


def test_rank_correlation_is_quantus_spearman_including_ties():
    from quantus.functions.similarity_func import correlation_spearman

    rng = np.random.default_rng(1)
    a = rng.normal(size=(4, 20))
    b = a + rng.normal(scale=0.5, size=a.shape)
    b[1, :10] = 0.0                                     # ties: both use average ranks
    ours = rank_correlation(a, b)
    theirs = [correlation_spearman(x, y) for x, y in zip(a, b)]
    np.testing.assert_allclose(ours, theirs, rtol=1e-12)


def test_topk_iou_is_intersection_over_union_where_quantus_divides_by_k():
    """Quantus's TopKIntersection compares a map with a mask: |top-k ∩ mask| / k. Ours compares
    two maps' top-k sets by IoU: with t = Quantus's value, IoU = t k / (2 k - t k)."""
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(5, 1, H, W)), rng.normal(size=(5, 1, H, W))
    k = 9
    ours = topk_iou(a, b, k / (H * W))
    top_b = np.zeros_like(b)
    for i, row in enumerate(np.abs(b).reshape(5, -1)):
        top_b.reshape(5, -1)[i, np.argsort(-row)[:k]] = 1
    t = _q(quantus.TopKIntersection(k=k, disable_warnings=True, abs=True, normalise=False),
           a, top_b)
    np.testing.assert_allclose(ours, t * k / (2 * k - t * k), rtol=1e-12)


class _Linear(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(H * W, 3)

    def forward(self, x):
        return self.fc(torch.flatten(x, 1))


def test_deletion_curve_is_one_minus_quantus_region_perturbation():
    """Quantus's RegionPerturbation (MoRF, 1x1 patches, baseline 0, softmax) returns the drop
    p(x) - p(x with the top-j pixels removed); our deletion AUC is the trapezoidal mean of p
    over the fraction removed, so it is the same curve read the other way."""
    model = _Linear().eval()
    rng = np.random.default_rng(3)
    x = rng.random((4, 1, H, W)).astype(np.float32)
    a = rng.normal(size=x.shape)
    y = np.array([0, 1, 2, 0])
    n = H * W
    metric = quantus.RegionPerturbation(patch_size=1, regions_evaluation=n, order="morf",
                                        perturb_baseline=0.0, abs=False, normalise=False,
                                        disable_warnings=True)
    drops = np.asarray(metric(model=model, x_batch=x, y_batch=y, a_batch=a.astype(np.float32),
                              softmax=True, device="cpu"), dtype=np.float64)
    with torch.no_grad():
        p0 = torch.softmax(model(torch.as_tensor(x)).double(), 1).numpy()[np.arange(4), y]
    curve = np.concatenate([p0[:, None], p0[:, None] - drops], axis=1)
    expected = ((curve[:, 1:] + curve[:, :-1]) / 2).mean(1)
    deletion, _ = deletion_insertion_auc(model, x, a, y, steps=n)
    np.testing.assert_allclose(deletion, expected, atol=1e-5)


def test_completeness_gap_zero_exactly_where_quantus_completeness_holds():
    """Quantus's Completeness answers "sum of the map == f(x) - f(baseline)" exactly (a bool);
    we report the signed gap, so a small integration error stays visible as a number."""
    from xprune_nb.explain.saliency import attribute

    model = _Linear().eval()
    with torch.no_grad():                                # exact arithmetic: small integers
        model.fc.weight.copy_(torch.randint(-3, 4, model.fc.weight.shape).float())
        model.fc.bias.zero_()
    x = torch.randint(0, 3, (2, 1, H, W)).float()
    y = torch.tensor([1, 2])
    maps, gap = attribute(model, x, y, "integrated_gradients")
    bad = maps.copy()
    bad[1, 0, 0, 0] += 0.5                               # no longer complete, by exactly 0.5

    def complete(a):
        return list(quantus.Completeness(perturb_baseline=0.0, abs=False, normalise=False,
                                         disable_warnings=True)(
            model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=a.astype(np.float32),
            device="cpu", softmax=False))

    assert gap.tolist() == [0.0, 0.0] and complete(maps) == [True, True]
    assert complete(bad) == [True, False]
    assert bad.reshape(2, -1).sum(1)[1] - maps.reshape(2, -1).sum(1)[1] + gap[1] == 0.5
