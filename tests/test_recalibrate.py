"""Adaptive BatchNorm recalibration (EagleEye): statistics re-estimated, nothing else touched."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from xprune_nb.core.errors import ConfigError, DataError, ModelError
from xprune_nb.models.mechanisms.recalibrate import (
    batchnorm_layers,
    has_batchnorm,
    recalibrate_batchnorm,
)


class DropBN(nn.Module):
    """Dropout before a BatchNorm: if dropout ran in training mode the statistics would differ.
    ``unused`` is a BatchNorm the forward pass never reaches."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 5)
        self.drop = nn.Dropout(0.9)
        self.bn = nn.BatchNorm1d(5)
        self.unused = nn.BatchNorm1d(5)
        self.head = nn.Linear(5, 3)

    def forward(self, x):
        return self.head(torch.relu(self.bn(self.drop(self.fc(x)))))


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture
def net():
    torch.manual_seed(0)
    model = DropBN()
    with torch.no_grad():
        model.bn.running_mean.fill_(3.0)
        model.bn.running_var.fill_(7.0)
        model.unused.running_mean.fill_(-2.0)
    return model.eval()


def test_statistics_are_the_cumulative_average_of_eval_mode_activations(net):
    X = torch.randn(100, 6)
    params = {k: v.clone() for k, v in net.named_parameters()}
    report = recalibrate_batchnorm(net, X, batches=3, batch_size=16, seed=5)
    order = torch.randperm(100, generator=torch.Generator().manual_seed(5))[:48]
    with torch.no_grad():
        acts = [net.fc(X[order[i:i + 16]]) for i in (0, 16, 32)]   # dropout is off in eval
    expected_mean = torch.stack([a.mean(0) for a in acts]).mean(0)
    expected_var = torch.stack([a.var(0, unbiased=True) for a in acts]).mean(0)
    torch.testing.assert_close(net.bn.running_mean, expected_mean)
    torch.testing.assert_close(net.bn.running_var, expected_var)
    assert int(net.bn.num_batches_tracked) == 3
    # parameters untouched, no gradients, the unreached layer keeps its statistics
    for k, v in net.named_parameters():
        assert torch.equal(v, params[k]) and v.grad is None
    assert torch.all(net.unused.running_mean == -2.0)
    assert report.layers == ["bn"] and report.skipped == ["unused"]
    assert (report.examples, report.batches, report.batch_size) == (48, 3, 16)


def test_modes_and_momentum_are_restored(net):
    net.train()
    net.drop.eval()
    net.bn.momentum = 0.3
    recalibrate_batchnorm(net, torch.randn(40, 6), batches=2, batch_size=8)
    assert net.training and net.fc.training and not net.drop.training and net.bn.training
    assert net.bn.momentum == 0.3


def test_deterministic_and_leaves_the_global_rng_alone(net):
    X = torch.randn(200, 6)
    a, b = copy.deepcopy(net), copy.deepcopy(net)
    torch.manual_seed(123)
    recalibrate_batchnorm(a, X, batches=4, batch_size=10, seed=1)
    after = torch.rand(1)
    torch.manual_seed(123)
    recalibrate_batchnorm(b, X, batches=4, batch_size=10, seed=1)
    assert torch.equal(torch.rand(1), after)
    assert all(torch.equal(x, y) for x, y in zip(_state(a).values(), _state(b).values()))
    c = copy.deepcopy(net)
    recalibrate_batchnorm(c, X, batches=4, batch_size=10, seed=2)
    assert not torch.equal(c.bn.running_mean, a.bn.running_mean)


def test_fewer_examples_than_asked_and_a_last_single_example_is_dropped(net):
    report = recalibrate_batchnorm(net, torch.randn(21, 6), batches=10, batch_size=10)
    assert (report.batches, report.examples) == (2, 20)


def test_model_without_batchnorm_is_left_alone():
    model = nn.Sequential(nn.Linear(3, 2))
    before = _state(model)
    report = recalibrate_batchnorm(model, torch.randn(8, 3))
    assert not has_batchnorm(model) and report.layers == [] and report.examples == 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # a BatchNorm without running statistics has nothing to recalibrate
    assert not has_batchnorm(nn.BatchNorm1d(3, track_running_stats=False))


