"""Dynamic (DyFiP-style) pruning: the split, the sliced paths, routing, rebuild, metrics, errors."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from conftest import TinyConcat, TinyResidual, state_equal
from torch import nn

from xprune_nb.core.errors import ConfigError, DataError
from xprune_nb.models import zoo
from xprune_nb.pruning.dynamic.build import auto_branch_point, build_dynamic
from xprune_nb.pruning.dynamic.eval import (
    compare_dense,
    dense_metrics,
    dynamic_metrics,
    path_channels,
    path_macs,
    path_of,
)
from xprune_nb.pruning.dynamic.net import DynamicNet, dynamic_plan, rebuild_dynamic
from xprune_nb.pruning.dynamic.paths import cluster_subsets, normalise_relevance
from xprune_nb.pruning.dynamic.split import branch_points, run_tail, split_at
from xprune_nb.pruning.dynamic.sweep import per_class_scores, plot_sweep, sweep


def random_scores(model: nn.Module, num_classes: int = 10, seed: int = 0) -> dict:
    """(classes, units) scores per Conv/Linear layer, fixed by ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, m in model.named_modules():
        width = getattr(m, "out_channels", None) or getattr(m, "out_features", None)
        if isinstance(m, (nn.Conv2d, nn.Linear)) and width:
            out[name] = torch.rand(num_classes, width, generator=gen)
    return out


def build(model, data, **kw):
    X, y = data.train.X[:400], data.train.y[:400]
    args = dict(train_X=X, train_y=y, per_class_scores=random_scores(model), k=2, keep=0.5,
                confidence=0.9, epochs=3, finetune=0, max_paths=3, seed=0)
    args.update(kw)
    return build_dynamic(model, **args)


CASES = [("digits_cnn", "pool1"), ("digits_resnet", "layer1"),
         ("digits_resnet", "layer2.conv1"), ("tiny_residual", "act"), ("digits_concat", "stem")]


def make_model(name: str) -> nn.Module:
    if name.startswith("tiny"):
        torch.manual_seed(0)
        return (TinyResidual if name == "tiny_residual" else TinyConcat)().eval()
    return zoo.load(name)


@pytest.mark.parametrize("name,at", CASES)
def test_full_keep_without_exit_equals_dense(digits, name, at):
    model = make_model(name)
    net = build(model, digits, at=at, keep=1.0, confidence=1.0)
    X = digits.test.X[:64]
    with torch.no_grad():
        assert torch.allclose(net(X), model(X), atol=1e-5)
        assert torch.allclose(net(X[:1]), model(X[:1]), atol=1e-5)
    assert net.num_paths == 1  # every subset keeps every channel: one path


@pytest.fixture(scope="module")
def resnet_net(digits):
    return build(zoo.load("digits_resnet"), digits, at="layer1", confidence=0.5, epochs=10)


def test_batch_one_equals_batch_n_with_mixed_routes(digits, resnet_net):
    net, X = resnet_net, digits.test.X[:80]
    with torch.no_grad():
        _, _, exited, path = net.route(X)
        routes = set(torch.where(exited, -1, path).tolist())
        assert len(routes) >= 3 and -1 in routes  # exits and at least two paths
        batch = net(X)
        single = torch.cat([net(X[i:i + 1]) for i in range(len(X))])
    assert torch.allclose(batch, single, atol=1e-5)


def test_grouping_scatters_back_in_order(digits, resnet_net):
    net, X = resnet_net, digits.test.X[:50]
    with torch.no_grad():
        values, logits, exited, path = net.route(X)
        expected = torch.stack([
            logits[i] if exited[i] else run_tail(net.paths[int(path[i])],
                                                 [v[i:i + 1] for v in values])[0]
            for i in range(len(X))])
        assert torch.allclose(net(X), expected, atol=1e-5)
        perm = torch.randperm(len(X), generator=torch.Generator().manual_seed(1))
        assert torch.allclose(net(X[perm]), net(X)[perm], atol=1e-5)


