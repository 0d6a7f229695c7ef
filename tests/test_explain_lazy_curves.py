"""Deletion/insertion curves computed on first ask: ``study.saliency`` leaves them for later
(``curves="lazy"``), displays say "not measured yet" and compute nothing, and every reader
(attributes, ``to_frame``, ``summary``) gets the same numbers as ``curves=True``, from the
steps' own models even after the study moved on."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import xprune_nb as xp
from xprune_nb import explain
from xprune_nb.core.errors import ConfigError
from xprune_nb.explain.compare import CURVE_COLUMNS

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def study():
    s = xp.Study(xp.zoo.load("digits_cnn"), xp.datasets.load("digits"), probe_size=16)
    s.score("magnitude")
    s.prune(0.3)
    return s


def test_lazy_curves_are_measured_on_first_ask_and_equal_the_eager_ones(study):
    eager = study.saliency(0, 1, n=4, curves=True)
    lazy = study.saliency(0, 1, n=4)
    assert not eager.curves_pending and lazy.curves_pending
    # displays compute nothing and say so
    assert "not measured yet" in lazy._repr_html_() and lazy.curves_pending
    shown = lazy.summary(measure=False)
    assert shown["deletion_auc_before"] == "not measured yet" and lazy.curves_pending
    assert shown["saliency_rank_correlation"] == eager.summary()["saliency_rank_correlation"]
    # the study moves on (another prune changes the current model): the curves of steps 0
    # and 1 are still those of steps 0 and 1
    study.score("magnitude")
    study.prune(0.2)
    frame = lazy.to_frame()
    assert not lazy.curves_pending
    for name, column in CURVE_COLUMNS.items():
        np.testing.assert_allclose(getattr(lazy, name), getattr(eager, name))
        np.testing.assert_allclose(frame[column].to_numpy(dtype=float), getattr(eager, name))
    assert lazy.summary() == pytest.approx(eager.summary(), nan_ok=True)


def test_a_pickled_comparison_carries_the_curves(study):
    import pickle

    lazy = study.saliency(0, 1, n=2)
    back = pickle.loads(pickle.dumps(lazy))
    assert not back.curves_pending and not lazy.curves_pending
    np.testing.assert_allclose(back.deletion_after, lazy.deletion_after)


def test_reading_one_curve_fills_all_and_a_failed_ask_leaves_them_pending(study):
    lazy = study.saliency(0, 1, n=3)
    calls = []

    def broken():
        calls.append(1)
        raise KeyboardInterrupt

    keep = lazy.__dict__["_curves_later"]
    lazy.defer_curves(broken)
    with pytest.raises(KeyboardInterrupt):
        _ = lazy.insertion_after
    assert lazy.curves_pending and calls == [1]
    lazy.defer_curves(keep)
    assert np.isfinite(lazy.deletion_before).all()
    assert not lazy.curves_pending and lazy.insertion_after.shape == (3,)


def test_lazy_saliency_runs_fewer_forward_passes_and_bad_curves_is_refused(study):
    x = torch.as_tensor(study.data.test.X[:4])
    model = study.model_at(0)
    counted = []

    def forward(m, v):
        counted.append(len(v))
        return m(v)

    explain.compare_saliency(model, model, x, forward=forward, curves="lazy")
    lazy_rows = sum(counted)
    counted.clear()
    explain.compare_saliency(model, model, x, forward=forward)      # curves=True by default
    assert sum(counted) == lazy_rows + 2 * 2 * 21 * 4                # 2 models, 2 curves, 21 cuts
    with pytest.raises(ConfigError, match=r"Study\.saliency\(curves=\.\.\.\): expected True "
                                          r"\(now\) or 'lazy'"):
        study.saliency(0, 1, n=2, curves=False)
