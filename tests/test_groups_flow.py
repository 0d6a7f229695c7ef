"""Sensitive groups through recipes, exported scripts, study files and streamed splits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _group_data import grouped_split as _split
from _group_data import small_model as _model
from torch import nn

import xprune_nb as xp
from xprune_nb.core.errors import ConfigError, DataError

ROOT = Path(__file__).resolve().parent.parent
NAMES = ["majority", "minority 'b'"]     # a quote: names are data, never code




def _pruned_study():
    tr, va, te = _split(40, 0), _split(20, 1), _split(20, 2)
    study = xp.Study(_model(), train=tr, val=va, test=te, group_names=NAMES)
    study.score("magnitude")
    study.prune(0.25)
    return study


def test_a_recipe_carries_the_groups_in_its_data_file(tmp_path):
    study = _pruned_study()
    recipe = study.recipe()
    assert recipe.groups == {"names": NAMES} and recipe.to_dict()["groups"] == {"names": NAMES}
    path = recipe.save(tmp_path / "r.yaml")
    stored = torch.load(tmp_path / "r.data.pt", weights_only=True)
    assert stored["meta"]["group_names"] == NAMES
    assert torch.equal(stored["test"]["groups"], study.data.test.groups)
    again = xp.Study.from_recipe(path, model=_model())
    assert again.data.group_names == NAMES
    assert torch.equal(again.data.val.groups, study.data.val.groups)
    assert again.step.per_group_accuracy == study.step.per_group_accuracy
    assert again.step.metrics["worst_group_accuracy"] == study.step.metrics[
        "worst_group_accuracy"]
    plain = xp.Study(_model(), train=_split(40, 0)[:2]).recipe()
    assert plain.groups is None and "groups" not in plain.to_dict()


def test_a_bundled_dataset_recipe_stores_the_labels_in_a_groups_file(tmp_path):
    data = xp.datasets.load("moons", n_samples=100)
    groups = {k: ["b", "a"] * (len(data.split(k)) // 2) for k in ("train", "val", "test")}
    model = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 2))
    study = xp.Study(model, data, groups=groups)
    study.score("magnitude")
    study.prune(0.25)
    path = study.recipe(model={"factory": "torch.nn:Identity"}).save(tmp_path / "m.json")
    text = json.loads(path.read_text())
    assert text["groups"] == {"names": ["a", "b"], "file": "m.groups.pt"}
    again = xp.Study.from_recipe(path, model=model)
    assert again.data.group_names == ["a", "b"]
    assert torch.equal(again.data.train.groups, study.data.train.groups)
    assert again.step.per_group_accuracy == study.step.per_group_accuracy
    # data passed by hand without labels takes the recipe's stored ones only if they fit
    with pytest.raises(DataError, match=r"train split has 20 examples but 60 group labels"):
        xp.Study.from_recipe(path, model=model, data=xp.data.bundle(*[
            (data.train.X[:20], data.train.y[:20])] * 3))


def test_a_bad_groups_entry_is_refused():
    base = {"model": {"zoo": "toy_mlp"}, "data": {"dataset": "moons"}}
    with pytest.raises(ConfigError, match=r"groups.names=...\): expected a list of distinct"):
        xp.Recipe.from_dict({**base, "groups": {"names": ["a", "a"]}})
    with pytest.raises(ConfigError, match=r"groups.*unknown name 'labels'"):
        xp.Recipe.from_dict({**base, "groups": {"names": ["a"], "labels": [0]}})
    recipe = xp.Recipe.from_dict({**base, "groups": {"names": ["a", "b"]}})
    with pytest.raises(DataError, match=r"measured accuracy per group \(\['a', 'b'\]\), but the "
                                        "data has no group labels"):
        xp.Study.from_recipe(recipe)


def test_the_exported_script_rebuilds_the_groups_and_prints_them(tmp_path, auto_study):
    study = auto_study
    script = study.export_script(tmp_path / "g.py")
    text = script.read_text()
    assert "minority" not in text            # the names live in g.groups.pt, not in code
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(script), "--out", str(tmp_path / "out"),
                           "--quiet"], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["per_group_accuracy"] == pytest.approx(study.step.per_group_accuracy)
    assert metrics["worst_group_accuracy"] == pytest.approx(
        study.step.metrics["worst_group_accuracy"])
    assert f"accuracy[{NAMES[1]}]: " in proc.stdout and "worst_group_accuracy: " in proc.stdout
    (limit,) = metrics["group_limits"]     # auto_prune's limit, re-checked by the script
    assert limit["held"] and limit["max_group_drop"] == 0.05 and "group limit: " in proc.stdout
    assert limit["val_drop"] == pytest.approx(
        xp.recipe.groups.group_limit_report(study)[0]["val_drop"])
    # the recipe the script writes carries the groups and the limit too
    again = xp.Study.from_recipe(tmp_path / "out" / "recipe.yaml", model=_model_16())
    assert again.data.group_names == NAMES
    assert again.recipe().groups["limits"] == study.recipe().groups["limits"]


def test_a_study_file_keeps_groups_of_a_stand_in_split(tmp_path):
    tr, te = _split(40, 0), _split(20, 2)
    study = xp.Study(_model(), train=tr, test=te, group_names=NAMES)   # val: the test split
    back = xp.Study.load(study.save(tmp_path / "s.xps"), model=_model())
    assert back.data.group_names == NAMES
    assert torch.equal(back.data.val.groups, te[2])
    assert back.history[0].val_per_group_accuracy == study.history[0].val_per_group_accuracy


def _trained_study():
    tr, va, te = _split(60, 0), _split(40, 1), _split(40, 2)
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    study = xp.Study(model, train=tr, val=va, test=te, group_names=NAMES)
    study.retrain(epochs=20, lr=0.05, progress=False)
    return study


@pytest.fixture(scope="module")
def auto_study():
    import warnings

    study = _trained_study()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # the budget may not be met under the limit
        study.auto_prune(params=0.5, steps=2, max_group_drop=0.05, criterion="magnitude")
    return study


def test_auto_prunes_group_limit_is_recorded_and_rechecked_on_replay(tmp_path, auto_study):
    study = auto_study
    step = study.step
    assert step.config["group_limit"] == {"max_group_drop": 0.05, "from": 1}
    recipe = study.recipe()
    assert recipe.groups["limits"] == [{"max_group_drop": 0.05, "from": 1,
                                        "at": study.current}]
    again = xp.Study.from_recipe(recipe.save(tmp_path / "a.yaml"), model=_model_16())
    (row,) = xp.recipe.groups.group_limit_report(again)
    assert row["held"] and row["val_drop"] <= 0.05 + 1e-9 and row["step"] == study.current
    assert row["val_drop"] == pytest.approx(xp.recipe.groups.group_limit_report(study)[0][
        "val_drop"])
    # a limit the replay breaks is said, not hidden
    drops = {g: again.history[0].val_per_group_accuracy[g] - a
             for g, a in again.step.val_per_group_accuracy.items()}
    assert max(drops.values()) > 0    # (this pruning costs a group something)
    recipe.groups["limits"] = [{"max_group_drop": 0.0, "from": 0, "at": study.current}]
    with pytest.warns(UserWarning, match=r"breaks auto_prune's max_group_drop=0.0"):
        xp.Study.from_recipe(recipe, model=_model_16())
    with pytest.raises(ConfigError, match=r"groups.limits\[0\].at=...\): expected a step index"):
        xp.Recipe.from_dict({**recipe.to_dict(), "groups": {
            "names": NAMES, "limits": [{"max_group_drop": 0.1, "from": 3, "at": 1}]}})


def _model_16():
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))


def test_data_files_carry_group_codes_and_refuse_bad_ones(tmp_path):
    import numpy as np

    from xprune_nb.core.errors import StudyFileError
    from xprune_nb.export import load_data, load_groups

    X, y, g = _split(40, 0)
    np.savez(tmp_path / "d.npz", train_X=X.numpy(), train_y=y.numpy(), train_groups=g.numpy())
    data = load_data(tmp_path / "d.npz")
    assert data.group_names == ["0", "1"] and torch.equal(data.test.groups, g)
    torch.save({"train": {"X": X, "y": y, "groups": g}, "meta": {"group_names": NAMES}},
               tmp_path / "d.pt")
    assert load_data(tmp_path / "d.pt").group_names == NAMES
    torch.save({"train": {"X": X, "y": y, "groups": g[:5]}}, tmp_path / "bad.pt")
    with pytest.raises(StudyFileError, match=r"split 'train': groups must be a 1-D tensor of "
                                             r"integer group codes, one per row \(40\)"):
        load_data(tmp_path / "bad.pt")
    torch.save({"train": {"X": X, "y": y, "groups": g.double()}}, tmp_path / "f.pt")
    with pytest.raises(StudyFileError, match=r"groups must be .*integer group codes"):
        load_data(tmp_path / "f.pt")
    # a script's --data without labels of its own: measured without groups, not mislabelled
    torch.save({"names": NAMES, "labels": {"train": g}, "limits": []}, tmp_path / "s.groups.pt")
    plain = xp.data.bundle((X, y))
    assert load_groups(tmp_path / "s.groups.pt", plain, stored_labels=False) == {}
    assert load_groups(tmp_path / "s.groups.pt", data, stored_labels=False) == {
        "group_names": NAMES}
    torch.save({"names": "x", "labels": None}, tmp_path / "bad.groups.pt")
    with pytest.raises(StudyFileError, match=r"is damaged \(not the group names and labels"):
        load_groups(tmp_path / "bad.groups.pt", plain)


class _Counting(torch.utils.data.Dataset):
    """A map-style dataset that records every item read; items are (x, y, g) or (x, y)."""

    def __init__(self, n: int, seed: int, with_groups: bool = True, group=None):
        self.inputs, self.labels, self.g = _split(n, seed)   # not .X/.y: that reads as tensors
        self.with_groups, self.group, self.reads = with_groups, group, []

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        self.reads.append(int(i))
        if not self.with_groups:
            return self.inputs[i], self.labels[i]
        return (self.inputs[i], self.labels[i],
                self.g[i] if self.group is None else self.group(i))


def test_a_streamed_dataset_of_triples_reads_only_the_drawn_items():
    tr, va, te = _Counting(2000, 0), _Counting(1500, 1), _Counting(1500, 2)
    study = xp.Study(_model(), train=tr, val=va, test=te, eval_samples=60, score_samples=40,
                     group_names=NAMES)
    assert study.data.streamed and study.data.group_names == NAMES
    for ds, split, n in ((tr, study.data.train, 40), (va, study.data.val, 60),
                         (te, study.data.test, 60)):
        drawn = split.order()[:n]
        assert set(ds.reads) == set(drawn.tolist())        # only the drawn items were read
        assert torch.equal(split.groups, ds.g[drawn])
    drawn = study.data.test.order()[:60]
    pred = study.model(te.inputs[drawn]).argmax(1)
    want = {name: float((pred == te.labels[drawn])[te.g[drawn] == k].double().mean())
            for k, name in enumerate(NAMES)}
    assert study.history[0].per_group_accuracy == pytest.approx(want)
    study.score("magnitude", samples=16)
    study.prune(0.25)
    study.retrain(epochs=1, progress=False)        # the user's items (x, y, g) train as pairs
    assert set(study.history.to_frame().columns) >= {f"accuracy[{n}]" for n in NAMES}


def test_labels_given_for_a_streamed_dataset_are_picked_at_the_drawn_items(tmp_path):
    tr = _Counting(1000, 0, with_groups=False)
    te = _Counting(800, 2, with_groups=False)
    names = ["m" if int(v) else "f" for v in te.g]
    study = xp.Study(_model(), train=tr, test=te, eval_samples=50, score_samples=30,
                     groups={"train": ["m" if int(v) else "f" for v in tr.g], "test": names})
    drawn = study.data.test.order()[:50]
    assert set(te.reads) == set(drawn.tolist())
    assert study.data.group_names == ["f", "m"]
    assert torch.equal(study.data.test.groups, te.g[drawn]) and len(study.data.test.groups) == 50
    with pytest.raises(DataError, match=r"the test split's dataset has 800 items but 50 group "
                                        r"labels; give one label per item of the dataset"):
        xp.Study(_model(), train=tr, test=te, eval_samples=50, score_samples=30,
                 groups={"train": tr.g, "test": te.g[:50]})
    # a study file keeps the labels given per item and the names
    back = xp.Study.load(study.save(tmp_path / "s.xps"), model=_model(),
                         data=xp.data.bundle(tr, None, te))
    assert back.data.group_names == ["f", "m"]
    assert torch.equal(back.data.test.groups, study.data.test.groups)
    recipe = study.recipe(data={"factory": "x.y:z"})
    assert recipe.groups == {"names": ["f", "m"]} and torch.equal(
        recipe.group_labels["test"], study.data.test.given_groups)


def test_an_iterable_dataset_of_triples_gives_its_sample_groups(tmp_path):
    X, y, g = _split(300, 4)

    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            for i in range(len(y)):
                yield X[i], y[i], "north" if X[i, 0] > 0 else "south"

    study = xp.Study(_model(), train=Stream(), test=Stream(), eval_samples=40,
                     score_samples=30)
    test = study.data.test
    assert study.data.group_names == ["north", "south"] and len(test.groups) == 40
    assert torch.equal(test.groups, (test.X[:, 0] <= 0).long())   # aligned with the sample
    back = xp.Study.load(study.save(tmp_path / "i.xps"), model=_model(),
                         data=xp.data.bundle(Stream(), None, Stream()))
    assert back.data.group_names == ["north", "south"]
    with pytest.raises(DataError, match=r"items \(x, y, g\), but the data passed has no group"):
        xp.Study.load(tmp_path / "i.xps", model=_model(), data=xp.data.bundle(
            _Counting(50, 0, with_groups=False), None, _Counting(50, 1, with_groups=False)))


@pytest.mark.parametrize("group, error, match", [
    (lambda i: float("nan"), DataError, r"NaN group labels"),
    (lambda i: 0.5 * i, DataError, r"group labels must be integers, the train split has "
                                   "non-integer values"),
    (lambda i: -1, DataError, r"group labels must be >= 0"),
    (lambda i: [0, 1], DataError, r"each \(x, y, g\) item needs one group label"),
])
def test_bad_group_labels_in_streamed_items_are_refused(group, error, match):
    with pytest.raises(error, match=match):
        xp.Study(_model(), train=_Counting(200, 0, group=group), score_samples=20)


def test_items_with_and_without_groups_are_refused():
    class Mixed(_Counting):
        def __getitem__(self, i):
            item = super().__getitem__(i)
            return item if i % 2 else item[:2]

    with pytest.raises(DataError, match=r"train=...\): items could not be joined into a batch "
                                        r".*all \(x, y\) or all \(x, y, g\)"):
        xp.Study(_model(), train=Mixed(200, 0), score_samples=20)


@pytest.mark.parametrize("labels, names, error, match", [
    ([0.5, 1.0] * 20, None, DataError, r"groups=...\): group labels must be integers, the "
                                       "train split has non-integer values"),
    ([True, False] * 20, None, DataError, r"group labels must be integers 0..G-1 or strings; "
                                          "the train split has bool values"),
    (["a", None] * 20, None, DataError, r"the train split has missing \(None/NaN\) group"),
    ([0, 1] * 20, "ab", ConfigError, r"group_names=...\): expected a list of strings"),
    ([0, 1] * 20, ["a", "a"], ConfigError, r"group_names=...\): expected distinct names"),
    (torch.zeros(40, 2), None, DataError, r"group labels must be 1-D \(one per example\), got "
                                          r"shape \(40, 2\)"),
    ("sex", None, ConfigError, r"groups\['train'\]=...\): expected group labels, or the name "
                               "of a column of a pandas DataFrame input"),
])
def test_bad_group_labels_of_tensor_splits_are_refused(labels, names, error, match):
    X, y, _ = _split(40, 0)
    with pytest.raises(error, match=match):
        xp.Study(_model(), train=(X, y), groups={"train": labels}, group_names=names)


def test_a_group_missing_from_a_streamed_sample_is_named():
    from xprune_nb.data import StreamSplit

    drawn = set(StreamSplit(_Counting(400, 0), limit=10, seed=0).order()[:10].tolist())
    rare = min(set(range(400)) - drawn)        # one member, not among the drawn items
    ds = _Counting(400, 0, group=lambda i: int(i == rare))
    with pytest.raises(DataError, match=r"group\(s\) \['rare'\] have no examples in the "
                                        r"train split.*score_samples="):
        xp.Study(_model(), train=ds, score_samples=10, group_names=["common", "rare"])


def make_streams(n: int = 600):
    """A data factory of a recipe: the user's own datasets, items (x, y, g)."""
    return _Counting(n, 0), _Counting(n // 2, 1), _Counting(n // 2, 2)


def test_a_streamed_study_replays_with_its_groups_and_limit(tmp_path):
    import warnings

    study = xp.Study(_model(), xp.data.bundle(*make_streams()), eval_samples=50,
                     score_samples=30, group_names=NAMES)
    study.retrain(epochs=2, lr=0.05, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study.auto_prune(params=0.5, steps=2, max_group_drop=0.1, criterion="magnitude")
    recipe = study.recipe(data={"factory": "test_groups_flow:make_streams"})
    assert recipe.groups["names"] == NAMES and recipe.group_labels is None   # items bring them
    again = xp.Study.from_recipe(recipe.save(tmp_path / "s.yaml"), model=_model(),
                                 trust_source=True)
    assert again.data.streamed and again.data.group_names == NAMES
    assert again.step.per_group_accuracy == pytest.approx(study.step.per_group_accuracy)
    assert xp.recipe.groups.group_limit_report(again)[0]["held"]
