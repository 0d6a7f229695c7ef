"""Sensitive groups: given with the data, kept from the model, measured per group, saved."""

from __future__ import annotations

import pytest
import torch
from _group_data import grouped_split as _split
from _group_data import small_model as _model
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import xprune_nb as xp
from xprune_nb.core.errors import ConfigError, DataError


class _Spy(nn.Module):
    """Fails if anything but the (N, 4) inputs reaches it."""

    def __init__(self):
        super().__init__()
        self.net = _model()

    def forward(self, x):
        assert x.dim() == 2 and x.shape[1] == 4 and x.dtype == torch.float32
        return self.net(x)


def test_triples_give_per_group_accuracy_everywhere(tmp_path):
    tr, va, te = _split(40, 0), _split(20, 1), _split(20, 2)
    study = xp.Study(_Spy(), train=tr, val=va, test=te, group_names=["majority", "minority"])
    assert study.data.group_names == ["majority", "minority"]
    first = study.history[0]
    pred = study.model(te[0]).argmax(1)
    want = {name: float((pred == te[1])[te[2] == g].double().mean())
            for g, name in enumerate(["majority", "minority"])}
    assert first.per_group_accuracy == pytest.approx(want)
    m = study.evaluate()
    assert m.per_group_accuracy == pytest.approx(want)
    assert m["worst_group_accuracy"] == pytest.approx(min(want.values()))
    assert m.as_dict()["group_accuracy_gap"] == pytest.approx(
        max(want.values()) - min(want.values()))
    assert set(m.val_per_group_accuracy) == {"majority", "minority"}
    study.score("magnitude")
    study.prune(0.25)
    frame = study.history.to_frame()
    for col in ("accuracy[majority]", "accuracy[minority]", "worst_group_accuracy",
                "group_accuracy_gap"):
        assert frame[col].notna().all(), col
    from xprune_nb.ui.widgets.strip import MetricsStrip

    strip = MetricsStrip()
    strip.update(study, None, None)
    now = study.step.per_group_accuracy
    worst = min(now, key=now.get)
    assert f"worst group {worst} {now[worst]:.3f}" in strip.text and "minority" in strip.text
    path = study.save(tmp_path / "g.xps")
    back = xp.Study.load(path, model=_Spy())
    assert back.data.group_names == ["majority", "minority"]
    assert torch.equal(back.data.test.groups, te[2])
    assert back.history[1].per_group_accuracy == study.history[1].per_group_accuracy


def test_loader_yielding_triples_and_string_labels():
    X, y, g = _split(24, 3)
    labels = ["f" if int(v) else "m" for v in g]
    loader = DataLoader(TensorDataset(X, y, g), batch_size=5)
    study = xp.Study(_model(), train=loader, val=(X, y, g), test=(X, y, g))
    train = study.data.train          # streamed: the groups of the drawn items, in order
    assert torch.equal(train.groups, g[train.order()]) and study.data.group_names == ["0", "1"]
    with pytest.raises(DataError, match="all strings or all integers across the splits"):
        xp.Study(_model(), train=loader, val=(X, y, labels), test=(X, y, labels))
    data = xp.data.bundle((X, y), (X, y), (X, y), groups={"train": labels, "val": labels,
                                                          "test": labels})
    assert data.group_names == ["f", "m"] and data.test.groups.tolist()[:4] == [0, 1, 1, 1]


def test_groups_for_a_bundled_dataset_survive_save(tmp_path):
    data = xp.datasets.load("moons", n_samples=100)
    groups = {k: ["a", "b"] * (len(data.split(k)) // 2) for k in ("train", "val", "test")}
    model = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 2))
    study = xp.Study(model, data, groups=groups)
    back = xp.Study.load(study.save(tmp_path / "m.xps"), model=model)
    assert back.data.group_names == ["a", "b"]
    assert back.history[0].per_group_accuracy == study.history[0].per_group_accuracy


