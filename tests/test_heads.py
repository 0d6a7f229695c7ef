"""Attention-head granularity: scoring and masking the heads of nn.MultiheadAttention."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import make_study, state_equal

import xprune_nb as xp
from xprune_nb.pruning.heads import apply_head_removal, head_rows

HEAD_CRITERIA = ["magnitude", "random", "taylor", "attention"]


@pytest.mark.parametrize("criterion", HEAD_CRITERIA)
def test_head_scores_shapes_and_determinism(criterion, small_digits):
    study = make_study("transformer", small_digits)
    before = {k: v.clone() for k, v in study.model.state_dict().items()}
    a = study.score(criterion, granularity="head", samples=40)
    b = study.score(criterion, granularity="head", samples=40)
    assert list(a.values) == ["attn"] and a.values["attn"].shape == (2,)
    assert torch.equal(a.values["attn"], b.values["attn"])
    assert state_equal(study.model.state_dict(), before)


def test_masked_head_contributes_nothing():
    torch.manual_seed(0)
    mha = torch.nn.MultiheadAttention(8, 2, batch_first=True).eval()
    x = torch.randn(3, 5, 8)
    reference = copy.deepcopy(mha)
    with torch.no_grad():   # drop head 1 by hand: zero its columns of the output projection
        reference.out_proj.weight[:, 4:] = 0
    apply_head_removal({"a": mha}, {"a": torch.tensor([1])})
    assert torch.allclose(mha(x, x, x)[0], reference(x, x, x)[0], atol=1e-6)
    assert torch.all(mha.in_proj_weight[head_rows(mha, 1)] == 0)
    assert torch.any(mha.in_proj_weight[head_rows(mha, 0)] != 0)


def _gate_derivative(model, x, y, target):
    """d objective / d g for a gate g on head 0 of model.attn, by finite differences."""
    def objective(scale):
        m = copy.deepcopy(model)
        with torch.no_grad():
            rows = head_rows(m.attn, 0)[-m.attn.head_dim:]        # the value rows of head 0
            m.attn.in_proj_weight[rows] *= scale
            m.attn.in_proj_bias[rows] *= scale
            logits = m(x)
        if target == "logit":
            return float(logits[0, y[0]])
        return float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
    eps = 1e-2
    return (objective(1 + eps) - objective(1 - eps)) / (2 * eps)


@pytest.mark.parametrize(("criterion", "target"), [("taylor", "loss"), ("attention", "logit")])
def test_head_scores_are_gate_derivatives(criterion, target, small_digits):
    study = make_study("transformer", small_digits)
    from xprune_nb.data import stratified_indices

    scores = study.score(criterion, granularity="head", samples=1, classes=[4])
    idx = stratified_indices(study.data.train.y, 1, seed=study.seed, classes=[4])
    x, y = study.data.train.X[idx], study.data.train.y[idx]
    expected = abs(_gate_derivative(study.model, x, y, target))
    assert float(scores.values["attn"][0]) == pytest.approx(expected, rel=2e-2, abs=1e-5)


def test_prune_heads_then_undo_save_load(tmp_path, digits):
    study = xp.Study(xp.zoo.load("digits_transformer"), digits)
    study.score("attention", granularity="head_mask", samples=64)   # masked, not removed
    step = study.prune(0.25)
    assert sum(len(v) for v in step.removed.values()) == 2
    assert any(":in_proj_weight" in m for m in step.masked)
    assert step.metrics["nonzero_params"] < step.metrics["params"]
    assert step.metrics["macs"] == study.history[0].metrics["macs"]   # masks: dense MACs
    state = {k: v.clone() for k, v in study.model.state_dict().items()}
    study.retrain(epochs=1, progress=False)
    for name in step.removed:                          # masked heads stay masked in training
        module = dict(study.model.named_modules())[name]
        for head in step.removed[name]:
            assert torch.all(module.in_proj_weight[head_rows(module, head)] == 0)
    study.undo()
    assert state_equal(study.model.state_dict(), state)
    loaded = xp.Study.load(study.save(tmp_path / "heads.xprune"))
    assert state_equal(loaded.model.state_dict(), state)
    replayed = xp.Study.from_recipe(study.recipe())
    assert state_equal(replayed.model.state_dict(), state)


def test_channels_after_heads_keep_head_masks(digits):
    study = xp.Study(xp.zoo.load("digits_transformer"), digits)
    study.score("magnitude", granularity="head_mask")
    study.prune(0.25)
    masked_before = study.step.masked
    study.score("magnitude", granularity="channel")
    study.prune(0.3)
    assert set(masked_before) <= set(study.step.masked)


def test_class_aware_head_relevance(small_digits):
    study = make_study("transformer", small_digits)
    everyone = study.score("attention", granularity="head", samples=60)
    threes = study.score("attention", granularity="head", samples=20, classes=[3])
    assert everyone.per_class["attn"].shape == (10, 2)
    assert not torch.equal(everyone.values["attn"], threes.values["attn"])


def test_head_granularity_errors(small_digits):
    study = make_study("transformer", small_digits)
    with pytest.raises(xp.ConfigError, match="expected one of .* for 'lrp', got 'head'"):
        study.score("lrp", granularity="head")
    mlp = make_study("mlp", small_digits)
    with pytest.raises(xp.ModelError, match="no nn.MultiheadAttention"):
        mlp.score("magnitude", granularity="head")
    study.score("magnitude", granularity="head")
    with pytest.raises(xp.PruneError, match="remove every unit of 'attn'"):
        study.prune(0.2, layer_amounts={"attn": 0.9})
