"""Registry-driven invariants for every criterion x granularity."""

from __future__ import annotations

import pytest
import torch
from conftest import make_study, no_hooks, state_equal

import xprune_nb as xp
from xprune_nb import criteria

# options that keep the sampling criteria fast in this common suite
FAST_OPTIONS = {"shapley": {"permutations": 4}, "conductance": {"steps": 8},
                "xmask": {"steps": 5}}


def _criteria_for(granularity):
    out = []
    for name in criteria.available():
        try:
            cls = criteria.get(name)
        except (ImportError, xp.MissingDependencyError):
            continue
        if granularity in cls.granularities:
            out.append(name)
    return out


def _options(name):
    cls = criteria.get(name)
    return {k: v for k, v in FAST_OPTIONS.get(name, {}).items() if k in cls.options}


def _study(kind, small_digits, name, **kwargs):
    """A study for ``name``; criteria that need sensitive groups get a 20 % minority."""
    if criteria.get(name).needs_groups:
        kwargs["groups"] = {s: (torch.arange(len(small_digits[s][1])) % 5 == 0).long()
                            for s in ("train", "val", "test")}
    return make_study(kind, small_digits, **kwargs)


CASES = [(n, g) for g in ("channel", "weight") for n in _criteria_for(g)]


@pytest.mark.parametrize(("name", "granularity"), CASES)
def test_shapes_determinism_and_no_side_effects(name, granularity, small_digits):
    study = _study("residual", small_digits, name, seed=1)
    before = {k: v.clone() for k, v in study.model.state_dict().items()}
    flags = [p.requires_grad for p in study.model.parameters()]
    s1 = study.score(name, granularity=granularity, samples=40, **_options(name))
    s2 = study.score(name, granularity=granularity, samples=40, **_options(name))
    modules = dict(study.model.named_modules())
    for key, v in s1.values.items():
        assert torch.isfinite(v).all()
        if granularity == "channel":
            assert v.shape == (modules[key].weight.shape[0],)
        else:
            assert v.shape == modules[key].weight.shape
        assert torch.equal(v, s2.values[key]), f"{name} is not deterministic"
    assert state_equal(study.model.state_dict(), before)
    assert [p.requires_grad for p in study.model.parameters()] == flags
    assert no_hooks(study.model)
    assert all(p.grad is None for p in study.model.parameters())
    assert not study.model.training


@pytest.mark.parametrize("name", _criteria_for("channel"))
def test_failure_leaves_model_unchanged(name, small_digits):
    study = _study("mlp", small_digits, name)
    before = {k: v.clone() for k, v in study.model.state_dict().items()}

    def explode(done, total):
        raise xp.StoppedError("stopped by test")

    cls = criteria.get(name)
    if not cls.needs_data:
        pytest.skip(f"{name} reads no data, so it has no progress callback to fail in")
    with pytest.raises(xp.StoppedError):
        study.score(name, samples=40, progress=explode, **_options(name))
    assert state_equal(study.model.state_dict(), before)
    assert no_hooks(study.model)
    with pytest.raises(xp.NotScoredError):
        _ = study.scores_


def test_classes_restrict_reference_set(small_digits):
    study = make_study("mlp", small_digits)
    all_classes = study.score("taylor", samples=60)
    only_three = study.score("taylor", samples=30, classes=[3])
    assert only_three.options["classes"] == [3]
    assert not torch.equal(all_classes.values["fc1"], only_three.values["fc1"])


def test_seed_changes_random_scores(small_digits):
    a = make_study("mlp", small_digits, seed=0).score("random").values["fc1"]
    b = make_study("mlp", small_digits, seed=1).score("random").values["fc1"]
    assert not torch.equal(a, b)


def test_register_custom_criterion(small_digits):
    class BiasCriterion(criteria.Criterion):
        name = "bias_size"
        needs_data = False
        granularities = ("channel",)

        def channel_scores(self, ctx):
            return {n: m.bias.detach().abs() for n, m in ctx.layers.items()}

    criteria.register(BiasCriterion)
    try:
        study = make_study("mlp", small_digits)
        scores = study.score("bias_size")
        assert torch.equal(scores.values["fc1"], study.model.fc1.bias.detach().abs())
        with pytest.raises(xp.ConfigError, match="already registered"):
            criteria.register(BiasCriterion)
        with pytest.raises(xp.ConfigError, match="expected one of"):
            study.score("bias_size", granularity="weight")
    finally:
        criteria._REGISTRY.pop("bias_size", None)


def test_taylor_matches_definition(small_digits):
    """Molchanov et al.: |mean over positions of a * dL/da|, averaged over examples."""
    study = make_study("mlp", small_digits)
    scores = study.score("taylor", samples=20)
    x, y = study.data.train.X, study.data.train.y
    from xprune_nb.data import stratified_indices

    idx = stratified_indices(y, 20, seed=0)
    model = study.model
    acts = {}
    h = model.fc1.register_forward_hook(lambda m, i, o: acts.setdefault("a", o))
    out = model(x[idx])
    h.remove()
    a = acts["a"]
    a.retain_grad()
    torch.nn.functional.cross_entropy(out, y[idx], reduction="sum").backward()
    expected = (a * a.grad).abs().mean(0)
    model.zero_grad(set_to_none=True)
    assert torch.allclose(scores.values["fc1"], expected, rtol=1e-4, atol=1e-7)


def test_sampled_scores_carry_standard_errors(small_digits, tmp_path):
    study = make_study("mlp", small_digits)
    scores = study.score("shapley", samples=30, permutations=3)
    assert scores.errors is not None and scores.errors.keys() == scores.values.keys()
    assert all((e >= 0).all() for e in scores.errors.values())
    assert "stderr" in scores.to_frame().columns
    assert study.score("taylor", samples=30).errors is None
    path = study.save(tmp_path / "s.xprune")
    import xprune_nb as xp_

    loaded = xp_.Study.load(path, model=type(study.original)())
    assert loaded.scores_at(0).criterion == "taylor"