@pytest.mark.parametrize("groups, names, error, match", [
    ({"train": [0] * 5}, None, DataError, r"train split has 40 examples but 5 group labels"),
    ({"train": [0.0] * 39 + [float("nan")]}, None, DataError, "NaN group labels"),
    ({"train": [0] * 40, "val": [0] * 20, "test": [0] * 20}, ["a", "b"], DataError,
     r"group\(s\) \['b'\] have no examples in the train split"),
    ({"train": [0, 1] * 20}, ["a"], ConfigError, r"expected 2 names"),
    ({"train": [0, 1] * 20}, ["a", "b", "c"], DataError, r"\['c'\] have no examples in the "
                                                          "train split"),
    ({"train": [0, 1] * 20, "val": [0] * 20, "test": [0, 1] * 10}, None, DataError,
     r"\['1'\] have no examples in the val split"),
    ({"train": [0, 1] * 20}, None, ConfigError, r"groups=.*labels for every split"),
    ({"trian": [0] * 40}, None, ConfigError, r"Study\(groups=...\): expected a dict"),
    (None, ["a"], ConfigError, r"group_names=.*only together with groups"),
    ({"train": [-1, 1] * 20}, None, DataError, r"must be >= 0"),
])
def test_bad_groups_are_refused_clearly(groups, names, error, match):
    tr, va, te = _split(40, 0), _split(20, 1), _split(20, 2)
    if groups is not None and set(groups) == {"train"} and "every split" not in match:
        groups = {**groups, "val": [0, 1] * 10, "test": [0, 1] * 10}
    with pytest.raises(error, match=match):
        xp.Study(_model(), train=tr[:2], val=va[:2], test=te[:2], groups=groups,
                 group_names=names)


def test_labels_given_twice_are_refused():
    tr = _split(40, 0)
    with pytest.raises(ConfigError, match=r"groups=.*labels again for \['train'\]"):
        xp.Study(_model(), train=tr, groups={"train": tr[2]})


def test_no_groups_no_group_numbers():
    tr = _split(40, 0)
    study = xp.Study(_model(), train=tr[:2])
    assert study.data.group_names is None and study.history[0].per_group_accuracy == {}
    assert "worst_group_accuracy" not in study.history.to_frame().columns
    assert "worst_group_accuracy" not in study.evaluate().as_dict()


def test_a_dataframe_column_names_the_groups():
    import pandas as pd

    X, y, g = _split(40, 0)
    frame = pd.DataFrame(X.numpy(), columns=["a", "b", "c", "d"])
    frame["site"] = ["north" if int(v) else "south" for v in g]
    data = xp.data.bundle((frame, y), (frame, y), groups={"train": "site", "val": "site"})
    assert data.feature_names == ["a", "b", "c", "d"] and data.input_shape == (4,)
    assert data.group_names == ["north", "south"]
    assert torch.equal(data.train.groups, 1 - g)
    with pytest.raises(ConfigError, match=r"groups\['train'\]=...\): expected .*columns: "):
        xp.data.bundle((frame, y), groups={"train": "sex"})


def test_groups_for_a_streamed_split_align_with_its_dataset():
    X, y, g = _split(24, 3)
    loader = DataLoader(TensorDataset(X, y), batch_size=5)   # pairs: kept as a stream
    study = xp.Study(_model(), train=loader, val=(X, y), groups={"train": g, "val": g})
    train = study.data.train
    assert torch.equal(train.groups, g[train.order()]) and torch.equal(train.given_groups, g)

    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            return iter(zip(X, y))

    with pytest.raises(ConfigError, match=r"groups\['train'\]=...\): expected labels only "
                                          r"for tensor splits or a Dataset with __len__.*"
                                          r"make its items \(x, y, g\) instead"):
        xp.Study(_model(), train=Stream(), val=(X, y), groups={"train": g, "val": g},
                 score_samples=8)


