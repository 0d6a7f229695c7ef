"""What did pruning forget? (explain/forgotten.py): pruning-identified exemplars against a direct
computation, per-class accuracy change, saliency of the chosen rows, bad input, study unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TinyMLP

import xprune_nb as xp
from xprune_nb.core.errors import ConfigError
from xprune_nb.explain.forgotten import forgotten


@pytest.fixture(scope="module")
def study():
    torch.manual_seed(0)
    data = xp.datasets.load("digits")
    s = xp.Study(torch.nn.Sequential(torch.nn.Flatten(), TinyMLP()), data, seed=0,
                 probe_size=8)
    s.retrain(epochs=3, lr=1e-2, progress=False)
    s.score("magnitude", granularity="channel")
    s.prune(0.7)
    return s


def test_changed_examples_and_per_class_change_match_direct_computation(study):
    report = forgotten(study, 1, -1, n_examples=4)
    x, y = study.data.test.X, study.data.test.y.numpy()
    model_b, model_a = study.model_at(1), study.model_at(2)
    with torch.no_grad():
        pb = model_b(x).argmax(1).numpy()
        pa = model_a(x).argmax(1).numpy()
    np.testing.assert_array_equal(report.changed, np.flatnonzero(pb != pa))
    assert len(report.changed) > 0
    frame = report.to_frame()
    assert sorted(frame["row"]) == sorted(np.flatnonzero(pb != pa).tolist())
    kinds = dict(zip(frame["row"], frame["kind"]))
    for row, kind in kinds.items():
        expected = ("forgotten" if pb[row] == y[row] else
                    "learned" if pa[row] == y[row] else "changed")
        assert kind == expected
    per_class = report.per_class().set_index("class")
    for c in range(10):
        sel = y == c
        change = (pa[sel] == c).mean() - (pb[sel] == c).mean()
        assert per_class.loc[str(c), "accuracy_change"] == pytest.approx(change)
    s = report.summary()
    assert s["accuracy_before"] == pytest.approx((pb == y).mean())
    assert s["forgotten"] + s["learned"] <= s["changed"] == len(frame)
    # the explained examples: forgotten ones first, and exactly those rows
    assert len(report.examples) == min(4, len(frame))
    first = [kinds[r] for r in report.examples]
    assert first == sorted(first, key=lambda k: k != "forgotten")
    np.testing.assert_array_equal(report.saliency.inputs, x[report.examples].numpy())
    assert report.saliency.steps == (1, 2)


def test_other_split_and_no_saliency(study):
    report = forgotten(study, 0, -1, split="val", n_examples=2, saliency=False)
    assert report.saliency is None and report.split == "val"
    same = forgotten(study, 2, 2)
    assert same.summary()["changed"] == 0 and same.saliency is None and same.examples == []


def test_views(study):
    import matplotlib

    matplotlib.use("Agg")
    report = forgotten(study, 1, -1, n_examples=2, method="integrated_gradients")
    assert report.plot() is not None
    html = report._repr_html_()
    assert "pruning-identified exemplars" in html and "Saliency comparison" in html
    assert "forgotten=" in repr(report)


@pytest.mark.parametrize("kwargs, match", [
    ({"before": 0, "after": 9}, r"after"),
    ({"before": -40, "after": -1}, r"before"),
    ({"split": "holdout"}, r"split"),
    ({"n_examples": -1}, r"n_examples"),
    ({"saliency": "yes"}, r"saliency"),
    ({"method": "nope"}, r"method"),
])
def test_bad_input_is_refused_and_the_study_is_unchanged(study, kwargs, match):
    steps = len(study.history)
    state = {k: v.clone() for k, v in study.model.state_dict().items()}
    with pytest.raises(ConfigError, match=match):
        forgotten(study, **kwargs)
    assert len(study.history) == steps and study.current == 2
    for k, v in study.model.state_dict().items():
        assert torch.equal(v, state[k])
