"""Tests of xprune_nb.data.public: shapes, determinism, stratification, disjoint splits,
validation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from xprune_nb.core.errors import ConfigError
from xprune_nb.data import public as datasets

torch.set_num_threads(1)

SMALL = {"moons": {"n_samples": 200}, "circles": {"n_samples": 200}, "spiral": {"n_samples": 300}}
EXPECTED = {
    # name: (kind, input_shape, num_classes, total examples)
    "digits": ("image", (1, 8, 8), 10, 1797),
    "breast_cancer": ("tabular", (30,), 2, 569),
    "wine": ("tabular", (13,), 3, 178),
    "moons": ("toy", (2,), 2, 200),
    "circles": ("toy", (2,), 2, 200),
    "spiral": ("toy", (2,), 3, 300),
    "digits_boxes": ("image", (1, 24, 24), 10, 2000),
}


def _load(name: str, seed: int = 0, **options) -> datasets.DataBundle:
    return datasets.load(name, seed=seed, **{**SMALL.get(name, {}), **options})


def test_available_lists_every_dataset():
    assert datasets.available() == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_shapes_dtypes_and_metadata(name):
    kind, shape, num_classes, total = EXPECTED[name]
    data = _load(name)
    assert (data.name, data.kind, data.input_shape, data.num_classes) == (
        name,
        kind,
        shape,
        num_classes,
    )
    assert len(data.class_names) == num_classes
    assert sum(len(s) for s in data.splits().values()) == total
    for split in data.splits().values():
        assert split.X.dtype == torch.float32 and split.y.dtype == torch.int64
        assert split.X.shape == (len(split), *shape)
        assert split.y.shape == (len(split),)
        assert set(split.y.tolist()) == set(range(num_classes))
        assert torch.isfinite(split.X).all()
    if kind == "image":
        assert data.feature_names is None
    else:
        assert len(data.feature_names) == shape[0]


def test_digits_pixels_in_unit_range_and_class_names():
    data = datasets.load("digits")
    X = torch.cat([s.X for s in data.splits().values()])
    assert X.min().item() == 0.0 and X.max().item() == 1.0
    assert data.class_names == [str(i) for i in range(10)]
    assert data.mean is None and data.std is None


@pytest.mark.parametrize("name", ["breast_cancer", "wine"])
def test_tabular_standardised_with_train_statistics(name):
    data = datasets.load(name)
    assert torch.allclose(data.train.X.mean(0), torch.zeros(data.input_shape), atol=1e-5)
    train_std = data.train.X.std(0, unbiased=False)
    assert torch.allclose(train_std, torch.ones(data.input_shape), atol=1e-4)
    # val/test use the train statistics, so they are not exactly centred
    assert not torch.allclose(data.test.X.mean(0), torch.zeros(data.input_shape), atol=1e-5)
    raw = datasets.load(name, standardize=False)
    assert raw.mean is None
    assert torch.allclose(data.denormalize(data.test.X), raw.test.X, atol=1e-4)


def test_sklearn_feature_and_class_names():
    data = datasets.load("breast_cancer")
    assert data.feature_names[0] == "mean radius"
    assert data.class_names == ["malignant", "benign"]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_same_seed_same_tensors_bit_for_bit(name):
    a, b = _load(name, seed=3), _load(name, seed=3)
    for part in ("train", "val", "test"):
        assert torch.equal(a.split(part).X, b.split(part).X)
        assert torch.equal(a.split(part).y, b.split(part).y)
        assert torch.equal(a.split(part).index, b.split(part).index)


@pytest.mark.parametrize("name", ["digits", "moons", "spiral"])
def test_other_seed_other_split(name):
    a, b = _load(name, seed=0), _load(name, seed=1)
    assert not torch.equal(a.test.index, b.test.index)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_splits_are_disjoint_and_cover_everything(name):
    data = _load(name)
    indices = [s.index.tolist() for s in data.splits().values()]
    flat = [i for part in indices for i in part]
    assert len(flat) == len(set(flat)) == EXPECTED[name][3]
    assert set(flat) == set(range(EXPECTED[name][3]))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_splits_are_stratified_60_20_20(name):
    data = _load(name)
    counts = {part: np.array(s.class_counts(data.num_classes)) for part, s in data.splits().items()}
    total = sum(counts.values())
    for part, fraction in (("train", 0.6), ("val", 0.2), ("test", 0.2)):
        # per-class rounding moves at most one example per class and split
        assert np.all(np.abs(counts[part] - fraction * total) <= 1.0), (part, counts[part], total)


def test_split_sizes_follow_options():
    data = datasets.load("moons", n_samples=1000, val_size=0.1, test_size=0.3)
    assert (len(data.train), len(data.val), len(data.test)) == (600, 100, 300)


def test_splits_are_shuffled_across_classes():
    # a class-sorted split would feed single-class batches to a loader that does not shuffle
    y = datasets.load("digits").train.y[:50]
    assert len(set(y.tolist())) > 5


def test_source_rebuilds_the_bundle_and_is_json_serialisable():
    data = datasets.load("spiral", seed=5, n_classes=4, noise=np.float64(0.1))
    assert data.source == {
        "name": "spiral",
        "seed": 5,
        "val_size": 0.2,
        "test_size": 0.2,
        "n_samples": 1000,
        "noise": 0.1,
        "n_classes": 4,
    }
    source = json.loads(json.dumps(data.source))
    again = datasets.load(**source)
    assert torch.equal(again.train.X, data.train.X)
    assert again.num_classes == 4


def test_generated_options_change_the_data():
    quiet = datasets.load("moons", noise=0.0)
    noisy = datasets.load("moons", noise=0.5)
    assert not torch.equal(quiet.train.X, noisy.train.X)
    assert len(datasets.load("circles", n_samples=500).train) == 300
    spiral = datasets.load("spiral", n_classes=5, n_samples=500)
    assert spiral.class_names == [f"arm {k}" for k in range(5)]
    assert spiral.train.class_counts() == [60] * 5


def test_spiral_arms_are_separable_without_noise():
    # with no jitter each arm is a clean curve: nearest neighbours of test points share the label
    data = datasets.load("spiral", noise=0.0)
    distances = torch.cdist(data.test.X, data.train.X)
    nearest = data.train.y[distances.argmin(dim=1)]
    assert (nearest == data.test.y).float().mean().item() > 0.97


def test_split_by_name_and_errors():
    data = _load("moons")
    assert data.split("val") is data.val
    with pytest.raises(
        ConfigError,
        match=r"DataBundle.split\(name=...\): unknown name 'dev'; "
        r"valid names are 'test', 'train', 'val'",
    ):
        data.split("dev")


def test_loader_is_seeded_and_batches_everything():
    split = _load("moons").train
    order1 = torch.cat([yb for _, yb in split.loader(batch_size=32, shuffle=True, seed=1)])
    order2 = torch.cat([yb for _, yb in split.loader(batch_size=32, shuffle=True, seed=1)])
    assert torch.equal(order1, order2)
    assert sorted(order1.tolist()) == sorted(split.y.tolist())


def test_repr_and_summary():
    data = _load("moons")
    assert repr(data) == (
        "DataBundle('moons', kind='toy', input_shape=(2,), num_classes=2, "
        "train=120, val=40, test=40)"
    )
    summary = data.summary()
    assert summary.loc["total"].tolist() == [120, 40, 40]
    assert summary.loc["upper moon", "test"] == 20
    html = data._repr_html_()
    assert "<table" in html and "moons" in html and "n_samples=200" in html


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(
        ConfigError,
        match=r"datasets.load\(name=...\): unknown name 'mnist'; "
        r"valid names are 'breast_cancer', 'circles', 'digits', 'digits_boxes', 'moons', "
        r"'spiral', 'wine'\.",
    ):
        datasets.load("mnist")


def test_unknown_option_lists_allowed_options():
    with pytest.raises(
        ConfigError,
        match=r"datasets.load\(noise=...\): dataset 'digits' has no "
        r"option 'noise'; its options are 'val_size', 'test_size'\.",
    ):
        datasets.load("digits", noise=0.1)
    with pytest.raises(
        ConfigError,
        match=r"its options are 'val_size', 'test_size', "
        r"'n_samples', 'noise', 'n_classes'",
    ):
        datasets.load("spiral", factor=0.3)


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        (
            "moons",
            {"n_samples": 10},
            r"n_samples=...\): expected an integer in \[30, 1000000\], "
            r"got 10\.",
        ),
        ("moons", {"n_samples": 100.0}, r"n_samples=...\): expected an integer .* got 100\.0\."),
        ("moons", {"n_samples": True}, r"n_samples=...\): expected an integer .* got True\."),
        ("moons", {"noise": -0.1}, r"noise=...\): expected a number in \[0, 10\], got -0\.1\."),
        ("circles", {"noise": float("nan")}, r"noise=...\): expected a number in \[0, 10\]"),
        ("circles", {"factor": 1.0}, r"factor=...\): expected a fraction in \(0, 1\), got 1\.0"),
        ("spiral", {"n_classes": 1}, r"n_classes=...\): expected an integer in \[2, 10\], got 1"),
        ("wine", {"standardize": "yes"}, r"standardize=...\): expected True or False, got 'yes'"),
        ("digits", {"test_size": 0}, r"test_size=...\): expected a fraction in \(0, 1\), got 0\."),
        (
            "digits",
            {"val_size": 0.5, "test_size": 0.5},
            r"val_size=...\): expected val_size \+ test_size < 1 \(test_size=0\.5\), got 0\.5\.",
        ),
    ],
)
def test_bad_option_values_name_the_option(name, options, message):
    with pytest.raises(ConfigError, match=r"datasets.load\(" + message):
        datasets.load(name, **options)


@pytest.mark.parametrize("seed", [-1, 1.5, "0", 2**32])
def test_bad_seed(seed):
    with pytest.raises(
        ConfigError,
        match=r"datasets.load\(seed=...\): expected an integer in "
        r"\[0, 2\*\*32\), got",
    ):
        datasets.load("moons", seed=seed)


def test_bundles_do_not_share_memory():
    # the raw sklearn arrays are cached: editing one bundle must not leak into the next load
    a = datasets.load("digits")
    a.train.X.add_(1.0)
    b = datasets.load("digits")
    assert b.train.X.max().item() == 1.0
