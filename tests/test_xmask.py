"""The ``xmask`` criterion: class-wise soft masks learned on the frozen model (X-Pruner)."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import no_hooks, state_equal
from torch import nn

import xprune_nb as xp
from xprune_nb import criteria
from xprune_nb.criteria import ScoringContext
from xprune_nb.criteria.xmask import plot_class_masks


def _two_channel_model() -> nn.Sequential:
    """Hidden unit 0 reads feature 0 and votes for class 0, unit 1 reads feature 1 and votes
    for class 1; units 2 and 3 fire for everything and vote for both alike."""
    model = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 2))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [0.5, 0.5]]))
        model[0].bias.copy_(torch.tensor([0.0, 0.0, 1.0, 1.0]))
        model[2].weight.copy_(torch.tensor([[4.0, 0.0, 1.0, 1.0], [0.0, 4.0, 1.0, 1.0]]))
        model[2].bias.zero_()
    return model.eval()


def _toy_context(model, seed: int = 0, classes=None) -> ScoringContext:
    gen = torch.Generator().manual_seed(0)
    strength = 1 + torch.rand(24, generator=gen)
    y = torch.arange(24) % 2
    x = torch.zeros(24, 2)
    x[y == 0, 0] = strength[y == 0]
    x[y == 1, 1] = strength[y == 1]
    return ScoringContext(model=model, granularity="channel", layers={"hidden": model[0]},
                          inputs=x, targets=y, classes=classes, num_classes=2,
                          forward=lambda m, inp: m(inp), seed=seed, batch_size=8)


def test_a_class_keeps_the_unit_it_relies_on():
    model = _two_channel_model()
    crit = criteria.create("xmask", steps=40)
    ctx = _toy_context(model)
    per_class = crit.per_class_channel_scores(ctx)["hidden"]
    assert per_class.shape == (2, 4)
    # class 0 relies on unit 0 only, class 1 on unit 1 only
    assert per_class[0, 0] > per_class[0, 1] + 0.3
    assert per_class[1, 1] > per_class[1, 0] + 0.3
    assert per_class[0, 0] > per_class[0, 2:].max() and per_class[1, 1] > per_class[1, 2:].max()
    overall = crit.channel_scores(ctx)["hidden"]
    counts = torch.bincount(ctx.targets).float() / len(ctx.targets)
    torch.testing.assert_close(overall, (counts[:, None] * per_class).sum(0))
    # the units the classes rely on rank above the ones no class needs
    assert overall[:2].min() > overall[2:].max()


def test_restricted_classes_leave_other_rows_unknown():
    model = _two_channel_model()
    ctx = _toy_context(model)
    only0 = ScoringContext(**{**ctx.__dict__, "inputs": ctx.inputs[ctx.targets == 0],
                              "targets": ctx.targets[ctx.targets == 0], "classes": [0]})
    crit = criteria.create("xmask", steps=10)
    per_class = crit.per_class_channel_scores(only0)["hidden"]
    assert torch.isnan(per_class[1]).all() and torch.isfinite(per_class[0]).all()
    torch.testing.assert_close(crit.channel_scores(only0)["hidden"], per_class[0])


def test_deterministic_under_the_seed_and_model_untouched():
    model = _two_channel_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    a = criteria.create("xmask", steps=8).per_class_channel_scores(_toy_context(model, seed=3))
    b = criteria.create("xmask", steps=8).per_class_channel_scores(_toy_context(model, seed=3))
    c = criteria.create("xmask", steps=8).per_class_channel_scores(_toy_context(model, seed=4))
    assert torch.equal(a["hidden"], b["hidden"])
    assert not torch.equal(a["hidden"], c["hidden"])     # the seeded jitter of the start
    assert state_equal(model.state_dict(), before)
    assert [p.requires_grad for p in model.parameters()] == flags
    assert no_hooks(model) and all(p.grad is None for p in model.parameters())


def test_progress_is_reported_once_per_step():
    seen = []
    ctx = _toy_context(_two_channel_model())
    ctx.progress = lambda done, total: seen.append((done, total))
    criteria.create("xmask", steps=3).channel_scores(ctx)
    assert seen == [(1, 3), (2, 3), (3, 3)]


@pytest.mark.parametrize(("option", "value"), [
    ("steps", 0), ("steps", 2.5), ("steps", True), ("steps", 10**6), ("lr", 0.0),
    ("lr", -0.1), ("lr", math.nan), ("lr", "0.1"), ("sparsity", -1.0), ("sparsity", math.inf),
    ("smoothness", math.nan), ("smoothness", 1e3), ("smoothness", None),
])
def test_bad_options_are_refused_naming_the_option(option, value):
    with pytest.raises(xp.ConfigError, match=rf"Study.score\('xmask'\)\({option}=\.\.\.\)"):
        criteria.create("xmask", **{option: value})


def test_unknown_option_and_study_unchanged(digits):
    study = xp.Study(xp.zoo.load("digits_cnn"), digits, seed=0, probe_size=8)
    with pytest.raises(xp.ConfigError, match="steps"):
        study.score("xmask", steps=-1)
    with pytest.raises(xp.ConfigError, match="epochs"):
        study.score("xmask", epochs=3)
    assert len(study.history) == 1
    with pytest.raises(xp.NotScoredError):
        _ = study.scores_


@pytest.mark.parametrize(("model", "granularity"), [
    ("digits_cnn", "channel"), ("digits_vit", "head"), ("digits_resnet", "block"),
])
def test_study_scores_prunes_and_explains(digits, model, granularity):
    study = xp.Study(xp.zoo.load(model), digits, seed=0, probe_size=8)
    before = {k: v.clone() for k, v in study.model.state_dict().items()}
    scores = study.score("xmask", granularity=granularity, samples=40, steps=4)
    assert state_equal(study.model.state_dict(), before) and no_hooks(study.model)
    assert scores.per_class is not None and set(scores.per_class) == set(scores.values)
    for key, values in scores.values.items():
        table = scores.per_class[key]
        assert table.shape == (10, values.numel())
        assert ((values > 0) & (values < 1)).all() and ((table > 0) & (table < 1)).all()
    again = study.score("xmask", granularity=granularity, samples=40, steps=4)
    assert all(torch.equal(again.values[k], v) for k, v in scores.values.items())
    step = study.prune(0.25, normalize=None)
    assert step.metrics["params"] < study.history[0].metrics["params"]
    report = study.why()
    removed = report.to_frame()
    assert len(removed) and report.criterion == "xmask"
    relevance = [c for c in removed.columns if c.startswith("relevance[")]
    assert len(relevance) == 10 and removed[relevance].notna().all().all()


def test_heads_of_nn_multihead_attention(digits):
    """digits_transformer's heads live in nn.MultiheadAttention (the value-row gates)."""
    study = xp.Study(xp.zoo.load("digits_transformer"), digits, seed=0, probe_size=8)
    before = {k: v.clone() for k, v in study.model.state_dict().items()}
    scores = study.score("xmask", granularity="head", samples=30, steps=3)
    assert state_equal(study.model.state_dict(), before) and no_hooks(study.model)
    for key, values in scores.values.items():
        assert scores.per_class[key].shape == (10, values.numel())
        # the masks moved away from their common start: the gates reach the heads
        assert values.std() > 0


def test_plot_class_masks_draws_class_by_unit(digits):
    import matplotlib

    matplotlib.use("Agg")
    scores = xp.Scores("xmask", "head", {"a": torch.tensor([0.9, 0.2]),
                                          "b": torch.tensor([0.5, 0.4, 0.3])},
                       per_class={"a": torch.tensor([[0.95, 0.1], [0.85, 0.3]]),
                                  "b": torch.tensor([[0.5, 0.4, 0.3], [0.5, float("nan"),
                                                                        0.3]])})
    ax = plot_class_masks(scores, class_names=["zero", "one"])
    image = ax.images[0].get_array()
    assert image.shape == (2, 5)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["zero", "one"]
    with pytest.raises(xp.ConfigError, match="scores"):
        plot_class_masks(xp.Scores("magnitude", "channel", {"a": torch.ones(2)}))
