"""Tests of xprune_nb.models.zoo and xprune_nb.models: shipped weights, recorded accuracy,
structure."""

from __future__ import annotations

import importlib
import json

import pytest
import torch
from torch import nn

from xprune_nb import models
from xprune_nb.core.errors import ConfigError, StudyFileError
from xprune_nb.data import public as datasets
from xprune_nb.models import zoo

torch.set_num_threads(1)

NAMES = [
    "boxes_vit",
    "digits_cnn",
    "digits_concat",
    "digits_lstm",
    "digits_resnet",
    "digits_transformer",
    "digits_vit",
    "tabular_mlp",
    "toy_mlp",
]
# The accuracy each shipped model must keep (the task's targets, below the recorded values).
MIN_ACCURACY = {
    "digits_cnn": 0.95,
    "digits_concat": 0.95,
    "digits_resnet": 0.95,
    "digits_transformer": 0.90,
    "digits_vit": 0.95,
    "boxes_vit": 0.85,
    "digits_lstm": 0.93,
    "tabular_mlp": 0.95,
    "toy_mlp": 0.95,
}


def _accuracy(model: nn.Module, split: datasets.Split) -> float:
    with torch.no_grad():
        return (model(split.X).argmax(dim=1) == split.y).float().mean().item()


def _data(name: str) -> datasets.DataBundle:
    meta = zoo.info(name)
    return datasets.load(meta["dataset"], **meta["dataset_options"])


def test_available():
    assert zoo.available() == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_pretrained_accuracy_matches_info(name):
    model = zoo.load(name)
    assert not model.training
    meta = zoo.info(name)
    accuracy = _accuracy(model, _data(name).test)
    assert accuracy == pytest.approx(meta["test_accuracy"], abs=1e-6)
    assert accuracy >= MIN_ACCURACY[name]


@pytest.mark.parametrize("name", NAMES)
def test_info_describes_the_model(name):
    meta = zoo.info(name)
    model = zoo.load(name)
    assert meta["name"] == name
    assert meta["params"] == sum(p.numel() for p in model.parameters())
    assert meta["description"]
    assert 0.0 <= meta["val_accuracy"] <= 1.0
    assert meta["training"]["seed"] == 0
    # architecture + kwargs are enough to rebuild the model and load its weights
    module_name, _, class_name = meta["architecture"].rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name)
    rebuilt = cls(**meta["kwargs"])
    rebuilt.load_state_dict(torch.load(zoo.weights_path(name), weights_only=True))
    assert isinstance(rebuilt, type(model))


@pytest.mark.parametrize("name", NAMES)
def test_pretrained_false_is_fresh_and_seeded(name):
    trained = zoo.load(name).state_dict()
    fresh = zoo.load(name, pretrained=False).state_dict()
    again = zoo.load(name, pretrained=False).state_dict()
    other = zoo.load(name, pretrained=False, seed=1).state_dict()
    weights = [k for k, v in trained.items() if v.is_floating_point() and "running" not in k]
    assert any(not torch.equal(trained[k], fresh[k]) for k in weights)
    assert all(torch.equal(fresh[k], again[k]) for k in fresh)
    assert any(not torch.equal(fresh[k], other[k]) for k in weights)


