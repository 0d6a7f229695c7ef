"""Relevance-flow maps (Study.pathways): hand-computed edges, conservation on an MLP, a residual
CNN and a transformer's heads, removed units, views, comparisons and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import no_hooks
from torch import nn

import xprune_nb as xp
from xprune_nb.core.errors import ConfigError, ModelError, StoppedError
from xprune_nb.explain.pathways import NodeSpec, compute_flow


def _bias_free_mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 5, bias=False), nn.ReLU(), nn.Linear(5, 4, bias=False),
                         nn.ReLU(), nn.Linear(4, 3, bias=False))


def _tensors(n_in=6, k=3, n=60, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, n_in, generator=g)
    return x, torch.arange(n) % k


def test_mlp_edges_equal_a_hand_computation():
    net = _bias_free_mlp()
    x, _ = _tensors()
    x = x[:7]
    specs = [NodeSpec("0", "0", "out", 5), NodeSpec("2", "2", "out", 4),
             NodeSpec("4", "4", "out", 3)]
    got = compute_flow(net, lambda m, v: m(v), specs, {2: x}, epsilon=1e-9)[2]
    with torch.no_grad():
        a1 = torch.relu(net[0](x))
        a2 = torch.relu(net[2](a1))
        z2, z3 = net[2](a1), net[4](a2)
        # a unit with z = 0 has a = 0 in every connection: divide safely
        z2, z3 = (torch.where(z == 0, torch.ones_like(z), z) for z in (z2, z3))
        r3 = torch.zeros_like(z3)
        r3[:, 2] = z3[:, 2]
        # epsilon rule, one connection at a time: a_i w_ji R_j / z_j
        e23 = (a2[:, :, None] * net[4].weight.t()[None] * (r3 / z3)[:, None, :])
        r2 = e23.sum(2)
        e12 = (a1[:, :, None] * net[2].weight.t()[None] * (r2 / z2)[:, None, :])
    assert np.abs(got.edges[("2", "4")] - e23.sum(0).numpy()).max() <= 1e-5
    assert np.abs(got.edges[("0", "2")] - e12.sum(0).numpy()).max() <= 1e-5
    assert np.allclose(got.relevance["2"], r2.sum(0).numpy(), atol=1e-5)


def test_mlp_conservation_without_biases():
    x, y = _tensors()
    study = xp.Study(_bias_free_mlp(), train=(x, y), val=(x, y), test=(x, y))
    p = study.pathways(classes=[0, 1])
    table = p.conservation()
    assert p.conserved
    assert np.allclose(table["bias_share"], 0, atol=1e-4)
    inner = table[table["layer"] != "0"]
    assert np.allclose(inner["flow_share"], 1, atol=1e-4)     # flow into the layer
    assert np.allclose(table.dropna(subset=["out_share"])["out_share"], 1, atol=1e-4)
    for c in (0, 1):    # every column carries the whole logit
        for layer in p.layers:
            assert np.nansum(p.relevance[c][layer]) == pytest.approx(p.logits[c], rel=1e-4)
    assert no_hooks(study.model)


def test_residual_cnn_channels_match_zennit_and_show_the_skip_share(small_digits):
    from conftest import make_study

    from xprune_nb.models.mechanisms.lrp import LRPRunner

    study = make_study("residual", small_digits)
    p = study.pathways(classes=[3], samples=4)
    table = p.conservation()
    assert p.conserved, table
    # the layer after the first residual addition gets part of its flow through the skip
    assert (table["skip_share"].abs() > 1e-3).any()
    # the layer-wise pass is the usual LRP pass: the same relevance reaches every column
    x = study.data.test.X[study.data.test.y == 3][:4]
    q = study.pathways(classes=[3], inputs=x)
    runner = LRPRunner(study.model, study.forward)
    names = [n for n in q.layers if n != "head"]
    out = runner.run(x, torch.full((len(x),), 3), layers=names)
    for name in names:
        ref = out.layer_relevance[name][0].sum(dim=(0, 2, 3)).double().numpy()
        assert np.allclose(q.relevance[3][name], ref, rtol=1e-4, atol=1e-5), name


class _BiasFreeViT(nn.Module):
    """Two pre-norm blocks without biases or positional embedding: relevance is conserved."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(8, 16, bias=False)
        self.blocks = nn.ModuleList()
        for _ in range(2):
            block = nn.Module()
            block.norm1 = nn.LayerNorm(16, bias=False)
            block.attn = nn.MultiheadAttention(16, 4, bias=False, batch_first=True)
            block.norm2 = nn.LayerNorm(16, bias=False)
            block.fc1 = nn.Linear(16, 24, bias=False)
            block.act = nn.ReLU()
            block.fc2 = nn.Linear(24, 16, bias=False)
            self.blocks.append(block)
        self.head = nn.Linear(16, 10, bias=False)

    def forward(self, x):
        t = self.embed(x.reshape(x.shape[0], 8, 8))
        for b in self.blocks:
            h = b.norm1(t)
            t = t + b.attn(h, h, h, need_weights=False)[0]
            t = t + b.fc2(b.act(b.fc1(b.norm2(t))))
        return self.head(t.mean(dim=1))