def test_paths_really_have_fewer_channels(digits, resnet_net):
    net, plan = resnet_net, resnet_net.plan
    dense = dict(zoo.load("digits_resnet").named_modules())
    for p, entry in enumerate(plan["paths"]):
        mods = dict(net.paths[p].named_modules())
        for key, kept in entry["kept"].items():
            assert len(kept) == plan["sizes"][key] // 2
            assert mods[key].weight.shape[0] == len(kept) < dense[key].weight.shape[0]
        n_path = sum(t.numel() for t in net.paths[p].parameters())
        n_tail = sum(t.numel() for n, t in zoo.load("digits_resnet").named_parameters()
                     if n.split(".")[0] in ("layer2", "layer3", "head"))
        assert n_path < 0.5 * n_tail
    macs = path_macs(net, digits.test.X[:1])
    dense_macs = dense_metrics(zoo.load("digits_resnet"), digits.test.X[:4],
                               digits.test.y[:4], latency=False)["macs_mean"]
    assert macs["trunk"] + max(macs["paths"]) < 0.75 * dense_macs


def test_rebuild_round_trip(digits, resnet_net):
    net = resnet_net
    net.confidence = 0.7  # changed after building: the plan carries the net's value
    plan = json.loads(json.dumps(dynamic_plan(net)))
    fresh = rebuild_dynamic(zoo.load("digits_resnet"), plan, digits.test.X[:1],
                            state_dict=net.state_dict())
    assert isinstance(fresh, DynamicNet) and fresh.confidence == 0.7
    assert state_equal(fresh.state_dict(), net.state_dict())
    X = digits.test.X[:40]
    with torch.no_grad():
        assert torch.equal(fresh(X), net(X))
    net.confidence = 0.5


def test_rebuild_on_statically_pruned_model(digits):
    from xprune_nb.pruning.groups import apply_channel_plan

    base = zoo.load("digits_resnet")
    apply_channel_plan(base, digits.test.X[:2], {"layer3.conv1": [0, 1, 2, 3]})
    net = build(base, digits, at="layer1", finetune=1,
                per_class_scores=random_scores(base))
    fresh = rebuild_dynamic(base, dynamic_plan(net), digits.test.X[:1],
                            state_dict=net.state_dict())
    with torch.no_grad():
        assert torch.equal(fresh(digits.test.X[:30]), net(digits.test.X[:30]))
    assert base.layer3.conv1.out_channels == 28  # the base model was not touched


def test_deterministic_under_seed(digits):
    a = build(zoo.load("digits_cnn"), digits, at="pool1", finetune=1)
    b = build(zoo.load("digits_cnn"), digits, at="pool1", finetune=1)
    c = build(zoo.load("digits_cnn"), digits, at="pool1", finetune=1, seed=1)
    assert state_equal(a.state_dict(), b.state_dict()) and a.plan == b.plan
    assert not torch.equal(a.branch.fc.weight, c.branch.fc.weight)


def test_max_paths_bounds_clustering():
    gen = torch.Generator().manual_seed(0)
    rel = normalise_relevance({"g": torch.rand(6, 20, generator=gen),
                               "h": torch.rand(6, 12, generator=gen)})
    from collections import Counter
    subsets = Counter({(a, b): 1 + (a * 7 + b) % 5 for a in range(6) for b in range(a + 1, 6)})
    out = cluster_subsets(rel, subsets, 6, 0.5, 3)
    assert 1 <= len(out["paths"]) <= 3
    aff = out["affinity"]
    for row in out["subsets"]:  # each subset sits with the path the runtime rule picks
        assert row["path"] == int(aff[:, row["classes"]].sum(1).argmax())
    few = cluster_subsets(rel, Counter({(0, 1): 3, (2, 3): 1}), 6, 0.5, 3)
    assert [r["path"] for r in few["subsets"]] == [0, 1]  # one path per subset


def test_metrics_and_dense_comparison(digits, resnet_net):
    X, y = digits.test.X[:60], digits.test.y[:60]
    m = dynamic_metrics(resnet_net, X, y, samples=5, repeats=1)
    assert 0 < m["exit_share"] < 1 and m["paths"] == resnet_net.num_paths
    assert m["macs_trunk"] < m["macs_mean"] < m["macs_longest"]
    assert abs(sum(m["path_share"]) + m["exit_share"] - 1) < 1e-6
    assert m["latency_b1_p50_ms"] <= m["latency_b1_p95_ms"] <= m["latency_b1_max_ms"]
    frame = compare_dense(resnet_net, zoo.load("digits_resnet"), X, y, samples=5, repeats=1,
                          batch=8)
    assert list(frame.index) == ["dense", "dynamic"]
    assert frame.loc["dynamic", "macs_longest_ratio"] < 1
    assert frame.loc["dense", "throughput_b8"] > 0


