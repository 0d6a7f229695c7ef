"""The explainability-aware criteria (lrp, conductance, shapley) against references and the base
class contract: right shapes, deterministic, class-aware, and the model left exactly as found."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune

from xprune_nb import criteria
from xprune_nb.core.errors import ConfigError, MissingDependencyError
from xprune_nb.criteria import ScoringContext
from xprune_nb.criteria import shapley as shapley_module
from xprune_nb.models.mechanisms.lrp import LRPRunner

torch.set_num_threads(1)

EXPLAIN_CRITERIA = {
    "lrp": {},
    "conductance": {"steps": 16},
    "shapley": {"permutations": 4},
}


def mlp(bias: bool = True, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 12, bias=bias), nn.ReLU(), nn.Linear(12, 8, bias=bias),
                         nn.ReLU(), nn.Linear(8, 3, bias=bias))


class SmallCNN(nn.Module):
    """Conv-BN-ReLU-MaxPool, nn.Flatten and a linear head: what captum's LRP cannot handle."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(6 * 4 * 4, 10)
        self.relu2 = nn.ReLU()
        self.head = nn.Linear(10, 3)

    def forward(self, x):
        x = self.flatten(self.pool(self.relu(self.bn(self.conv(x)))))
        return self.head(self.relu2(self.fc(x)))


class UserResidual(nn.Module):
    """A user's own residual model: the add is written in forward, not a module."""

    def __init__(self, bias: bool = True) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1, bias=bias)
        self.bn0 = nn.BatchNorm2d(4)
        self.act0 = nn.ReLU()
        self.conv = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.act = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(4, 3, bias=bias)

    def forward(self, x):
        h = self.act0(self.bn0(self.stem(x)))
        h = self.act(self.bn(self.conv(h)) + h)
        return self.head(torch.flatten(self.pool(h), 1))


def randomize_bn(model: nn.Module, zero_shift: bool = False) -> nn.Module:
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            if zero_shift:
                m.running_mean.zero_()
                m.bias.data.zero_()
            else:
                m.running_mean.copy_(torch.rand(n, generator=gen) - 0.5)
    return model.eval()


def context(model, x, y, layers=None, classes=None, granularity="channel", num_classes=3,
            batch_size=8):
    if layers is None:
        layers = {n: m for n, m in model.named_modules()
                  if isinstance(m, (nn.Linear, nn.Conv2d)) and n not in ("head", "4")}
    return ScoringContext(model, granularity, layers, x, y, classes, num_classes,
                          lambda m, inp: m(inp), seed=0, batch_size=batch_size)


def data(shape, n=12, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=gen), torch.arange(n) % 3


def hooks(model):
    return {n: (list(m._forward_hooks.values()), list(m._forward_pre_hooks.values()),
                list(m._backward_hooks.values()), list(m._backward_pre_hooks.values()))
            for n, m in model.named_modules()}


def snapshot(model):
    return ({k: v.clone() for k, v in model.state_dict().items()},
            {n: m.training for n, m in model.named_modules()},
            {n: p.requires_grad for n, p in model.named_parameters()}, hooks(model))


def assert_untouched(model, snap):
    state, modes, grads, hooks_before = snap
    now = model.state_dict()
    assert list(now) == list(state)
    assert all(torch.equal(now[k], v) for k, v in state.items())
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert {n: p.requires_grad for n, p in model.named_parameters()} == grads
    assert all(p.grad is None for p in model.parameters())
    assert hooks(model) == hooks_before      # no hook added or left behind (pruning's stay)


MODELS = {
    "mlp": (lambda: mlp(), (5,)),
    "cnn_flatten_bn": (lambda: randomize_bn(SmallCNN()), (1, 8, 8)),
    "residual": (lambda: randomize_bn(UserResidual()), (1, 6, 6)),
}