def test_vit_heads_flow_through_the_residual_stream(small_digits):
    torch.manual_seed(0)
    study = xp.Study(_BiasFreeViT(), **small_digits)
    p = study.pathways(classes=[1], samples=4)
    assert p.granularity == "head"
    assert p.layers == ["blocks.0.attn", "blocks.1.attn", "head"]
    table = p.conservation().set_index("layer")
    assert p.conserved, table
    assert np.allclose(table[["bias_share", "between_share"]], 0, atol=1e-4)
    # heads of block 1 send relevance to the heads of block 0 through the stream, and the rest
    # of what reaches block 1's heads goes straight to the input by the residual connection
    edges = p.edges[1][("blocks.0.attn", "blocks.1.attn")]
    assert edges.shape == (4, 4) and np.abs(edges).sum() > 0
    row = table.loc["blocks.1.attn"]
    assert row["flow_share"] + row["input_share"] == pytest.approx(1, abs=1e-4)
    assert p.relevance[1]["blocks.0.attn"].shape == (4,)


def test_removed_units_carry_no_flow_after_the_prune():
    x, y = _tensors()
    study = xp.Study(_bias_free_mlp(), train=(x, y), val=(x, y), test=(x, y))
    study.score("magnitude")
    step = study.prune(0.4)
    p = study.pathways(classes=[0])
    nodes, edges = p.to_frame()
    gone = nodes[~nodes["kept"]]
    assert len(gone) == sum(len(v) for v in step.removed.values()) > 0
    assert (gone["removed_at"] == step.index).all() and gone["relevance"].isna().all()
    assert gone["reason"].str.contains("removed at step").all()
    for row in gone.itertuples():
        touching = edges[((edges.from_layer == row.layer) & (edges.from_unit == row.unit))
                         | ((edges.to_layer == row.layer) & (edges.to_unit == row.unit))]
        assert touching.empty
    assert p.conserved
    # the original map names the same units: kept ones line up with their original indices
    before = study.pathways(step=0, classes=[0])
    assert before.sizes == p.sizes


def test_removed_heads_carry_no_flow(small_digits):
    from conftest import make_study

    study = make_study("transformer", small_digits)
    study.score("magnitude", granularity="head")
    study.prune(0.5, scope="layer")
    p = study.pathways(classes=[2], samples=3, granularity="head")
    gone = p.removed_at["attn"]
    assert len(gone) == 1
    head = next(iter(gone))
    assert np.isnan(p.relevance[2]["attn"][head])
    assert np.all(p.edges[2][("attn", "head")][head] == 0)