def test_fresh_init_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    zoo.load("toy_mlp", pretrained=False)
    zoo.info("toy_mlp")
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("name", NAMES)
def test_weights_are_small_plain_state_dicts(name):
    path = zoo.weights_path(name)
    assert path.stat().st_size < 1_000_000
    state = torch.load(path, weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert set(state) == set(zoo.load(name, pretrained=False).state_dict())


def test_accuracy_json_covers_every_model():
    records = json.loads((zoo.WEIGHTS_DIR / "accuracy.json").read_text())
    assert sorted(records) == NAMES


# a recurrent model has no ReLU modules: its gates are the LSTM's own (tanh / sigmoid)
@pytest.mark.parametrize("name", [n for n in NAMES if n != "digits_lstm"])
def test_structure_suits_explainers(name):
    model = zoo.load(name)
    # each ReLU is its own module, used once: shap's DeepExplainer and captum's LRP need that
    relus = [m for _, m in model.named_modules(remove_duplicate=False) if isinstance(m, nn.ReLU)]
    assert len(relus) == len({id(m) for m in relus}) > 0
    # captum's LRP has no rule for nn.Flatten or nn.Identity
    assert not any(isinstance(m, (nn.Flatten, nn.Identity)) for m in model.modules())
    assert isinstance(model.head, nn.Linear)
    data = _data(name)
    assert model.head.out_features == data.num_classes
    with torch.no_grad():
        assert model(data.test.X[:3]).shape == (3, data.num_classes)


def test_relu_calls_match_relu_modules():
    # a module called twice in one forward (or an F.relu) would break DeepExplainer's hooks
    model = zoo.load("digits_resnet")
    calls: list[nn.Module] = []
    handles = [
        m.register_forward_hook(lambda mod, i, o: calls.append(mod))
        for m in model.modules()
        if isinstance(m, nn.ReLU)
    ]
    with torch.no_grad():
        model(torch.zeros(1, 1, 8, 8))
    for handle in handles:
        handle.remove()
    assert len(calls) == len({id(m) for m in calls}) == 7


def test_architectures_have_the_documented_parts():
    resnet = models.DigitsResNet()
    assert resnet.layer1.shortcut is None and resnet.layer3.shortcut is None
    assert resnet.layer2.shortcut[0].kernel_size == (1, 1)
    concat = models.DigitsConcat()
    assert concat.depthwise[0].groups == concat.depthwise[0].in_channels == 16
    transformer = models.DigitsTransformer()
    attn = transformer.blocks[0].attn
    assert (attn.embed_dim, attn.num_heads, attn.batch_first) == (32, 4, True)
    assert len(transformer.blocks) == 2
    mlp = models.TabularMLP()
    assert [m.out_features for m in mlp.modules() if isinstance(m, nn.Linear)] == [64, 32, 2]
    toy = models.ToyMLP()
    assert [m.out_features for m in toy.modules() if isinstance(m, nn.Linear)] == [64, 64, 2]


def test_unknown_name_lists_valid_names():
    message = (
        r"zoo.load\(name=...\): unknown name 'resnet50'; valid names are 'boxes_vit', "
        r"'digits_cnn', "
        r"'digits_concat', 'digits_lstm', 'digits_resnet', 'digits_transformer', 'digits_vit', "
        r"'tabular_mlp', 'toy_mlp'\."
    )
    with pytest.raises(ConfigError, match=message):
        zoo.load("resnet50")
    with pytest.raises(ConfigError, match=r"zoo.info\(name=...\): unknown name 'resnet50'"):
        zoo.info("resnet50")


def test_bad_arguments():
    with pytest.raises(
        ConfigError,
        match=r"zoo.load\(pretrained=...\): expected True or False, "
        r"got 'yes'\.",
    ):
        zoo.load("toy_mlp", pretrained="yes")
    with pytest.raises(
        ConfigError,
        match=r"zoo.build\(seed=...\): expected a non-negative "
        r"integer, got -1\.",
    ):
        zoo.load("toy_mlp", pretrained=False, seed=-1)


def test_missing_or_broken_weights_say_how_to_retrain(tmp_path, monkeypatch):
    monkeypatch.setattr(zoo, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(
        StudyFileError,
        match=r"zoo.load\(name='toy_mlp'\): weights file .* is "
        r"missing; recreate it with: python scripts/train_zoo.py --only toy_mlp",
    ):
        zoo.load("toy_mlp")
    torch.save({"wrong": torch.zeros(1)}, tmp_path / "toy_mlp.pt")
    with pytest.raises(StudyFileError, match=r"does not fit ToyMLP .*python scripts/train_zoo.py"):
        zoo.load("toy_mlp")


@pytest.mark.slow
def test_lrp_runs_on_convolutional_zoo_models():
    captum_attr = pytest.importorskip("captum.attr")
    for name in ["digits_cnn", "digits_resnet", "digits_concat", "tabular_mlp"]:
        model = zoo.load(name)
        x = _data(name).test.X[:2].clone().requires_grad_()
        attribution = captum_attr.LRP(model).attribute(x, target=0)
        assert attribution.shape == x.shape and torch.isfinite(attribution).all()
