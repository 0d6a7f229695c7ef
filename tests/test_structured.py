"""Structured (channel) pruning really shrinks tensors and keeps every architecture valid."""

from __future__ import annotations

import pytest
import torch
from conftest import MODEL_FACTORIES, make_study
from torch import nn

import xprune_nb as xp


@pytest.mark.parametrize("kind", list(MODEL_FACTORIES))
def test_channel_pruning_shrinks_and_keeps_output_shape(kind, small_digits):
    study = make_study(kind, small_digits)
    x = study.data.test.X[:5]
    before_params = study.step.metrics["params"]
    study.score("magnitude", granularity="channel")
    study.prune(0.4)
    out = study.forward(study.model, x)
    assert out.shape == (5, 10)
    assert study.step.metrics["params"] < before_params
    assert study.step.metrics["macs"] < study.history[0].metrics["macs"]


def test_residual_groups_are_coupled(small_digits):
    study = make_study("residual", small_digits)
    scores = study.score("magnitude")
    coupled = [layers for layers in scores.groups.values() if len(layers) > 1]
    # stem and c2 feed the same identity addition: one group removes both
    assert any({"stem", "c2"} <= set(layers) for layers in coupled)
    study.prune(0.5)
    assert study.model.stem.out_channels == study.model.c2.out_channels
    assert study.model.bn.num_features == study.model.stem.out_channels


def test_concat_and_depthwise_stay_consistent(small_digits):
    study = make_study("concat", small_digits)
    study.score("taylor", samples=64)
    study.prune(0.5, scope="layer")
    m = study.model
    assert m.dw.in_channels == m.dw.out_channels == m.dw.groups
    assert m.a.out_channels + m.b.out_channels == m.dw.in_channels
    assert m.grouped.out_channels % m.grouped.groups == 0


def test_transformer_keeps_attention_and_prunes_mlp(small_digits):
    study = make_study("transformer", small_digits)
    scores = study.score("activation", samples=64)
    assert "fc1" in scores.values
    assert not any(k.startswith("attn") for k in scores.values)
    assert "embed" in scores.skipped or "fc2" in scores.skipped
    study.prune(0.5)
    assert study.model.fc1.out_features == 16
    assert study.model.attn.embed_dim == 16


def test_wrapped_library_model_with_hard_coded_heads(small_digits):
    study = make_study("wrapped", small_digits)
    scores = study.score("gradient", samples=64)
    assert "inner.fc1" in scores.values
    assert "inner.attn.qkv" not in scores.values
    study.prune(0.5)
    assert study.model.inner.fc1.out_features == 12
    assert study.forward(study.model, study.data.test.X[:3]).shape == (3, 10)


def test_output_layer_never_pruned(small_digits):
    study = make_study("mlp", small_digits)
    assert study.output_layers == ["head"]
    scores = study.score("magnitude")
    assert "head" not in scores.values
    scores_w = study.score("magnitude", granularity="weight")
    assert "head" not in scores_w.values
    assert "head" in study.score("magnitude", granularity="weight", prune_output=True).values


def test_global_normalisation_vs_raw(small_digits):
    study = make_study("mlp", small_digits)
    study.score("magnitude")
    norm = study.prune(0.5, normalize="mean").removed
    study.undo()
    raw = study.prune(0.5, normalize=None).removed
    assert norm != raw


def test_layer_scope_removes_same_fraction(small_digits):
    study = make_study("mlp", small_digits)
    study.score("taylor", samples=64)
    step = study.prune(0.25, scope="layer")
    assert len(step.removed["fc1"]) == 8 and len(step.removed["fc2"]) == 4


def test_layer_amounts_and_ignore(small_digits):
    study = make_study("mlp", small_digits)
    study.score("magnitude")
    step = study.prune(0.3, layer_amounts={"fc1": 0.5}, ignore=["fc2"])
    assert len(step.removed["fc1"]) == 16
    assert "fc2" not in step.removed
    assert study.model.fc2.out_features == 16


def test_pruned_indices_are_the_lowest_scores(small_digits):
    study = make_study("mlp", small_digits)
    scores = study.score("magnitude")
    step = study.prune(0.25, scope="layer")
    removed = set(step.removed["fc1"])
    order = torch.argsort(scores.values["fc1"])[:8].tolist()
    assert removed == set(order)