@pytest.mark.parametrize("name", list(EXPLAIN_CRITERIA))
@pytest.mark.parametrize("model_name", list(MODELS))
def test_channel_scores_contract(name, model_name):
    build, shape = MODELS[model_name]
    model = build()
    model.train()                 # criteria score in eval mode and must restore the flags
    x, y = data(shape)
    ctx = context(model, x, y)
    snap = snapshot(model)
    crit = criteria.create(name, **EXPLAIN_CRITERIA[name])
    scores = crit.score(ctx)
    assert set(scores) == set(ctx.layers)
    for layer_name, layer in ctx.layers.items():
        assert scores[layer_name].shape == (layer.weight.shape[0],)
        assert torch.isfinite(scores[layer_name]).all()
    per_class = crit.per_class_channel_scores(ctx)
    assert {k: tuple(v.shape) for k, v in per_class.items()} == {
        k: (3, layer.weight.shape[0]) for k, layer in ctx.layers.items()}
    assert_untouched(model, snap)
    again = criteria.create(name, **EXPLAIN_CRITERIA[name]).score(context(model, x, y))
    assert all(torch.equal(scores[k], again[k]) for k in scores), "not deterministic"


@pytest.mark.parametrize("name", list(EXPLAIN_CRITERIA))
def test_overall_score_is_class_weighted_mean(name):
    model = mlp()
    x, y = data((5,), n=10)
    y = torch.tensor([0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
    crit = criteria.create(name, **EXPLAIN_CRITERIA[name])
    ctx = context(model, x, y, batch_size=4)
    overall, per_class = crit.score(ctx), crit.per_class_channel_scores(ctx)
    weights = torch.bincount(y).float() / len(y)
    for k in overall:
        assert torch.allclose(overall[k], (weights[:, None] * per_class[k]).sum(0), atol=1e-5)


@pytest.mark.parametrize("name", list(EXPLAIN_CRITERIA))
def test_class_aware_scores_differ_from_class_agnostic(name):
    model = mlp()
    x, y = data((5,), n=12)
    crit = criteria.create(name, **EXPLAIN_CRITERIA[name])
    agnostic = crit.score(context(model, x, y))
    only0 = crit.score(context(model, x[y == 0], y[y == 0], classes=[0]))
    per_class = crit.per_class_channel_scores(context(model, x[y == 0], y[y == 0], classes=[0]))
    assert not torch.allclose(agnostic["0"], only0["0"])
    assert torch.isnan(per_class["0"][1:]).all()        # classes without examples are unknown
    assert torch.allclose(per_class["0"][0], only0["0"], atol=1e-6)


def test_lrp_conserves_relevance_epsilon_mlp():
    """Epsilon rule, zero biases: every layer's total relevance equals the target logit."""
    model = mlp(bias=False)
    x, y = data((5,), n=9)
    layers = {"0": model[0], "2": model[2], "4": model[4]}
    scores = criteria.create("lrp", signed=True).score(context(model, x, y, layers=layers))
    logit = model(x).detach().gather(1, y[:, None]).mean()
    for name in layers:
        assert scores[name].sum() == pytest.approx(float(logit), rel=0.01)
    out = LRPRunner(model, lambda m, inp: m(inp)).run(x, y, input_relevance=True)
    per_example = model(x).gather(1, y[:, None]).squeeze(1)
    torch.testing.assert_close(out.input_relevance.sum(1), per_example, rtol=0.01, atol=1e-5)


@pytest.mark.parametrize("rule", ["epsilon", "zplus", "gamma"])
def test_lrp_conserves_through_residual_add_and_batchnorm(rule):
    model = randomize_bn(UserResidual(bias=False), zero_shift=True)
    x = torch.rand(6, 1, 6, 6)
    y = torch.arange(6) % 3
    out = LRPRunner(model, lambda m, inp: m(inp), rule=rule).run(
        x, y, layers=["stem", "conv"], input_relevance=True)
    logit = model(x).gather(1, y[:, None]).squeeze(1)
    torch.testing.assert_close(out.input_relevance.flatten(1).sum(1), logit, rtol=0.01,
                               atol=1e-5)
    torch.testing.assert_close(out.layer_relevance["stem"][0].flatten(1).sum(1), logit,
                               rtol=0.01, atol=1e-5)


def test_lrp_weight_scores_sum_to_unit_relevance():
    model = mlp(bias=False)
    x, y = data((5,), n=9)
    layers = {"0": model[0], "2": model[2]}
    crit = criteria.create("lrp", signed=True)
    units = crit.score(context(model, x, y, layers=layers))
    weights = crit.score(context(model, x, y, layers=layers, granularity="weight"))
    for name, layer in layers.items():
        assert weights[name].shape == layer.weight.shape
        torch.testing.assert_close(weights[name].sum(1), units[name], rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("rule", ["zplus", "alphabeta", "gamma"])
def test_lrp_rules_differ_and_respect_pruning_masks(rule):
    model = randomize_bn(SmallCNN())
    prune.l1_unstructured(model.fc, "weight", amount=0.5)
    x, y = data((1, 8, 8))
    snap = snapshot(model)
    ctx = context(model, x, y)
    base = criteria.create("lrp").score(ctx)
    other = criteria.create("lrp", rule=rule).score(ctx)
    weights = criteria.create("lrp", rule=rule).score(context(model, x, y, granularity="weight"))
    assert not torch.allclose(base["fc"], other["fc"])
    assert (weights["fc"][model.fc.weight_mask == 0] == 0).all()   # masked weights carry none
    assert_untouched(model, snap)


def test_conductance_matches_captum_and_completeness():
    from captum.attr import LayerConductance

    model = mlp()
    x, y = data((5,), n=6)
    layers = {"2": model[2]}
    crit = criteria.create("conductance", signed=True, steps=64)
    ctx = context(model, x, y, layers=layers, batch_size=6)
    scores = crit.score(ctx)
    direct = LayerConductance(model, model[2]).attribute(x, target=y, n_steps=64)
    torch.testing.assert_close(scores["2"], direct.mean(0), rtol=1e-5, atol=1e-6)
    # a full hidden layer carries all of IG: conductances add up to f(x) - f(0)
    gap = (model(x) - model(torch.zeros_like(x))).gather(1, y[:, None]).squeeze(1)
    torch.testing.assert_close(direct.sum(1), gap.detach(), rtol=0.02, atol=0.01)


def test_shapley_efficiency_and_batching_independence(monkeypatch):
    model = mlp()
    x, y = data((5,), n=12)
    ctx = context(model, x, y)
    crit = criteria.create("shapley", permutations=3, truncation=0.0)
    scores = crit.score(ctx)
    gated = mlp()
    with torch.no_grad():   # every unit of the scored layers removed: outputs of 0 and 2 zeroed
        for i in (0, 2):
            gated[i].weight.zero_()
            gated[i].bias.zero_()
    with torch.no_grad():
        v_full = -F.cross_entropy(model(x), y)
        v_empty = -F.cross_entropy(gated(x), y)
    total = sum(v.double().sum() for v in scores.values())
    assert float(total) == pytest.approx(float(v_full - v_empty), rel=1e-5)
    errors = crit.standard_errors_
    assert set(errors) == set(scores) and all((e >= 0).all() for e in errors.values())
    # coalitions evaluated 3 at a time must give the same values, truncation included
    truncated = criteria.create("shapley", permutations=3, truncation=0.3).score(ctx)
    monkeypatch.setattr(shapley_module, "_SAMPLES_PER_FORWARD", 36)
    chunked = criteria.create("shapley", permutations=3, truncation=0.3).score(ctx)
    assert all(torch.allclose(truncated[k], chunked[k], atol=1e-6) for k in truncated)


def test_shapley_single_permutation_has_nan_error_and_accuracy_metric():
    model = mlp()
    x, y = data((5,))
    crit = criteria.create("shapley", permutations=1, metric="accuracy")
    crit.score(context(model, x, y))
    assert all(torch.isnan(e).all() for e in crit.standard_errors_.values())


@pytest.mark.parametrize("name, options, match", [
    ("lrp", {"rule": "flat"}, r"rule=\.\.\.\): expected one of \['epsilon'"),
    ("lrp", {"epsilon": 0}, r"epsilon=\.\.\.\): expected a number > 0"),
    ("lrp", {"alpha": 0.5}, r"alpha=\.\.\.\): expected a number >= 1"),
    ("lrp", {"beta": 1}, r"unknown option\(s\) \['beta'\]"),
    ("conductance", {"steps": 1}, r"steps=\.\.\.\): expected an integer >= 2"),
    ("shapley", {"permutations": 0}, r"permutations=\.\.\.\): expected an integer >= 1"),
    ("shapley", {"metric": "f1"}, r"metric=\.\.\.\): expected one of \['loss', 'accuracy'\]"),
    ("shapley", {"truncation": 1.0}, r"truncation=\.\.\.\): expected a number in \[0, 1\)"),
])
def test_invalid_options(name, options, match):
    with pytest.raises(ConfigError, match=match):
        criteria.create(name, **options)


def test_shapley_rejects_weight_granularity():
    model = mlp()
    x, y = data((5,))
    with pytest.raises(ConfigError, match=r"granularity=\.\.\.\): expected 'channel'"):
        criteria.create("shapley").score(context(model, x, y, granularity="weight"))


def test_weight_conductance_is_complete():
    """Integrated Gradients in weight space: attributions add up to f(w) - f(0)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    x, y = torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    ctx = criteria.ScoringContext(net, "weight", {"0": net[0], "2": net[2]}, x, y, None, 3,
                                  lambda m, v: m(v))
    scores = criteria.create("conductance", steps=200, signed=True).score(ctx)
    total = sum(float(v.sum()) for v in scores.values())
    with torch.no_grad():
        f1 = net(x).gather(1, y[:, None]).sum()
        zeroed = copy.deepcopy(net)
        zeroed[0].weight.zero_()
        zeroed[2].weight.zero_()
        f0 = zeroed(x).gather(1, y[:, None]).sum()
    assert total == pytest.approx(float(f1 - f0), rel=1e-2)


def test_conductance_needs_float_inputs():
    model = torch.nn.Sequential(torch.nn.Embedding(5, 4), torch.nn.Flatten(),
                                torch.nn.Linear(8, 3))
    x = torch.randint(0, 5, (4, 2))
    ctx = criteria.ScoringContext(model, "channel", {"2": model[2]}, x, torch.tensor([0, 1, 2, 0]),
                                  None, 3, lambda m, v: m(v))
    with pytest.raises(ConfigError, match="floating-point inputs"):
        criteria.create("conductance").score(ctx)


def test_zennit_imports_without_torchvision_and_leaves_no_stub():
    code = ("import sys\n"
            "from xprune_nb.models.mechanisms.lrp import import_zennit\n"
            "z = import_zennit()\n"
            "print(z.torchvision.__name__, z.composites.__name__,\n"
            "      [m for m in sys.modules if m.startswith('torchvision')])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["zennit.torchvision", "zennit.composites", "[]"]


def test_missing_zennit_says_how_to_install(monkeypatch):
    import importlib.util

    from xprune_nb.models.mechanisms import lrp as _zennit

    real = importlib.util.find_spec
    monkeypatch.setattr(_zennit.importlib.util, "find_spec",
                        lambda name, *a: None if name == "zennit" else real(name, *a))
    monkeypatch.delitem(sys.modules, "zennit", raising=False)
    with pytest.raises(MissingDependencyError, match=r"pip install --no-deps zennit==0\.5\.1"):
        criteria.create("lrp").score(context(mlp(), *data((5,))))