@pytest.mark.parametrize("kwargs, match", [
    ({"batches": 0}, r"recalibrate_batchnorm\(batches=...\): expected a positive integer"),
    ({"batch_size": 1}, r"batch_size=...\): expected an integer >= 2"),
    ({"batch_size": 2.5}, r"batch_size=...\): expected a positive integer"),
    ({"forward": "model"}, r"forward=...\): expected a callable"),
    ({"seed": None}, r"seed=...\): expected an integer"),
])
def test_bad_arguments_change_nothing(net, kwargs, match):
    before = _state(net)
    with pytest.raises(ConfigError, match=match):
        recalibrate_batchnorm(net, torch.randn(10, 6), **kwargs)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_bad_inputs(net):
    with pytest.raises(ConfigError, match=r"X=...\): expected a tensor of inputs.*or an "
                       r"iterable of training batches"):
        recalibrate_batchnorm(net, 3.0)
    with pytest.raises(DataError, match=r"expected a tensor or a mapping"):
        recalibrate_batchnorm(net, [[1.0] * 6])     # batches that hold no tensor
    with pytest.raises(ConfigError, match=r"samples=...\): expected an integer >= 2"):
        recalibrate_batchnorm(net, torch.randn(4, 6), samples=1)
    with pytest.raises(DataError, match="at least 2 examples"):
        recalibrate_batchnorm(net, torch.randn(1, 6))
    with pytest.raises(ConfigError, match=r"model=...\)"):
        recalibrate_batchnorm("net", torch.randn(4, 6))


def test_a_failing_forward_restores_the_statistics(net):
    before = _state(net)
    net.train()

    def broken(model, x):
        model(x)
        raise RuntimeError("boom")

    with pytest.raises(ModelError, match="forward pass failed.*boom.*unchanged"):
        recalibrate_batchnorm(net, torch.randn(30, 6), forward=broken)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert net.training and net.bn.momentum == 0.1


def test_masked_model_keeps_its_masks(net):
    from torch.nn.utils import prune

    prune.l1_unstructured(net.fc, "weight", amount=0.5)
    mask = net.fc.weight_mask.clone()
    recalibrate_batchnorm(net, torch.randn(64, 6), batches=2, batch_size=32)
    assert torch.equal(net.fc.weight_mask, mask)
    assert torch.equal(net.fc.weight == 0, mask == 0)


def test_pruned_zoo_model_recovers_accuracy(digits):
    import xprune_nb as xp
    from xprune_nb.measure.metrics import evaluate_model

    study = xp.Study(xp.zoo.load("digits_resnet"), digits, seed=0, probe_size=10)
    study.score("taylor", granularity="channel", samples=128)
    study.prune(0.3, recalibrate=False)   # the raw pruned model, as before this module existed
    model = copy.deepcopy(study.model)
    before = evaluate_model(model, study.data, study.forward, latency=False)
    report = recalibrate_batchnorm(model, study.data.train.X, forward=study.forward)
    after = evaluate_model(model, study.data, study.forward, latency=False)
    assert set(report.layers) == set(batchnorm_layers(model))
    assert after.accuracy > before.accuracy + 0.2   # measured: about 0.12 -> 0.87
    assert after.params == before.params and after.macs == before.macs


def test_an_iterable_of_batches_is_read_up_to_the_sample_bound(net):
    """A user's loader (tuples, dicts or tensors) is iterated as it comes, at most ``samples``
    examples; the statistics are the plain mean of the per-batch ones (momentum=None)."""
    X = torch.randn(40, 6)
    seen = []

    def loader():
        for i in range(0, 40, 8):
            seen.append(i)
            yield X[i:i + 8], torch.zeros(8, dtype=torch.long)

    report = recalibrate_batchnorm(net, loader(), samples=20)
    assert (report.examples, report.batches) == (20, 3) and seen == [0, 8, 16]
    feats = net.fc(X[:20]).detach()
    means = torch.stack([feats[a:b].mean(0) for a, b in ((0, 8), (8, 16), (16, 20))])
    assert torch.allclose(net.bn.running_mean, means.mean(0), atol=1e-6)
    assert net.bn.momentum == 0.1                    # restored after the cumulative pass
    # a mapping batch reaches the forward as it is
    got = []
    recalibrate_batchnorm(net, [{"x": X[:4]}], forward=lambda m, b: got.append(b) or m(b["x"]))
    assert set(got[0]) == {"x"}