def test_attention_projections_are_bound_to_heads_without_a_trial(monkeypatch):
    """On a transformer, the channel groups of q/k/v projections split into several heads are
    bound to heads without a trial (a channel fewer cannot split into equal heads): one trial
    for the other groups instead of one per group, the same safe groups as trying each alone,
    and the reason names the head granularity."""
    transformers = pytest.importorskip("transformers")
    from xprune_nb.pruning import groups as G
    from xprune_nb.pruning.units.channel import _head_projections

    torch.manual_seed(0)
    model = transformers.ViTForImageClassification(transformers.ViTConfig(
        num_labels=4, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
        intermediate_size=48, image_size=16, patch_size=8)).eval()
    x = torch.randn(2, 3, 16, 16)
    forward = lambda m, inp: m(inp).logits  # noqa: E731
    trials = []
    real = G._trial
    monkeypatch.setattr(G, "_trial", lambda m, e, keys, *a, **k: trials.append(keys)
                        or real(m, e, keys, *a, **k))
    heads = _head_projections(model)
    assert len(heads) == 9 and all(n.split(".")[-1] in ("q_proj", "k_proj", "v_proj",
                                                         "query", "key", "value") for n in heads)
    assert set(heads.values()) == {4}                 # each projection's rows: 4 heads
    safe, skipped = G.safe_channel_groups(model, x, ignored=["classifier"], forward=forward,
                                          head_layers=heads)
    assert len(trials) == 1 and not set(trials[0]) & set(heads)
    trials.clear()
    one_by_one, _ = G.safe_channel_groups(model, x, ignored=["classifier"], forward=forward)
    assert len(trials) > 2
    assert [g.key for g in safe] == [g.key for g in one_by_one]
    bound = [k for k, why in skipped.items() if why == G.HEAD_BOUND]
    assert bound and all(k in heads for k in bound)
    assert "granularity='head'" in G.HEAD_BOUND

    study = xp.Study(model, train=(torch.randn(16, 3, 16, 16), torch.arange(16) % 4))
    study.score("magnitude")
    assert study.prune(0.3).metrics["params"] < study.history[0].metrics["params"]


def test_single_head_projections_are_tried_and_kept_when_they_shrink(monkeypatch):
    """A single-head attention whose reshape takes any width can lose a channel: its q/k/v
    groups are tried (together, apart from the others) rather than assumed bound."""
    from xprune_nb.pruning import groups as G
    from xprune_nb.pruning.units.channel import _head_projections

    class OneHead(nn.Module):
        def __init__(self, dim=8):
            super().__init__()
            self.num_heads = 1
            self.q_proj, self.k_proj = nn.Linear(dim, dim), nn.Linear(dim, dim)
            self.v_proj, self.out_proj = nn.Linear(dim, dim), nn.Linear(dim, dim)

        def forward(self, x):
            b, t, _ = x.shape
            q, k, v = (p(x).view(b, t, 1, -1).transpose(1, 2)
                       for p in (self.q_proj, self.k_proj, self.v_proj))
            att = nn.functional.scaled_dot_product_attention(q, k, v)
            return self.out_proj(att.transpose(1, 2).reshape(b, t, -1))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn, self.head = OneHead(), nn.Linear(8, 3)

        def forward(self, x):
            return self.head(self.attn(x).mean(1))

    torch.manual_seed(0)
    model, x = Net().eval(), torch.randn(2, 5, 8)
    heads = _head_projections(model)
    assert heads and set(heads.values()) == {1}
    trials = []
    real = G._trial
    monkeypatch.setattr(G, "_trial", lambda m, e, keys, *a, **k: trials.append(keys)
                        or real(m, e, keys, *a, **k))
    safe, skipped = G.safe_channel_groups(model, x, ignored=["head"], head_layers=heads)
    assert any(set(keys) & set(heads) for keys in trials)   # tried, not assumed
    assert {n for g in safe for n in g.layers} & set(heads)  # and kept: it shrinks fine
    assert G.HEAD_BOUND not in skipped.values()
