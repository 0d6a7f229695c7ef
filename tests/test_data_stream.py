"""A user's Dataset / DataLoader / endless iterable kept as given (xprune_nb/data/stream.py):
only sampled items are read, retraining iterates the user's loader with its transforms, an
endless stream is always bounded, samples are deterministic under the seed."""

import itertools

import pytest
import torch
from conftest import TinyMLP
from torch.utils.data import DataLoader, Dataset, IterableDataset

import xprune_nb as xp
from xprune_nb.core.errors import ConfigError, StudyFileError
from xprune_nb.data import StreamSplit, draw
from xprune_nb.data.stream import SHUFFLE_BUFFER


def _item(i: int, features: int = 8):
    g = torch.Generator().manual_seed(i)
    y = i % 4
    x = torch.randn(features, generator=g) * 0.3
    x[y] += 2.0                     # learnable: the class shows in one feature
    return x, y


class Counting(Dataset):
    """A big map-style dataset that records every index read (optionally with its labels
    exposed as ``targets`` and a transform, like torchvision datasets)."""

    def __init__(self, n: int, targets: bool = False, transform=None):
        self.n, self.reads, self.transform = n, [], transform
        if targets:
            self.targets = [i % 4 for i in range(n)]

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        self.reads.append(int(i))
        x, y = _item(int(i))
        return (self.transform(x) if self.transform else x), y


class Endless(IterableDataset):
    """An endless stream of examples; counts what was taken from it."""

    def __init__(self):
        self.taken = 0

    def __iter__(self):
        for i in itertools.count():
            self.taken += 1
            yield _item(i)


