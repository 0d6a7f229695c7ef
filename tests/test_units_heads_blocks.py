"""The head (real removal or masks) and block unit kinds, driven directly through ModelEnv."""

from __future__ import annotations

import copy

import pytest
import torch

import xprune_nb.models.zoo as zoo
from xprune_nb.core.errors import ConfigError, PruneError
from xprune_nb.measure.metrics import count_macs
from xprune_nb.models.mechanisms.attention import SDPAttention
from xprune_nb.models.mechanisms.blocks import SkippedBlock
from xprune_nb.pruning import units
from xprune_nb.pruning.units.head import HeadUnits


def _forward(model, x):
    return model(x)


def _env(model, digits):
    return units.ModelEnv.of(copy.deepcopy(model), digits.train.X[:2], _forward, 10)


def test_registry_has_block_and_head():
    assert {"head", "block"} <= set(units.available())
    assert units.get("block", "t").structural and HeadUnits(mode="remove").speeds_up
    with pytest.raises(ConfigError, match="mode"):
        HeadUnits(mode="fast")
    masked = HeadUnits(mode="mask")
    assert not masked.structural and not masked.speeds_up


def test_head_kind_removes_for_real_and_replays(digits):
    model = zoo.load("digits_transformer")
    env = _env(model, digits)
    kind = HeadUnits(mode="remove")
    found = kind.find(model, env)
    assert list(found.groups) == ["blocks.0.attn", "blocks.1.attn"]
    assert found.sizes == {"blocks.0.attn": 4, "blocks.1.attn": 4}
    x = digits.train.X[:1]
    macs = count_macs(model, x, _forward)
    with pytest.raises(PruneError, match="remove every unit of 'blocks.0.attn'"):
        kind.check(found, {"blocks.0.attn": torch.arange(4)}, "Study.prune")
    plan = kind.apply(model, found, {"blocks.0.attn": torch.tensor([3, 1])}, env)
    assert plan == {"blocks.0.attn": [1, 3]}
    assert isinstance(model.blocks[0].attn, SDPAttention) and model.blocks[0].attn.num_heads == 2
    assert count_macs(model, x, _forward) < macs
    assert kind.alive(model, kind.find(model, env)) is None
    fresh = zoo.load("digits_transformer")
    kind.replay(fresh, plan, x)
    assert {k: v.shape for k, v in fresh.state_dict().items()} == \
        {k: v.shape for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", ["digits_transformer", "digits_vit"])
def test_head_kind_masks_without_speedup(digits, name):
    model = zoo.load(name)
    env = _env(model, digits)
    kind = HeadUnits(mode="mask")
    found = kind.find(model, env)
    first = next(iter(found.groups))
    x = digits.test.X[:16]
    macs = count_macs(model, x[:1], _forward)
    assert kind.apply(model, found, {first: torch.tensor([0, 2])}, env) is None
    alive = kind.alive(model, found)
    assert alive[first].tolist() == [False, True, False, True]
    assert count_macs(model, x[:1], _forward) == macs   # masks: dense MACs
    removed = zoo.load(name)
    real = HeadUnits(mode="remove")
    real.apply(removed, real.find(removed, env), {first: torch.tensor([0, 2])}, env)
    with torch.no_grad():   # the masked heads contribute exactly what removed heads do
        assert torch.allclose(model(x), removed(x), atol=1e-5)


def test_block_kind(digits):
    model = zoo.load("digits_resnet")
    env = _env(model, digits)
    kind = units.get("block", "t")
    found = kind.find(model, env)
    assert found.groups == {"blocks": ("layer1", "layer3")}
    assert "changes the shape" in found.skipped["layer2"]
    combined = kind.combine(found, {"layer1": torch.tensor(0.5), "layer3": torch.tensor(0.1)})
    assert combined["blocks"].tolist() == pytest.approx([0.5, 0.1])
    per_class = kind.combine(found, {"layer1": torch.ones(10), "layer3": torch.zeros(10)})
    assert per_class["blocks"].shape == (10, 2)
    plan = kind.apply(model, found, {"blocks": torch.tensor([1])}, env)
    assert plan == {"blocks": ["layer3"]} and isinstance(model.layer3, SkippedBlock)
    fresh = zoo.load("digits_resnet")
    kind.replay(fresh, plan, digits.train.X[:2])
    assert isinstance(fresh.layer3, SkippedBlock)
    assert kind.find(model, env).groups == {"blocks": ("layer1",)}


def test_block_kind_keeps_output_layer(digits):
    model = zoo.load("digits_vit")
    env = _env(model, digits)
    env.output_layers = ["blocks.3.fc2"]      # pretend the last block holds the logits layer
    found = units.get("block", "t").find(model, env)
    assert found.groups["blocks"] == ("blocks.0", "blocks.1", "blocks.2")
    assert found.skipped["blocks.3"] == "holds the output layer 'blocks.3.fc2'"


@pytest.mark.slow
def test_study_prunes_blocks_end_to_end(digits, tmp_path, monkeypatch):
    """A block criterion (what the criteria will implement) drives a whole Study."""
    import xprune_nb as xp
    from xprune_nb import criteria
    from xprune_nb.criteria.base import Criterion
    from xprune_nb.models.mechanisms.blocks import block_magnitude, find_blocks

    class BlockMagnitude(Criterion):
        name = "block_magnitude_test"
        granularities = ("block",)
        needs_data = False

        def block_scores(self, ctx):
            blocks = [b for b in find_blocks(ctx.model, ctx.inputs[:2], ctx.forward)[0]
                      if b.name in ctx.layers]
            return {k: torch.tensor(v) for k, v in block_magnitude(ctx.model, blocks).items()}

    monkeypatch.setitem(criteria._REGISTRY, BlockMagnitude.name, BlockMagnitude)
    study = xp.Study(zoo.load("digits_vit"), digits)
    table = study.prunable("block")
    assert set(table["group"]) == {"blocks"}
    scores = study.score("block_magnitude_test", granularity="block")
    assert scores.values["blocks"].shape == (4,)
    step = study.prune(0.5)
    removed = [m for m in study.model.blocks if isinstance(m, SkippedBlock)]
    assert len(removed) == 2
    assert step.metrics["macs"] < study.history[0].metrics["macs"]
    assert step.metrics["params"] < study.history[0].metrics["params"]
    shapes = {k: v.shape for k, v in study.model.state_dict().items()}
    loaded = xp.Study.load(study.save(tmp_path / "blocks.xprune"))
    assert {k: v.shape for k, v in loaded.model.state_dict().items()} == shapes
    study.undo()
    assert not any(isinstance(m, SkippedBlock) for m in study.model.modules())


class _TwoAttention(torch.nn.Module):
    """One attention module that runs and one that never does."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Linear(8, 16)
        self.attn = torch.nn.MultiheadAttention(16, 4, batch_first=True)
        self.unused = torch.nn.MultiheadAttention(16, 4, batch_first=True)
        self.head = torch.nn.Linear(16, 3)

    def forward(self, x):
        h = self.embed(x)
        return self.head(self.attn(h, h, h, need_weights=False)[0].mean(1))


def test_head_find_reuses_the_opening_pass_until_the_layout_changes():
    import xprune_nb as xp

    torch.manual_seed(0)
    X, y = torch.randn(24, 5, 8), torch.arange(24) % 3
    study = xp.Study(_TwoAttention(), train=(X, y), test=(X, y))
    calls = []
    study.model.register_forward_pre_hook(lambda *a: calls.append(1))
    kind = HeadUnits(mode="remove")
    found = kind.find(study.model, study.env)
    assert calls == []   # which attention runs came from the opening check's pass
    assert list(found.groups) == ["attn"] and "unused" in found.skipped
    kind.apply(study.model, found, {"attn": torch.tensor([0])}, study.env)
    calls.clear()
    again = kind.find(study.model, study.env)   # attn is an SDPAttention now: one pass
    assert calls == [1] and list(again.groups) == ["attn"] and "unused" in again.skipped
    assert study.env.ran_in(study.model) is None
