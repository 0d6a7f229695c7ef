"""Criteria score whole blocks: magnitude, random, gradient, taylor, lrp and the measured skip
drop; the gate derivative is checked against finite differences; heads can be masked too."""

from __future__ import annotations

import pytest
import torch

import xprune_nb as xp
from xprune_nb.criteria._blocks import _gated, blocks_of, per_example_block_gates


@pytest.fixture(scope="module")
def study():
    return xp.Study(xp.zoo.load("digits_resnet"), xp.datasets.load("digits"), seed=0,
                    probe_size=8)


@pytest.mark.parametrize("criterion", ["magnitude", "random", "gradient", "taylor", "lrp",
                                       "skip"])
def test_every_block_criterion_scores_every_block(study, criterion):
    scores = study.score(criterion, granularity="block", samples=32)
    (key, values), = scores.values.items()
    assert values.shape == (len(scores.groups[key]),) and torch.isfinite(values).all()
    assert len(study.history) == 1


def test_skip_scores_are_the_measured_accuracy_drop(study):
    from xprune_nb.models.mechanisms.blocks import skip_drop

    scores = study.score("skip", granularity="block", samples=64)
    units = scores._units[1]
    blocks = units.detail["blocks"]
    x = study.data.train.X
    ref = scores.options["samples"]
    assert ref == 64
    drops = skip_drop(study.model, blocks, x[:200], study.data.train.y[:200], study.forward)
    assert set(drops) == set(units.groups["blocks"])


def test_gate_derivative_matches_finite_differences(study):
    from xprune_nb.criteria import ScoringContext

    units = study.prunable("block")
    assert units["prunable"].any()
    from xprune_nb.pruning import units as kinds

    found = kinds.get("block", "t").find(study.model, study.env)
    x, y = study.data.train.X[:4], study.data.train.y[:4]
    ctx = ScoringContext(model=study.model, granularity="block", layers=found.layers, inputs=x,
                         targets=y, classes=None, num_classes=10, forward=study.forward,
                         batch_size=4, units=found)
    grads = per_example_block_gates(ctx)
    block = blocks_of(ctx)[0]
    eps = 1e-3
    losses = []
    for value in (1 + eps, 1 - eps):
        gates = {b.name: torch.ones(4) for b in blocks_of(ctx)}
        gates[block.name] = torch.full((4,), value)
        with torch.no_grad(), _gated(study.model, blocks_of(ctx), gates):
            logits = study.forward(study.model, x)
            losses.append(torch.nn.functional.cross_entropy(logits, y, reduction="none"))
    numeric = (losses[0] - losses[1]) / (2 * eps)
    torch.testing.assert_close(grads[block.name].float(), numeric, atol=2e-3, rtol=2e-2)


def test_block_prune_shrinks_the_model_and_undoes(study):
    study.score("taylor", granularity="block", samples=32)
    step = study.prune(0.5)
    assert step.metrics["params"] < study.history[0].metrics["params"]
    assert step.metrics["macs"] < study.history[0].metrics["macs"]
    assert step.structure[-1]["kind"] == "block"
    study.undo()
    assert study.current == 0


def test_heads_can_be_masked_without_speed_up():
    s = xp.Study(xp.zoo.load("digits_vit"), xp.datasets.load("digits"), seed=0, probe_size=8)
    s.score("magnitude", granularity="head_mask")
    masked = s.prune(0.5)
    assert masked.metrics["macs"] == s.history[0].metrics["macs"]
    assert masked.metrics["nonzero_params"] < s.history[0].metrics["nonzero_params"]
    s.undo()
    s.score("magnitude", granularity="head")
    removed = s.prune(0.5)
    assert removed.metrics["macs"] < s.history[0].metrics["macs"]
    assert removed.metrics["params"] < s.history[0].metrics["params"]
