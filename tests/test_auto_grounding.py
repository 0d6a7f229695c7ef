"""auto_prune's grounding constraint: judged on validation, reported on test, bad input refused."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import xprune_nb as xp
from xprune_nb.core.errors import ConfigError
from xprune_nb.data.ground_truth import boxes as truth_boxes
from xprune_nb.explain.grounding import pointing_game, relevance_mass_in_box
from xprune_nb.explain.saliency import attribute
from xprune_nb.pruning.auto_grounding import _box_masks, mass_in_mask, pointing_in_mask


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))


@pytest.fixture(scope="module")
def boxes_data():
    return xp.datasets.load("digits_boxes", n_samples=150, canvas=16, distractors=1)


@pytest.fixture
def study(boxes_data):
    return xp.Study(_cnn(), boxes_data, seed=0)


def _mean_mass(study, model, split):
    part = study.data.split(split)
    maps, _ = attribute(model, part.X, part.y, "saliency", forward=study.forward)
    return float(np.nanmean(relevance_mass_in_box(maps, truth_boxes(study.data, split))))


def _run(study, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return study.auto_prune(params=0.5, steps=2, samples=32, **kwargs)


def test_mask_metrics_equal_the_box_metrics():
    rng = np.random.default_rng(0)
    maps = rng.normal(size=(6, 2, 8, 8))
    maps[0] = 0.0                       # no relevance at all: NaN in both
    boxes = np.array([[0, 0, 4, 4], [2, 2, 6, 8], [4, 4, 8, 8], [0, 3, 1, 5], [1, 1, 3, 3],
                      [0, 0, 8, 2]])
    masks = _box_masks(boxes, (8, 8))
    np.testing.assert_array_equal(mass_in_mask(maps, masks), relevance_mass_in_box(maps, boxes))
    np.testing.assert_array_equal(pointing_in_mask(maps, masks), pointing_game(maps, boxes))


def test_constraint_holds_on_validation_and_is_reported_on_test(study):
    limit = 0.01
    step = _run(study, max_grounding_drop=limit)
    g = step.auto.grounding
    assert g["method"] == "saliency" and g["metric"] == "mass" and g["limit"] == limit
    # every kept round is within the limit on the validation split; every rejected round that
    # broke it is above it, and its note says so
    assert any(r["kept"] for r in step.auto.history)
    assert any(not r["kept"] and r["grounding_drop"] > limit for r in step.auto.history)
    for row in step.auto.history:
        assert "grounding_drop" in row
        if row["kept"]:
            assert row["grounding_drop"] <= limit
    assert g["val_end"] >= g["val_start"] - limit
    # the test split's numbers are those of the start and end models on held-out rows
    assert math.isclose(g["test_start"], _mean_mass(study, study.model_at(0), "test"),
                        rel_tol=1e-9)
    assert math.isclose(g["test_end"], _mean_mass(study, study.model, "test"), rel_tol=1e-9)
    assert "grounding (relevance mass, saliency)" in step.auto.message
    assert "test" in step.auto.message


def test_a_rejected_round_names_the_grounding_limit(study):
    step = _run(study, max_grounding_drop=0.0, grounding_metric="pointing")
    rejected = [r for r in step.auto.history if not r["kept"]]
    assert rejected and step.auto.rounds == 0      # a strict limit: every try is refused
    for row in rejected:
        note = study.history[row["step"]].note
        if row["grounding_drop"] > 0:
            assert "max_grounding_drop=0.0" in note
    assert all(r["grounding_drop"] <= 0 for r in step.auto.history if r["kept"])


def test_user_masks_equal_the_boxes_and_work_without_boxes(study, boxes_data):
    shape = tuple(boxes_data.val.X.shape[1:])
    masks = {s: _box_masks(truth_boxes(boxes_data, s), shape) for s in ("val", "test")}
    by_boxes = _run(xp.Study(_cnn(), boxes_data, seed=0), max_grounding_drop=0.05)
    by_masks = _run(study, max_grounding_drop=0.05, grounding_masks=masks)
    assert by_masks.auto.grounding["val_start"] == by_boxes.auto.grounding["val_start"]
    assert by_masks.auto.grounding["test_start"] == by_boxes.auto.grounding["test_start"]


def test_user_masks_on_tabular_data_report_test_as_not_available():
    study = xp.Study(xp.zoo.load("toy_mlp"), xp.datasets.load("moons", n_samples=200), seed=0)
    masks = np.zeros((len(study.data.val), 2), bool)
    masks[:, 0] = True                   # "the evidence is in the first feature"
    step = _run(study, max_grounding_drop=0.1, grounding_masks=masks)
    g = step.auto.grounding
    assert 0.0 <= g["val_start"] <= 1.0 and all(r["grounding_drop"] <= 0.1
                                                for r in step.auto.history if r["kept"])
    assert math.isnan(g["test_end"]) and g["test_note"].startswith("n/a")
    assert "n/a: no test masks" in step.auto.message


@pytest.mark.parametrize("kwargs, match", [
    ({"max_grounding_drop": 1.5}, r"max_grounding_drop=.*1\.5"),
    ({"max_grounding_drop": -0.1}, "max_grounding_drop"),
    ({"max_grounding_drop": 0.1, "grounding_metric": "iou"}, r"grounding_metric=.*'iou'"),
    ({"max_grounding_drop": 0.1, "grounding_method": "nope"}, r"grounding_method=.*'nope'"),
    ({"grounding_masks": lambda n: np.ones((n, 16, 16), bool)},
     "grounding_masks=.*without a limit"),
    ({"max_grounding_drop": 0.1, "grounding_masks": lambda n: np.ones((3, 16, 16), bool)},
     r"grounding_masks=.*\(\d+, 1, 16, 16\).*shape \(3, 16, 16\)"),
    ({"max_grounding_drop": 0.1, "grounding_masks": lambda n: np.full((n, 16, 16), 2)},
     "grounding_masks=.*0/1"),
    ({"max_grounding_drop": 0.1, "grounding_masks": lambda n: np.zeros((n, 16, 16), bool)},
     "grounding_masks=.*empty masks at rows"),
    ({"max_grounding_drop": 0.1, "grounding_masks": lambda n: {"train": np.ones((n, 16, 16))}},
     "grounding_masks=.*'val'"),
])
def test_bad_input_refused_before_any_change(study, kwargs, match):
    n = len(study.data.val)
    kwargs = {k: v(n) if callable(v) else v for k, v in kwargs.items()}
    before = (len(study.history), study.current)
    with pytest.raises(ConfigError, match=match):
        study.auto_prune(params=0.5, steps=1, samples=32, **kwargs)
    assert (len(study.history), study.current) == before


def test_data_without_boxes_needs_masks():
    study = xp.Study(xp.zoo.load("toy_mlp"), xp.datasets.load("moons", n_samples=100), seed=0)
    with pytest.raises(ConfigError, match=r"max_grounding_drop=.*grounding_masks="):
        study.auto_prune(params=0.5, max_grounding_drop=0.1)
    assert len(study.history) == 1


# --------------------------------------------------- grounding-aware head criterion (evidence)
def _tiny_vit():
    from xprune_nb.models.case_study import BoxesViT

    torch.manual_seed(0)
    return BoxesViT(image_size=16, patch=4, dim=8, heads=2, mlp_dim=16, depth=2).eval()


def _head_scores(model, x, y, evidence, relevance):
    from xprune_nb.criteria import ScoringContext, create

    layers = {f"blocks.{i}.attn": b.attn for i, b in enumerate(model.blocks)}
    ctx = ScoringContext(model, "head", layers, x, y, None, 10, lambda m, v: m(v),
                         evidence=evidence)
    return create("attention", relevance=relevance).head_scores(ctx)


def test_evidence_relevance_is_the_in_box_part_of_the_attention_relevance(boxes_data):
    model = _tiny_vit()
    x, y = boxes_data.train.X[:12], boxes_data.train.y[:12]
    box = torch.from_numpy(_box_masks(truth_boxes(boxes_data, "train", rows=range(12)),
                                      (16, 16)))
    full = _head_scores(model, x, y, None, "attention")
    whole = _head_scores(model, x, y, torch.ones(12, 16, 16, dtype=torch.bool), "evidence")
    inside = _head_scores(model, x, y, box, "evidence")
    outside = _head_scores(model, x, y, ~box, "evidence")
    for k in full:
        torch.testing.assert_close(whole[k], full[k])           # the whole image: all of it
        assert (inside[k] <= full[k] + 1e-6).all() and (inside[k] >= 0).all()
        # patches are 4x4 and boxes sit on the 4-pixel grid: in + out is the whole
        torch.testing.assert_close(inside[k] + outside[k], full[k])
        assert not torch.allclose(inside[k], full[k])


def test_evidence_relevance_through_the_study_and_refused_without_boxes(boxes_data):
    study = xp.Study(_tiny_vit(), boxes_data, seed=0)
    scores = study.score("attention", granularity="head", relevance="evidence", samples=16)
    assert scores.options["relevance"] == "evidence"
    assert all(torch.isfinite(v).all() for v in scores.values.values())
    from xprune_nb.models.case_study import BoxesViT

    other = xp.Study(BoxesViT(image_size=8, patch=2, dim=8, heads=2, mlp_dim=16, depth=1),
                     xp.datasets.load("digits"), seed=0)
    n = len(other.history)
    with pytest.raises(ConfigError, match=r"Study.score\(relevance=.*'evidence' only on data "
                                          r"with evidence boxes.*'digits'"):
        other.score("attention", granularity="head", relevance="evidence")
    assert len(other.history) == n and other.scores_at(other.current) is None
