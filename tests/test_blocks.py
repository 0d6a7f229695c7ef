"""Whole-block removal: finding blocks, replacing them by identities, plans, block scores."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import xprune_nb.models.zoo as zoo
from xprune_nb.core.errors import PruneError
from xprune_nb.measure.metrics import count_macs
from xprune_nb.models.mechanisms.attention import find_heads, remove_heads
from xprune_nb.models.mechanisms.blocks import (
    SkippedBlock,
    block_gates,
    block_magnitude,
    find_blocks,
    remove_blocks,
    skip_drop,
)


def _call(model, x):
    return model(x)


def _params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def resnet():
    return zoo.load("digits_resnet")


@pytest.fixture(scope="module")
def vit():
    return zoo.load("digits_vit")


def test_resnet_blocks_and_reasons(resnet, digits):
    blocks, skipped = find_blocks(resnet, digits.train.X[:2], _call)
    assert [b.name for b in blocks] == ["layer1", "layer3"]
    assert skipped["layer2"] == "changes the shape: input (2, 16, 8, 8) -> output (2, 32, 4, 4)"
    assert "changes the shape" in skipped["stem"]
    assert blocks[0].params == sum(p.numel() for p in resnet.layer1.parameters())


def test_remove_blocks_replays_and_shrinks(resnet, digits):
    x = digits.train.X[:8]
    model, fresh = copy.deepcopy(resnet), copy.deepcopy(resnet)
    plan = remove_blocks(model, ["layer3"], x, _call)
    assert plan == ["layer3"] and isinstance(model.layer3, SkippedBlock)
    assert _params(model) == _params(resnet) - sum(p.numel() for p in resnet.layer3.parameters())
    assert count_macs(model, x[:1], _call) < count_macs(resnet, x[:1], _call)
    # skipping layer3 is the same as computing the model without it
    with torch.no_grad():
        h = resnet.layer2(resnet.layer1(resnet.stem(x)))
        expected = resnet.head(torch.flatten(resnet.pool(h), 1))
        assert torch.allclose(model(x), expected, atol=1e-6)
    remove_blocks(fresh, plan, x, _call)   # a recorded plan replays on a fresh copy
    assert {k: v.shape for k, v in fresh.state_dict().items()} == \
        {k: v.shape for k, v in model.state_dict().items()}


@pytest.mark.parametrize(("names", "match"), [
    (["layer2"], "cannot remove 'layer2': changes the shape"),
    (["nope"], "cannot remove 'nope': not a block"),
    ("layer1", "expected a list of block names"),
])
def test_bad_block_plans_change_nothing(resnet, digits, names, match):
    model = copy.deepcopy(resnet)
    with pytest.raises(PruneError, match=match):
        remove_blocks(model, names, digits.train.X[:2], _call)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 resnet.state_dict().values()))
    assert not any(isinstance(m, SkippedBlock) for m in model.modules())


def test_nested_names_refused():
    model = nn.Sequential(nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4)),
                          nn.Sequential(nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4)),
                                        nn.Linear(4, 4)))
    blocks, _ = find_blocks(model, torch.zeros(1, 4), _call)
    assert [b.name for b in blocks] == ["0", "1", "1.0"]
    with pytest.raises(PruneError, match="'1.0' lies inside another block"):
        remove_blocks(model, ["1", "1.0"], blocks=blocks)


def test_skip_drop_is_measured(resnet, digits):
    x, y = digits.test.X, digits.test.y
    blocks, _ = find_blocks(resnet, x[:2], _call)
    drops = skip_drop(resnet, blocks, x, y, _call, batch_size=50)
    assert all(isinstance(m, nn.Module) and not isinstance(m, SkippedBlock)
               for m in (resnet.layer1, resnet.layer3))   # restored
    trial = copy.deepcopy(resnet)
    remove_blocks(trial, ["layer1"], blocks=blocks)
    with torch.no_grad():
        base = (resnet(x).argmax(1) == y).float().mean().item()
        without = (trial(x).argmax(1) == y).float().mean().item()
    assert drops["layer1"] == pytest.approx(base - without)


def test_block_magnitude_by_hand(resnet, digits):
    blocks, _ = find_blocks(resnet, digits.train.X[:2], _call)
    flat = torch.cat([p.detach().flatten() for p in resnet.layer1.parameters()]).double()
    assert block_magnitude(resnet, blocks)["layer1"] == pytest.approx(
        flat.pow(2).mean().sqrt().item())


def test_block_gate_gradient_and_zero_gate(vit, digits):
    x, y = digits.train.X[:16], digits.train.y[:16]
    blocks, _ = find_blocks(vit, x[:2], _call)
    loss_fn = nn.functional.cross_entropy
    with block_gates(vit, blocks) as gates:
        loss_fn(vit(x), y).backward()
    vit.zero_grad(set_to_none=True)

    def loss_at(gate):
        with torch.no_grad(), block_gates(vit, blocks, values={"blocks.2": gate}):
            return loss_fn(vit(x), y).item()

    eps = 1e-3
    fd = (loss_at(1 + eps) - loss_at(1 - eps)) / (2 * eps)
    assert gates["blocks.2"].grad.item() == pytest.approx(fd, rel=1e-2, abs=1e-5)
    trial = copy.deepcopy(vit)
    remove_blocks(trial, ["blocks.2"], blocks=blocks)
    with torch.no_grad(), block_gates(vit, blocks, values={"blocks.2": 0.0}):
        gated = vit(x)
    with torch.no_grad():
        assert torch.allclose(trial(x), gated, atol=1e-5)


def test_digits_vit_heads_and_blocks(vit, digits):
    x = digits.train.X[:4]
    blocks, skipped = find_blocks(vit, x[:2], _call)
    assert [b.name for b in blocks] == [f"blocks.{i}" for i in range(4)]
    groups, why = find_heads(vit)
    assert [(g.name, g.kind, g.num_heads) for g in groups] == \
        [(f"blocks.{i}.attn", "sdpa", 4) for i in range(4)] and why == {}
    model = copy.deepcopy(vit)
    macs = count_macs(model, x[:1], _call)
    remove_heads(model, {f"blocks.{i}.attn": [0, 1] for i in range(4)})
    after_heads = count_macs(model, x[:1], _call)
    remove_blocks(model, ["blocks.1", "blocks.3"], x[:2], _call)
    after_blocks = count_macs(model, x[:1], _call)
    assert macs > after_heads > after_blocks
    assert model(x).shape == (4, 10)
    # heads of a removed block are gone with it
    assert [g.name for g in find_heads(model)[0]] == ["blocks.0.attn", "blocks.2.attn"]


class TupleLayer(nn.Module):
    """A Hugging Face-style layer of old: reads hidden_states by keyword, returns a tuple."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(6, 6), nn.Linear(6, 6)

    def forward(self, hidden_states, attention_mask=None):
        return (hidden_states + self.fc2(self.fc1(hidden_states)), None)


class TupleModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.ModuleList([TupleLayer(), TupleLayer()])
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        for layer in self.layer:
            x = layer(hidden_states=x)[0]
        return self.head(x)


def test_tuple_and_keyword_conventions():
    model = TupleModel()
    x = torch.randn(3, 6)
    blocks, _ = find_blocks(model, x, _call)
    assert [(b.name, b.input_key, b.returns) for b in blocks] == \
        [("layer.0", "hidden_states", 2), ("layer.1", "hidden_states", 2)]
    remove_blocks(model, ["layer.1"], blocks=blocks)
    with torch.no_grad():
        expected = model.head(model.layer[0](hidden_states=x)[0])
        assert torch.allclose(model(x), expected)


def test_transformer_encoder_layers():
    encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 4, 32, batch_first=True), 3,
                                    enable_nested_tensor=False).eval()
    x = torch.randn(2, 5, 16)
    blocks, _ = find_blocks(encoder, x, _call)
    assert [b.name for b in blocks] == ["layers.0", "layers.1", "layers.2"]
    middle = copy.deepcopy(encoder.layers[1])
    drops = skip_drop(encoder, blocks, x, torch.zeros(2, dtype=torch.long),
                      lambda m, t: m(t)[:, 0])
    assert set(drops) == {"layers.0", "layers.1", "layers.2"}
    with pytest.raises(PruneError, match="every layer of 'layers'"):
        remove_blocks(encoder, ["layers.0", "layers.1", "layers.2"], blocks=blocks)
    assert len(encoder.layers) == 3
    # nn.TransformerEncoder reads layers[0].self_attn in every forward: its layers are deleted
    assert remove_blocks(encoder, ["layers.0", "layers.2"], blocks=blocks) == \
        ["layers.0", "layers.2"]
    assert len(encoder.layers) == 1 and encoder.num_layers == 1
    with torch.no_grad():
        assert torch.allclose(encoder(x), middle(x), atol=1e-6)


@pytest.mark.parametrize("arch", ["vit", "bert"])
def test_hugging_face_layer_lists(arch):
    hf = pytest.importorskip("transformers")
    torch.manual_seed(0)
    if arch == "vit":
        config = hf.ViTConfig(image_size=32, patch_size=8, hidden_size=48, num_hidden_layers=4,
                              num_attention_heads=6, intermediate_size=96, num_labels=10)
        model, x = hf.ViTForImageClassification(config).eval(), torch.randn(2, 3, 32, 32)
        layers = [f"vit.layers.{i}" for i in range(4)]
    else:
        config = hf.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2,
                               num_attention_heads=4, intermediate_size=64, num_labels=3)
        model, x = hf.BertForSequenceClassification(config).eval(), torch.randint(0, 50, (2, 7))
        layers = ["bert.encoder.layer.0", "bert.encoder.layer.1"]

    def forward(m, t):
        return m(t).logits

    blocks, skipped = find_blocks(model, x, forward)
    assert [b.name for b in blocks] == layers
    assert "changes the shape" in skipped[arch]
    params = _params(model)
    remove_blocks(model, layers[1::2], blocks=blocks)
    assert _params(model) < params
    assert forward(model, x).shape[0] == 2