def test_path_of_and_channels(digits, resnet_net):
    X = digits.test.X[:20]
    frame = path_of(resnet_net, X)
    with torch.no_grad():
        _, _, exited, path = resnet_net.route(X)
    assert frame["exited"].tolist() == exited.tolist()
    assert all(p == -1 if e else p == int(q) for p, e, q in
               zip(frame["path"], frame["exited"], path, strict=True))
    chans = path_channels(resnet_net, 0)
    kept = resnet_net.plan["paths"][0]["kept"]
    assert chans.query("kept").groupby("group").size().to_dict() == \
        {g: len(v) for g, v in kept.items()}
    # kept channels are the best-scored ones of each group
    for _, part in chans.groupby("group"):
        assert part.query("kept")["score"].min() >= part.query("not kept")["score"].max()
    with pytest.raises(ConfigError, match="path"):
        path_channels(resnet_net, 99)


def test_branch_points_and_auto(digits):
    model = zoo.load("digits_resnet")
    assert "layer1" in branch_points(model) and "layer2.conv1" in branch_points(model)
    assert auto_branch_point(model, digits.test.X[:1])[0] == "layer1"
    net = build(zoo.load("digits_cnn"), digits, at=None)
    assert net.plan["at"] == "pool1"


class NotTraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 64, 10)

    def forward(self, x):
        h = self.conv(x)
        if h.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
            h = h * 2
        return self.fc(torch.flatten(h, 1))


class NotAClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 1)

    def forward(self, x):
        return self.fc(torch.flatten(x, 1)).squeeze(1)


@pytest.mark.parametrize("kw,param", [
    (dict(at="nope"), "at"), (dict(at="head"), "at"), (dict(at=3), "at"),
    (dict(k=10), "k"), (dict(k=0), "k"), (dict(k=2.0), "k"),
    (dict(confidence=0.0), "confidence"), (dict(confidence=1.5), "confidence"),
    (dict(confidence=True), "confidence"), (dict(keep=0.0), "keep"), (dict(keep=1.2), "keep"),
    (dict(epochs=0), "epochs"), (dict(max_paths=0), "max_paths"), (dict(seed=-1), "seed"),
    (dict(finetune=-1), "finetune"), (dict(per_class_scores={}), "per_class_scores"),
    (dict(per_class_scores={"conv2": torch.rand(3, 32)}), "per_class_scores"),
])
def test_bad_arguments_name_the_parameter(digits, kw, param):
    model = zoo.load("digits_cnn")
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ConfigError, match=rf"\({param}=\.\.\.\)"):
        build(model, digits, **{"at": "pool1", **kw})
    assert state_equal(model.state_dict(), before)


def test_bad_models_and_data(digits):
    # torch.fx cannot trace it, so the hook cut takes over: after conv, only the output layer
    with pytest.raises(ConfigError, match=r"at=\.\.\..*channels to slice"):
        build(NotTraceable(), digits, at="conv", per_class_scores={"conv": torch.rand(10, 8)})
    with pytest.raises(ConfigError, match=r"\(model=\.\.\.\)"):
        build(NotAClassifier(), digits, at="fc", per_class_scores={"fc": torch.rand(10, 1)})
    with pytest.raises(DataError):
        build(zoo.load("digits_cnn"), digits, train_y=digits.train.y[:10])
    with pytest.raises(ConfigError, match=r"\(plan=\.\.\.\)"):
        rebuild_dynamic(zoo.load("digits_cnn"), {"at": "pool1"}, digits.test.X[:1])
    with pytest.raises(ConfigError, match=r"\(at=\.\.\.\)"):
        split_at(zoo.load("digits_cnn"), "")