def test_compare_views_and_exports(tmp_path):
    study = xp.Study(xp.zoo.load("toy_mlp"), xp.datasets.load("moons"))
    study.score("lrp")
    study.prune(0.5)
    study.retrain(epochs=1, progress=False)
    comp = study.pathways_compare(0, -1, samples=4)
    frame = comp.to_frame()
    assert list(frame["class"]) == list(study.data.class_names)
    assert frame["cut_share"].between(0, 1).all() and frame["retrained"].all()
    assert all(s.startswith("Class ") for s in comp.sentences())
    assert set(comp.paths()["change"]) <= {"cut", "taken up"}
    p = comp.after
    fig = p.plot(cls=0, top=5, edges=10)
    fig.savefig(tmp_path / "map.svg")
    assert (tmp_path / "map.svg").read_text().startswith("<?xml")
    page = p.save_html(tmp_path / "map.html").read_text()
    assert "<svg" in page and "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    assert "removed at step 1" in page
    assert "xpw-class" in p._repr_html_() and comp._repr_html_().count("<li>") == 2
    small = study.pathways(classes=[0], top=3)
    nodes, _ = small.to_frame()
    assert nodes.groupby("layer")["relevance"].count().max() <= 3
    assert nodes["reason"].str.contains("top 3").any()


def test_lstm_is_refused_with_the_reason():
    class LSTMNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(8, 6, batch_first=True)
            self.head = nn.Linear(6, 3)

        def forward(self, x):
            return self.head(self.lstm(x.reshape(len(x), 8, 8))[0][:, -1])

    x, y = torch.randn(30, 64), torch.arange(30) % 3
    study = xp.Study(LSTMNet(), train=(x, y), val=(x, y), test=(x, y))
    with pytest.raises(ModelError, match="recurrent layers.*LSTM/GRU"):
        study.pathways(classes=[0])


def test_bad_input_and_stop_leave_the_study_unchanged():
    study = xp.Study(xp.zoo.load("toy_mlp"), xp.datasets.load("moons"))
    before = len(study.history)
    with pytest.raises(ConfigError, match=r"Study.pathways\(classes=...\)"):
        study.pathways(classes=[7])
    with pytest.raises(ConfigError, match=r"Study.pathways\(top=...\)"):
        study.pathways(top=0)
    with pytest.raises(ConfigError, match=r"rule"):
        study.pathways(rule="nope")
    with pytest.raises(ConfigError, match=r"granularity"):
        study.pathways(granularity="weight")
    with pytest.raises(ConfigError, match=r"Pathways.plot\(cls=...\)"):
        study.pathways(classes=[0]).plot(cls=1)
    stop = xp.StopSignal()
    stop.set()
    with pytest.raises(StoppedError):
        study.pathways(stop=stop)
    seen = []
    study.pathways(classes=["upper moon"], progress=lambda d, t: seen.append((d, t)))
    assert seen[-1][0] == seen[-1][1]
    assert len(study.history) == before and no_hooks(study.model)


def test_token_ids_end_their_relevance_at_the_input():
    class Tokens(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(20, 8)
            self.fc = nn.Linear(8, 12)
            self.act = nn.ReLU()
            self.head = nn.Linear(12, 3)

        def forward(self, x):
            return self.head(self.act(self.fc(self.emb(x))).mean(1))

    torch.manual_seed(0)
    x, y = torch.randint(0, 20, (45, 5)), torch.arange(45) % 3
    study = xp.Study(Tokens(), train=(x, y), val=(x, y), test=(x, y))
    p = study.pathways(classes=[1], samples=5)
    row = p.conservation().set_index("layer").loc["fc"]
    assert p.conserved and row["between_share"] == 0
    assert row["input_share"] + row["bias_share"] == pytest.approx(1)


def test_a_removed_block_stays_in_its_place_with_its_units_removed(small_digits):
    study = xp.Study(xp.zoo.load("digits_resnet"), **small_digits)
    study.score("magnitude", granularity="block")
    step = study.prune(0.5)
    after = study.pathways(classes=[1], samples=2)
    assert after.layers == study.pathways(step=0, classes=[1], samples=2).layers
    gone = [layer for layer in after.layers
            if len(after.removed_at[layer]) == after.sizes[layer]]
    assert gone and all(set(after.removed_at[g].values()) == {step.index} for g in gone)
    assert not any(g in key for key in after.edges[1] for g in gone)
    assert after.conserved
