"""``why(layer, unit)`` reads the study's record: at any step, after retraining or ``goto``, for
any unit that ever existed; class names work wherever class indices do; criteria that read no
data refuse ``classes=``; pandas inputs convert without torch's read-only warning."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import xprune_nb as xp
from xprune_nb.core.errors import ConfigError

CLASSES = ["cultivar_A", "cultivar_B", "cultivar_C"]


def _data(n: int = 150):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, 6, generator=gen)
    y = (x[:, :3].argmax(1)).long()
    return x, y


@pytest.fixture(scope="module")
def study():
    x, y = _data()
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 10), nn.ReLU(),
                        nn.Linear(10, 3))
    s = xp.Study(net, train=(x[:90], y[:90]), val=(x[90:120], y[90:120]),
                 test=(x[120:], y[120:]), class_names=CLASSES, seed=0)
    s.score("lrp", classes=["cultivar_C", 0])      # step 0's scores (class names accepted)
    s.prune(0.25)                                  # step 1
    s.retrain(epochs=1, progress=False)            # step 2
    s.score("taylor", samples=60)
    s.prune(0.25)                                  # step 3
    s.retrain(epochs=1, progress=False)            # step 4
    return s


def _gone_at(study, step):
    row = study.why(step).to_frame().iloc[0]
    return row["layer"], int(row["unit"])


def test_unit_removed_in_first_prune_is_explained_after_retraining(study):
    assert study.current == 4 and study.history[4].kind == "retrain"
    layer, unit = _gone_at(study, 1)          # numbered as at step 0 (the prune's parent)
    result = study.why(layer, unit)
    summary = result.summary()
    assert result.removed_at == 1 and summary["status"] == "removed at step 1"
    assert summary["removed_by"] == study.history[1].label
    # score and rank at that step are those of the prune's own why table
    expected = study.why(1).to_frame()
    expected = expected[(expected.layer == layer) & (expected.unit == unit)].iloc[0]
    assert summary["score_at_removal"] == pytest.approx(float(expected["score"]))
    assert summary["rank_at_removal"].startswith(f"{int(expected['rank'])} of ")
    # the classes that relied on it, by name (lrp scored for cultivar_C and cultivar_A)
    assert "(lrp scores of step 0)" in summary["relied_on_by"]
    assert not any(str(i) in summary["relied_on_by"].split(" (")[0] for i in range(3))


def test_unit_removed_in_second_prune_follows_the_renumbering(study):
    layer, unit_then = _gone_at(study, 3)     # numbered as at step 2
    result = study.why(layer, unit_then, at=2)
    assert result.removed_at == 3 and (result.at, result.unit) == (2, unit_then)
    # the same unit named by its original index gives the same answer
    frame = result.to_frame()
    first = frame.iloc[0]
    assert first["step"] == 0 and first["unit_then"] >= unit_then
    again = study.why(layer, int(first["unit_then"]))
    assert again.removed_at == 3
    # the removal row's score is the taylor score of the step-3 prune
    removal = again.to_frame().query("event == 'removed'").iloc[0]
    assert removal["criterion"] == "taylor" and removal["unit_then"] == unit_then


def test_kept_unit_and_other_branches(study):
    frame = study.why(1).to_frame()
    layer = frame["layer"].iloc[0]
    removed = set(frame[frame.layer == layer]["unit"])
    kept = next(u for u in range(100) if u not in removed)
    result = study.why(layer, kept)
    assert result.summary()["status"].startswith(("still in the model", "removed at step 3"))
    study.goto(0)
    try:
        layer, unit = _gone_at(study, 1)
        back = study.why(layer, unit)
        assert back.removed_at is None
        assert back.summary()["removed_on_other_branches"] == "step 1"
    finally:
        study.goto(4)


def test_unknown_layer_lists_the_valid_ones_and_bad_units_are_refused(study):
    with pytest.raises(ConfigError, match=r"Study.why\(layer=...\): unknown name 'conv9'; "
                       r"valid names are '0', '2'"):
        study.why("conv9", 0)
    with pytest.raises(ConfigError, match=r"Study.why\(unit=...\): expected an index in "
                       r"\[0, 12\)"):
        study.why("0", 12)
    with pytest.raises(ConfigError, match=r"Study.why\(unit=...\)"):
        study.why("0", -1)


def test_never_scored_study_answers_without_wrong_advice():
    x, y = _data(60)
    s = xp.Study(nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)),
                 train=(x, y), val=(x, y), test=(x, y))
    result = s.why("0", 3)     # no NotScoredError: the record has an answer
    assert result.removed_at is None and result.to_frame().empty
    assert result.summary()["status"] == "still in the model at the current step 0"
    assert result.summary()["relied_on_by"].startswith("n/a: ")


def test_class_names_wherever_indices(study):
    by_name = study.scores_at(0)
    assert by_name.options["classes"] == [2, 0]
    with pytest.raises(ConfigError, match=r"Study.score\(classes=...\): unknown name "
                       r"'cultivar_Z'; valid names are 'cultivar_A', 'cultivar_B', "
                       r"'cultivar_C'"):
        study.score("lrp", classes=["cultivar_Z"])
    sens = study.sensitivity("taylor", classes="cultivar_B", amounts=[0.5], samples=12)
    assert len(sens.to_frame())
    comp = study.saliency(0, -1, n=3, labels=["cultivar_A", "cultivar_C", 1])
    assert comp.summary()["saliency_rank_correlation"] == comp.summary()[
        "saliency_rank_correlation"]


@pytest.mark.parametrize("criterion", ["magnitude", "random"])
def test_criteria_that_read_no_data_refuse_classes(study, criterion):
    before = len(study.history), study.scores_at(study.current)
    with pytest.raises(ConfigError, match=rf"Study.score\(classes=...\): criterion "
                       rf"'{criterion}' does not depend on classes"):
        study.score(criterion, classes=[1])
    with pytest.raises(ConfigError, match=r"Study.sensitivity\(classes=...\)"):
        study.sensitivity(criterion, classes=[1])
    assert (len(study.history), study.scores_at(study.current)) == before


def test_pandas_inputs_convert_without_the_read_only_warning():
    pd = pytest.importorskip("pandas")
    x, y = _data(60)
    frame = pd.DataFrame(x.numpy(), columns=[f"f{i}" for i in range(6)])
    labels = pd.Series(y.numpy())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = xp.Study(nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)),
                     train=(frame, labels), val=(frame, labels), test=(frame, labels))
    assert np.allclose(s.data.train.X.numpy(), x.numpy())
    assert s.data.feature_names == [f"f{i}" for i in range(6)]   # the DataFrame's columns