def test_lrp_scores_and_finetuning_keep_accuracy(digits):
    model = zoo.load("digits_cnn")
    scores = per_class_scores(model, digits.train.X, digits.train.y, samples=100)
    assert scores["conv2"].shape == (10, 32)
    net = build_dynamic(model, train_X=digits.train.X, train_y=digits.train.y,
                        per_class_scores=scores, at="pool1", k=2, keep=0.5, confidence=1.0,
                        epochs=10, finetune=3, max_paths=4)
    X, y = digits.test.X, digits.test.y
    dense = dense_metrics(model, X, y, latency=False)
    m = dynamic_metrics(net, X, y, latency=False)
    assert m["accuracy"] >= dense["accuracy"] - 0.04
    assert m["macs_longest"] < 0.6 * dense["macs_mean"]


def test_sweep_and_plot(digits):
    model = zoo.load("digits_cnn")
    frame = sweep(model, train_X=digits.train.X[:300], train_y=digits.train.y[:300],
                  X=digits.test.X[:60], y=digits.test.y[:60],
                  per_class_scores=random_scores(model), confidence=(0.8, 1.0), k=(2,),
                  keep=(0.5, 1.0), at="pool1", epochs=2, latency=False)
    assert frame["technique"].tolist() == ["dense"] + ["dynamic"] * 4
    dyn = frame[frame["technique"] == "dynamic"]
    assert set(zip(dyn["keep"], dyn["confidence"])) == {(0.5, 0.8), (0.5, 1.0), (1.0, 0.8),
                                                        (1.0, 1.0)}
    full = dyn[(dyn["keep"] == 1.0) & (dyn["confidence"] == 1.0)].iloc[0]
    assert full["accuracy"] == frame.iloc[0]["accuracy"]
    fig, ax = plot_sweep(frame)
    assert ax.get_xlabel() == "macs mean" and len(ax.lines) == 2


def test_cpu_clock_and_bad_clock(digits, resnet_net):
    X, y = digits.test.X[:10], digits.test.y[:10]
    m = dynamic_metrics(resnet_net, X, y, samples=4, repeats=1, clock="cpu")
    assert m["latency_b1_mean_ms"] > 0
    with pytest.raises(ConfigError, match=r"\(clock=\.\.\.\)"):
        dynamic_metrics(resnet_net, X, y, samples=2, repeats=1, clock="gpu")


@pytest.mark.slow
def test_static_row_at_the_same_macs(digits):
    from xprune_nb.ui.compare import static_at_macs

    model = zoo.load("digits_cnn")
    dense = dense_metrics(model, digits.test.X[:50], digits.test.y[:50], latency=False)
    train = (digits.train.X[:200], digits.train.y[:200])
    test = (digits.test.X[:50], digits.test.y[:50])
    row = static_at_macs(model, 0.5 * dense["macs_mean"], train=train, test=test, tries=4,
                         latency=False)
    assert row["technique"] == "static" and 0 < row["amount"] < 0.95
    assert abs(row["macs_mean"] - 0.5 * dense["macs_mean"]) < 0.25 * dense["macs_mean"]


def test_concatenation_and_depthwise_tails_slice_and_run(digits):
    # after TinyConcat's concatenation come a depthwise conv (tied to the trunk's channels)
    # and a grouped conv that cannot lose one channel: nothing to slice, a clear error
    with pytest.raises(ConfigError, match=r"\(at=\.\.\.\).*channels to slice"):
        build(make_model("tiny_concat"), digits, at="act")
    net = build(make_model("digits_concat"), digits, at="stem", finetune=1)
    assert net.plan["sizes"]  # something after the branch point was sliced
    X = digits.test.X[:40]
    with torch.no_grad():
        batch = net(X)
        single = torch.cat([net(X[i:i + 1]) for i in range(len(X))])
    assert batch.shape == (40, 10) and torch.allclose(batch, single, atol=1e-5)


def test_copies_and_weights_only_state_dicts(digits, resnet_net, tmp_path):
    twin = copy.deepcopy(resnet_net)
    X = digits.test.X[:20]
    with torch.no_grad():
        assert torch.equal(twin(X), resnet_net(X))
    torch.save(resnet_net.state_dict(), tmp_path / "net.pt")
    state = torch.load(tmp_path / "net.pt", weights_only=True)
    fresh = rebuild_dynamic(zoo.load("digits_resnet"), dynamic_plan(resnet_net), X[:1],
                            state_dict=state)
    with torch.no_grad():
        assert torch.equal(fresh(X), resnet_net(X))
