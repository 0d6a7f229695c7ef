"""Unit kinds are pluggable: a toy kind in one file runs a whole study; the registry's errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import prune as tprune

import xprune_nb as xp
from xprune_nb.core.errors import ConfigError
from xprune_nb.pruning import units
from xprune_nb.pruning.units import ModelEnv, UnitKind, Units


class NeuronMaskUnits(UnitKind):
    """Toy kind: hidden Linear neurons, masked (whole weight rows set to zero)."""

    name = "neuron_mask"
    noun = "masked neurons"
    score_as = "channel"          # criteria score it with their channel_scores

    def find(self, model: nn.Module, env: ModelEnv, *, prune_output: bool = False) -> Units:
        layers = {n: m for n, m in model.named_modules()
                  if isinstance(m, nn.Linear) and n not in env.output_layers}
        return Units(self.name, groups={n: (n,) for n in layers}, layers=layers,
                     sizes={n: m.out_features for n, m in layers.items()})

    def alive(self, model, found):
        return {n: (m.weight.detach() != 0).any(dim=1) for n, m in found.layers.items()}

    def apply(self, model, found, removal, env):
        for name, rows in removal.items():
            layer = found.layers[name]
            keep = torch.ones_like(layer.weight)
            keep[rows] = 0
            if hasattr(layer, "weight_mask"):
                keep = keep * layer.weight_mask
                tprune.remove(layer, "weight")
            tprune.custom_from_mask(layer, "weight", keep)
        return None


@pytest.fixture
def toy_kind():
    units.register(NeuronMaskUnits)
    yield
    units._REGISTRY.pop("neuron_mask", None)


def test_a_new_kind_runs_a_whole_study(toy_kind):
    study = xp.Study(xp.zoo.load("toy_mlp"), xp.datasets.load("moons"), seed=0)
    scores = study.score("magnitude", granularity="neuron_mask")
    assert set(scores.values) and all(v.dim() == 1 for v in scores.values.values())
    preview = study.preview(0.5)
    step = study.prune(0.5)
    assert step.config["granularity"] == "neuron_mask"
    removed = sum(len(v) for v in step.removed.values())
    assert removed == preview.removed > 0
    for name, rows in step.removed.items():
        weight = dict(study.model.named_modules())[name].weight
        assert (weight[rows] == 0).all()
    # the study's machinery works unchanged: undo, goto, model_at, retrain keeps the masks
    again = study.model_at(step.index)
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(),
                                                 study.model.state_dict().values()))
    study.retrain(epochs=1, progress=False)
    for name, rows in step.removed.items():
        assert (dict(study.model.named_modules())[name].weight[rows] == 0).all()
    study.undo()
    study.undo()
    assert study.current == 0


def test_unknown_granularity_lists_the_registered_kinds():
    study = xp.Study(xp.zoo.load("toy_mlp"), xp.datasets.load("moons"), seed=0)
    with pytest.raises(ConfigError, match=r"granularity=\.\.\.\): unknown name 'neuron'; "
                                          r"valid names are 'block', 'channel', 'head', "
                                          r"'head_mask', 'recurrent', 'weight'"):
        study.score("magnitude", granularity="neuron")
    assert len(study.history) == 1


def test_registry_lookup():
    assert {"weight", "channel", "head"} <= set(units.available())
    assert units.get("channel", "x").structural and not units.get("weight", "x").structural
    with pytest.raises(ConfigError, match="unknown name"):
        units.get("blocks", "Study.score")
