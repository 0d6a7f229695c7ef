"""Ground-truth relevance: the digits_boxes dataset (data/ground_truth.py) and the grounding
metrics (explain/grounding.py) with a before/after comparison on a study."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import xprune_nb as xp
from xprune_nb.core.errors import ConfigError
from xprune_nb.data import ground_truth as gt
from xprune_nb.data.raw import generate_digits_boxes, sklearn_raw
from xprune_nb.explain.grounding import (
    compare_grounding,
    grounding,
    pointing_game,
    relevance_mass_in_box,
)


@pytest.fixture(scope="module")
def data():
    return gt.load(seed=3, n_samples=120, canvas=16, distractors=2)


def test_generation_is_seeded_and_boxes_hold_the_digit(data):
    again = gt.load(seed=3, n_samples=120, canvas=16, distractors=2)
    assert torch.equal(again.test.X, data.test.X) and torch.equal(again.test.y, data.test.y)
    other = gt.load(seed=4, n_samples=120, canvas=16, distractors=2)
    assert not torch.equal(other.train.X, data.train.X)
    assert data.input_shape == (1, 16, 16) and data.num_classes == 10
    digits, labels, _, _ = sklearn_raw("digits")
    X, y, box = generate_digits_boxes(3, 120, 16, 2, 0.05, 4)
    rng = np.random.RandomState(3)
    pick = rng.randint(0, len(digits), size=120)
    for i in range(10):
        r0, c0, r1, c1 = box[i]
        assert (r1 - r0, c1 - c0) == (8, 8)
        inside = X[i, 0, r0:r1, c0:c1]
        # the digit is there (distractors never touch the box; noise only raises pixels)
        assert np.all(inside >= digits[pick[i]].reshape(8, 8) / 16.0 - 1e-12)
        assert y[i] == labels[pick[i]]
    assert (box[:, :2] % 4 == 0).all()                 # grid=4: corners on the patch grid
    assert len({tuple(b) for b in box[:, :2]}) > 4     # ...at many places
    split_boxes = gt.boxes(data, "test")
    assert split_boxes.shape == (len(data.test), 4)
    np.testing.assert_array_equal(split_boxes, box[data.test.index.numpy()])


def test_without_distractors_or_noise_all_ink_is_in_the_box():
    X, _, box = generate_digits_boxes(0, 30, 16, 0, 0.0, 1)
    mass = relevance_mass_in_box(X, box)
    np.testing.assert_allclose(mass, 1.0)


def test_metrics_on_hand_made_maps():
    maps = np.zeros((3, 1, 6, 6))
    maps[0, 0, 1, 1] = 2.0
    maps[0, 0, 5, 5] = 2.0
    maps[1, 0, 5, 5] = 1.0
    maps[1, 0, 0, 0] = -5.0                     # negative relevance is not counted
    boxes = np.array([[0, 0, 3, 3]] * 3)
    mass = relevance_mass_in_box(maps, boxes)
    assert mass[0] == pytest.approx(0.5) and mass[1] == 0.0 and np.isnan(mass[2])
    hits = pointing_game(maps, boxes)
    assert hits[1] == 0.0 and np.isnan(hits[2])
    assert pointing_game(maps[1:2], boxes[:1], tolerance=3)[0] == 1.0
    with pytest.raises(ConfigError, match="boxes"):
        relevance_mass_in_box(maps, np.array([[0, 0, 9, 9]] * 3))
    with pytest.raises(ConfigError, match="boxes"):
        relevance_mass_in_box(maps, [[0, 0, 2, 2]])
    with pytest.raises(ConfigError, match="tolerance"):
        pointing_game(maps, boxes, tolerance=-1)


def test_boxes_of_other_data_are_refused():
    with pytest.raises(ConfigError, match=r"boxes\(data=.*digits_boxes"):
        gt.boxes(xp.datasets.load("digits"))


def _cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))


def test_grounding_before_vs_after_on_a_study(data):
    study = xp.Study(_cnn(), data, seed=0, probe_size=8)
    study.score("magnitude", granularity="channel")
    study.prune(0.5)
    result = grounding(study, 0, -1, method="saliency", n=10)
    frame = result.to_frame()
    assert len(frame) == 10 and frame["box_fraction"].iloc[0] == pytest.approx(64 / 256)
    assert ((frame["mass_in_box_before"] >= 0) & (frame["mass_in_box_before"] <= 1)).all()
    s = result.summary()
    assert set(s) >= {"mass_in_box_before", "mass_in_box_after", "pointing_before"}
    # the same numbers as the metric functions on the comparison's own maps
    comp = study.saliency(0, -1, method="saliency", inputs=list(range(10)))
    again = compare_grounding(comp, gt.boxes(study.data, "test", rows=range(10)))
    np.testing.assert_allclose(again.mass_before,
                               relevance_mass_in_box(comp.before, again.boxes))
    assert "<table" in result._repr_html_()
    import matplotlib

    matplotlib.use("Agg")
    assert result.plot() is not None
    plain = xp.Study(_cnn(), gt.load(seed=0, n_samples=60, canvas=16), seed=0)
    plain_digits = xp.Study(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)),
                            xp.datasets.load("digits"), seed=0)
    with pytest.raises(ConfigError, match="digits_boxes"):
        grounding(plain_digits, 0, 0)
    assert len(plain.history) == 1


def test_attention_relevance_grounding_on_a_hugging_face_vit(data):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.ViTConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                                 intermediate_size=32, image_size=16, patch_size=4,
                                 num_channels=1, num_labels=10, attn_implementation="eager")
    torch.manual_seed(0)
    study = xp.Study(transformers.ViTForImageClassification(cfg), data, seed=0, probe_size=8)
    result = grounding(study, 0, 0, method="attention_relevance", n=6, pool="cls")
    np.testing.assert_allclose(result.mass_before, result.mass_after)
    assert np.isfinite(result.mass_before).all()