class Noise:
    """An augmentation transform that counts its calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, x):
        self.calls += 1
        return x + 0.01 * torch.randn_like(x)


def _model():
    torch.manual_seed(0)
    return TinyMLP(n_in=8, num_classes=4)


def test_only_sampled_items_are_read_from_a_large_dataset():
    train, test = Counting(20_000), Counting(10_000)
    study = xp.Study(_model(), train=train, test=test, eval_samples=100, score_samples=64,
                     probe_size=16, seed=0)
    study.score("taylor")
    study.score("activation", samples=40)
    # test: the probe and the evaluation sample are prefixes of one seeded order
    assert len(set(test.reads)) == 100 and len(test.reads) <= 116
    assert set(test.reads) == set(study.data.test.order()[:100].tolist())
    # train: the example of the model check and the reference sets, never the whole data
    assert len(set(train.reads)) <= 64
    assert isinstance(study.data.train, StreamSplit) and study.data.train.size == 20_000
    assert len(study.data.test) == 100 and study.history[0].metrics["accuracy"] >= 0


def test_known_labels_stratify_without_reading_them():
    data = Counting(1000, targets=True)
    split = StreamSplit(data, limit=40, seed=3)
    _, y = split.sample(12)
    assert torch.bincount(y, minlength=4).tolist() == [3, 3, 3, 3]
    assert len(data.reads) == 12                      # the labels came from .targets
    _, y = split.sample(6, classes=[1, 2])
    assert sorted(set(y.tolist())) == [1, 2] and len(y) == 6


def test_classes_without_known_labels_read_a_bounded_number():
    data = Counting(10_000)
    x, y = StreamSplit(data, limit=50, seed=0).sample(10, classes=[2])
    assert y.tolist() == [2] * 10 and x.shape == (10, 8)
    assert len(data.reads) <= 10 * 20   # never a scan of the whole dataset


def test_retrain_iterates_the_users_loader_and_its_transforms():
    noise = Noise()
    loader = DataLoader(Counting(96, transform=noise), batch_size=16, shuffle=True)
    study = xp.Study(_model(), train=loader, test=Counting(64), seed=0)
    before = noise.calls
    step = study.retrain(epochs=2, progress=False)
    # every item, every epoch, augmented (plus the one example the step's MACs count reads)
    assert 2 * 96 <= noise.calls - before <= 2 * 96 + 2
    assert study.last_train_result.batches_done == 2 * 6 and "12 batches" in step.note
    # a Dataset (not a loader) is wrapped in a seeded DataLoader: its transform applies too
    plain = xp.Study(_model(), train=Counting(40, transform=noise), test=Counting(32), seed=0)
    before = noise.calls
    plain.retrain(epochs=1, batch_size=8, progress=False)
    assert 40 <= noise.calls - before <= 42


def test_an_endless_iterable_is_bounded_everywhere():
    train, test = Endless(), Endless()
    study = xp.Study(_model(), train=train, test=test, eval_samples=50, score_samples=32,
                     probe_size=8, seed=0)
    study.score("taylor")
    assert test.taken <= 3 * (50 + SHUFFLE_BUFFER) and train.taken <= 3 * (32 + SHUFFLE_BUFFER)
    with pytest.raises(ConfigError, match=r"Study.retrain\(steps_per_epoch=...\): expected a "
                                          r"number of batches per epoch .* has no length"):
        study.retrain(epochs=1, progress=False)
    assert len(study.history) == 1                   # refused before anything changed
    taken = train.taken
    study.retrain(epochs=2, steps_per_epoch=3, batch_size=4, progress=False)
    assert study.last_train_result.batches_done == 6
    assert train.taken - taken <= 2 * 3 * 4 + 2 * 4   # the batches asked for (plus prefetch)
    assert study.step.config["steps_per_epoch"] == 3
    with pytest.raises(ConfigError, match=r"Study\(test=...\): expected data with a length"):
        xp.Study(_model(), train=Counting(40), test=Endless(), eval_samples="all")


def test_samples_are_deterministic_under_the_seed():
    def probe(seed):
        study = xp.Study(_model(), train=Counting(5000), test=Counting(3000),
                         eval_samples=64, score_samples=32, seed=seed)
        scores = study.score("taylor")
        return study.probe_x, scores.values

    (pa, sa), (pb, sb), (pc, _) = probe(0), probe(0), probe(1)
    assert torch.equal(pa, pb) and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(pa, pc)
    # an iterable: the same seed, the same shuffle-buffer sample
    a, b = StreamSplit(Endless(), limit=20, seed=5), StreamSplit(Endless(), limit=20, seed=5)
    assert torch.equal(a.y, b.y) and torch.equal(a.sample(7)[0], a.X[:7])


def test_tensors_keep_todays_behaviour_and_eval_samples_bounds_them(digits):
    model = TinyMLP()
    whole = xp.Study(model, digits, seed=0)
    assert whole.data.test is not None and len(whole.data.test) == len(digits.test)
    cut = xp.Study(model, digits, seed=0, eval_samples=50)
    assert len(cut.data.test) == 50 and len(cut.data.train) == len(digits.train)
    assert torch.bincount(cut.data.test.y).min() >= 4        # stratified
    x, y = draw(digits.train, 30, seed=0)
    again = draw(digits.train, 30, seed=0)
    assert torch.equal(x, again[0]) and len(y) == 30
    with pytest.raises(ConfigError, match=r"Study\(eval_samples=...\): expected a positive "
                                          r"integer, or 'all'"):
        xp.Study(model, digits, eval_samples=0)
    with pytest.raises(ConfigError, match=r"Study\(score_samples=...\): expected a positive "
                                          r"integer"):
        xp.Study(model, digits, score_samples="auto")
    with pytest.raises(ConfigError, match=r"Study\(train=...\): expected a DataLoader, a "
                                          r"Dataset or another re-iterable source"):
        xp.Study(model, train=(_item(i) for i in range(10)))


def test_dict_batches_flow_through_sampling():
    class Tokens(Dataset):
        def __len__(self):
            return 200

        def __getitem__(self, i):
            n = 3 + i % 5
            return {"input_ids": torch.arange(1, n + 1), "labels": i % 2}

    def pad(items):
        width = max(len(it["input_ids"]) for it in items)
        ids = torch.zeros(len(items), width, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, it in enumerate(items):
            ids[r, :len(it["input_ids"])] = it["input_ids"]
            mask[r, :len(it["input_ids"])] = 1
        return {"input_ids": ids, "attention_mask": mask,
                "labels": torch.tensor([it["labels"] for it in items])}

    split = StreamSplit(DataLoader(Tokens(), batch_size=8, collate_fn=pad), limit=100, seed=0)
    x, y = split.sample(100)        # read in chunks, each padded to its own longest row
    assert set(x) == {"input_ids", "attention_mask"} and x["input_ids"].shape == (100, 7)
    assert torch.equal(x["attention_mask"].sum(1), (x["input_ids"] > 0).sum(1))
    assert len(y) == 100 and set(y.tolist()) == {0, 1}


def test_a_saved_study_records_the_data_not_a_copy(tmp_path):
    train, test = Counting(3000), Counting(2000)
    study = xp.Study(_model(), train=train, test=test, eval_samples=40, seed=2)
    path = study.save(tmp_path / "s.xprune")
    assert path.stat().st_size < 200_000         # no copy of 5,000 examples
    with pytest.raises(StudyFileError, match=r"Study.load\(data=...\): the study's data was "
                                             r"your own loader or dataset \(train: Counting "
                                             r"\(3000 examples\)"):
        xp.Study.load(path, model=_model())
    again = xp.Study.load(path, model=_model(),
                          data=xp.data.bundle(train, None, test))
    assert len(again.data.test) == 40 and torch.equal(again.probe_x, study.probe_x)
    assert torch.equal(again.data.test.y, study.data.test.y)
    with pytest.raises(ConfigError, match=r"Study.recipe\(data=...\): expected a data source "
                                          r"a recipe can name"):
        study.recipe(model={"kwargs": {"n_in": 8, "num_classes": 4}})


def test_script_help_says_where_the_data_comes_from(tmp_path, capsys):
    import importlib.util

    study = xp.Study(xp.zoo.load("toy_mlp"), xp.datasets.load("moons", n_samples=100), seed=0)
    path = study.export_script(tmp_path / "prune_moons.py")
    spec = importlib.util.spec_from_file_location("prune_moons", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    with pytest.raises(SystemExit):
        script.main(["--help"])
    assert "Data: the bundled dataset 'moons', rebuilt by name" in capsys.readouterr().out


def test_a_study_on_a_padded_token_loader_retrains_scores_and_prunes():
    from torch import nn

    class Tokens(Dataset):
        def __len__(self):
            return 120

        def __getitem__(self, i):
            ids = torch.full((3 + i % 5,), 5 + i % 2)
            return {"input_ids": ids, "labels": i % 2}

    def pad(items):   # what a tokenizer's padding collator does
        width = max(len(it["input_ids"]) for it in items)
        ids = torch.zeros(len(items), width, dtype=torch.long)
        for r, it in enumerate(items):
            ids[r, :len(it["input_ids"])] = it["input_ids"]
        return {"input_ids": ids, "attention_mask": (ids > 0).long(),
                "labels": torch.tensor([it["labels"] for it in items])}

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.fc = nn.Embedding(10, 8), nn.Linear(8, 8)
            self.act, self.head = nn.ReLU(), nn.Linear(8, 2)

        def forward(self, input_ids, attention_mask):
            m = attention_mask.unsqueeze(-1).float()
            return self.head(self.act(self.fc((self.emb(input_ids) * m).sum(1) / m.sum(1))))

    torch.manual_seed(0)
    train = DataLoader(Tokens(), batch_size=16, shuffle=True, collate_fn=pad)
    study = xp.Study(Net(), train=train, test=DataLoader(Tokens(), batch_size=16,
                                                         collate_fn=pad), seed=0)
    assert set(study.probe_x) == {"input_ids", "attention_mask"}
    study.retrain(epochs=2, progress=False)
    assert study.last_train_result.batches_done == 2 * 8
    study.score("taylor", granularity="weight", samples=32)
    step = study.prune(0.25)
    assert step.metrics["accuracy"] >= 0.9
    assert step.metrics["nonzero_params"] < study.history[0].metrics["nonzero_params"]