def test_forgotten_per_group_counts_and_words():
    tr, va, te = _split(40, 0), _split(20, 1), _split(20, 2)
    study = xp.Study(_model(), train=tr, val=va, test=te, group_names=["majority", "minority"])
    study.score("magnitude")
    study.prune(0.5)
    report = study.forgotten(0, 1, saliency=False)
    frame = report.per_group()
    before = study.model_at(0)(te[0]).argmax(1)
    after = study.model_at(1)(te[0]).argmax(1)
    for row in frame.itertuples():
        sel = te[2] == ["majority", "minority"].index(row.group)
        assert row.examples == int(sel.sum())
        assert row.changed == int((before[sel] != after[sel]).sum())
        assert row.accuracy_change == pytest.approx(
            float((after[sel] == te[1][sel]).double().mean()
                  - (before[sel] == te[1][sel]).double().mean()))
    assert list(frame["accuracy_change"]) == sorted(frame["accuracy_change"])
    words = report.per_group_words()
    if (frame["accuracy_change"] < 0).any():
        assert f"the group that lost most is {frame['group'][0]}" in words
    else:
        assert words.startswith("No group lost accuracy")
    plain = xp.Study(_model(), train=tr[:2]).forgotten(0, 0, saliency=False)
    with pytest.raises(ConfigError, match=r"per_group\(\): the study has no sensitive groups"):
        plain.per_group()


def test_auto_prune_keeps_every_group_within_max_group_drop():
    import warnings

    tr, va, te = _split(60, 0), _split(40, 1), _split(40, 2)
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    study = xp.Study(model, train=tr, val=va, test=te, group_names=["majority", "minority"])
    study.retrain(epochs=20, lr=0.05, progress=False)
    start = dict(study.step.val_per_group_accuracy)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # the budget may not be met under the limit
        step = study.auto_prune(params=0.4, steps=2, max_group_drop=0.05, criterion="magnitude")
    for row in step.auto.history:
        assert "group_drop" in row
        if row["kept"]:
            assert row["group_drop"] <= 0.05 + 1e-9
    for name, acc in study.step.val_per_group_accuracy.items():
        assert start[name] - acc <= 0.05 + 1e-9
    assert step.auto.rounds >= 1      # this small limit still lets a round through
    assert "on test, the group that lost most is" in step.note
    with pytest.raises(ConfigError, match=r"max_group_drop=...\): expected a number in \[0, 1\]"):
        study.auto_prune(params=0.5, max_group_drop=2.0)
    plain = xp.Study(_model(), train=tr[:2])
    with pytest.raises(ConfigError, match=r"max_group_drop=...\): expected None for a study "
                                          "without sensitive groups"):
        plain.auto_prune(params=0.5, max_group_drop=0.02)


def test_the_report_has_a_per_group_section_only_with_groups(tmp_path):
    tr, va, te = _split(40, 0), _split(20, 1), _split(20, 2)
    study = xp.Study(_model(), train=tr, val=va, test=te, group_names=["majority", "minority"])
    study.score("magnitude")
    study.prune(0.5)
    page = study.report(tmp_path / "r.html", include=["per_group"], latency=False)
    text = page.read_text() if hasattr(page, "read_text") else (tmp_path / "r.html").read_text()
    assert "id='per_group'" in text and "minority" in text and "accuracy_change" in text
    plain = xp.Study(_model(), train=tr[:2])
    plain.report(tmp_path / "p.html", include=["per_group"], latency=False)
    assert "id='per_group'" not in (tmp_path / "p.html").read_text()


def test_auto_tab_passes_the_group_limit_and_shows_its_refusal():
    from xprune_nb.ui.widgets import Panel

    study = xp.Study(_model(), train=_split(40, 0)[:2])   # no groups: the core refuses
    panel = Panel(study)
    view = panel.auto_view
    assert view.config()["max_group_drop"] is None
    view.max_group_drop.value = "0.02"
    assert view.config()["max_group_drop"] == 0.02
    view.run_button.click()
    assert panel.wait(60)
    assert "max_group_drop" in panel.status and len(study.history) == 1
    panel.close()
