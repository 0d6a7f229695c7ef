"""Attention maps, rollout and gradient-weighted relevance (explain/attention.py): fidelity
against direct computations, caller semantics kept, masked heads, bad input, study unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import LibraryModel
from torch import nn

import xprune_nb as xp
from xprune_nb.core.errors import ConfigError
from xprune_nb.explain.attention_compare import attention_maps, compare_attention
from xprune_nb.models import DigitsViT
from xprune_nb.models.mechanisms.attention.maps import (
    attention_relevance,
    attention_rollout,
    capture_attention,
    gradient_weighted_relevance,
    rollout,
    to_input_space,
    token_scores,
)


class TwoLayerMHA(nn.Module):
    """Two nn.MultiheadAttention layers over the 8 rows of an image."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(8, 16)
        self.a1 = nn.MultiheadAttention(16, 4, batch_first=True)
        self.a2 = nn.MultiheadAttention(16, 2, batch_first=True)
        self.head = nn.Linear(16, 10)

    def blocks(self, x):
        t = self.embed(x.reshape(x.shape[0], 8, 8))
        yield self.a1, t
        t = t + self.a1(t, t, t, need_weights=False)[0]
        yield self.a2, t
        t = t + self.a2(t, t, t, need_weights=False)[0]
        yield None, t

    def forward(self, x):
        *_, (_, t) = self.blocks(x)
        return self.head(t.mean(1))


def _direct_rollout(mats):
    """Abnar & Zuidema's definition written out with NumPy loops."""
    n, t = mats[0].shape[0], mats[0].shape[-1]
    out = np.zeros((n, t, t))
    for i in range(n):
        r = np.eye(t)
        for a in mats:
            m = 0.5 * a[i].mean(0) + 0.5 * np.eye(t)
            m = m / m.sum(1, keepdims=True)
            r = m @ r
        out[i] = r
    return out


def test_rollout_equals_direct_computation_from_mha_matrices():
    torch.manual_seed(0)
    model = TwoLayerMHA().eval()
    x = torch.rand(3, 1, 8, 8)
    direct = []
    with torch.no_grad():
        for attn, t in model.blocks(x):
            if attn is not None:
                direct.append(attn(t, t, t, need_weights=True,
                                   average_attn_weights=False)[1].double().numpy())
    rec = capture_attention(model, x)
    assert rec.names == ["a1", "a2"]
    for got, want in zip(rec.attentions, direct):
        np.testing.assert_allclose(got.detach().double().numpy(), want, atol=1e-5)
    np.testing.assert_allclose(rollout(rec.attentions).numpy(), _direct_rollout(direct),
                               atol=1e-5)
    # the model is untouched: still nn.MultiheadAttention, no hooks left
    assert isinstance(model.a1, nn.MultiheadAttention)
    assert not model.a1._forward_hooks and not model.a1._forward_pre_hooks


def test_capture_keeps_what_the_caller_asked_for():
    torch.manual_seed(0)
    model = DigitsViT(depth=2).eval()
    x = torch.rand(2, 1, 8, 8)
    with torch.no_grad():
        plain = model(x)
    rec = capture_attention(model, x, grad=False)
    torch.testing.assert_close(rec.logits, plain)
    attn = model.blocks[0].attn
    seen = []
    handle = attn.register_forward_hook(lambda m, i, o: seen.append(o[1]))
    try:
        capture_attention(model, x, grad=False)
    finally:
        handle.remove()
    assert seen[0] is None            # the block asked need_weights=False and got None
    assert not hasattr(attn, "_xp_wanted")


def test_hf_attentions_and_chefer_relevance_match_direct_autograd():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(vocab_size=30, hidden_size=16, num_hidden_layers=2,
                                  num_attention_heads=4, intermediate_size=32,
                                  max_position_embeddings=16, num_labels=3,
                                  attn_implementation="eager")
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(cfg).eval()
    ids = torch.randint(1, 30, (2, 6))
    targets = torch.tensor([0, 2])
    out = model(ids, output_attentions=True)
    chosen = out.logits.gather(1, targets.view(-1, 1)).sum()
    grads = torch.autograd.grad(chosen, out.attentions)
    want = torch.eye(6, dtype=torch.float64).expand(2, 6, 6)
    for a, g in zip(out.attentions, grads):
        cam = (g * a).clamp(min=0).mean(1).double()
        want = want + cam @ want
    rec = capture_attention(model, ids, lambda m, t: m(t).logits)
    for got, ref in zip(rec.attentions, out.attentions):
        torch.testing.assert_close(got, ref)
    got = attention_relevance(model, ids, targets, forward=lambda m, t: m(t).logits, pool="cls")
    expected = (want - torch.eye(6, dtype=torch.float64))[:, 0].float()
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)
    assert got.dtype == torch.float32 and ids.dtype == torch.long


def test_relevance_formula_on_given_matrices():
    a = torch.rand(1, 2, 3, 3)
    a = a / a.sum(-1, keepdim=True)
    g = torch.randn(1, 2, 3, 3)
    rel = gradient_weighted_relevance([a], [g])
    expected = torch.eye(3, dtype=torch.float64) + (g * a).clamp(min=0).mean(1).double()
    torch.testing.assert_close(rel, expected)


def test_masked_heads_are_left_out_of_rollout():
    torch.manual_seed(0)
    model = DigitsViT(depth=1).eval()
    with torch.no_grad():
        model.blocks[0].attn.v_proj.weight[8:16] = 0      # head 1
        model.blocks[0].attn.v_proj.bias[8:16] = 0
    rec = capture_attention(model, torch.rand(2, 1, 8, 8), grad=False)
    assert rec.active[0].tolist() == [True, False, True, True]
    roll = rollout(rec.attentions, active=rec.active)
    kept = rec.attentions[0][:, [0, 2, 3]].double().mean(1)
    expected = (0.5 * kept + 0.5 * torch.eye(16, dtype=torch.float64))
    torch.testing.assert_close(roll, expected / expected.sum(-1, keepdim=True))


def test_token_scores_map_back_to_patches_with_mass_conserved():
    scores = torch.arange(17, dtype=torch.float64).view(1, 17)      # class token + 4x4 grid
    maps = to_input_space(scores, torch.zeros(1, 1, 8, 8))
    assert maps.shape == (1, 1, 8, 8)
    assert maps.sum().item() == pytest.approx(scores[0, 1:].sum().item())
    assert maps[0, 0, 0, 0].item() == pytest.approx(1 / 4)        # token 1 over 2x2 pixels
    with pytest.raises(ConfigError, match="token_grid"):
        to_input_space(torch.ones(1, 7), torch.zeros(1, 1, 8, 8))
    with pytest.raises(ConfigError, match="pool"):
        token_scores(torch.ones(1, 3, 3), pool="max")


def test_rollout_method_and_relevance_shapes_on_vit():
    torch.manual_seed(0)
    model = DigitsViT(depth=2).eval()
    x = torch.rand(3, 1, 8, 8)
    roll = attention_rollout(model, x)
    assert roll.shape == x.shape
    torch.testing.assert_close(roll.sum((1, 2, 3)), torch.ones(3))
    rel = attention_relevance(model, x, torch.tensor([1, 2, 3]))
    assert rel.shape == x.shape and bool((rel >= 0).all())


def test_model_without_attention_is_refused_clearly():
    with pytest.raises(ConfigError, match=r"method=.*no attention module"):
        attention_relevance(LibraryModel(), torch.rand(2, 1, 8, 8), torch.tensor([0, 1]))


@pytest.fixture(scope="module")
def vit_study():
    torch.manual_seed(0)
    data = xp.datasets.load("digits")
    return xp.Study(DigitsViT(depth=2), data, seed=0, probe_size=8)


def test_study_saliency_attention_relevance_and_unchanged_study(vit_study):
    state = {k: v.clone() for k, v in vit_study.model.state_dict().items()}
    comp = vit_study.saliency(0, 0, method="attention_relevance", n=4)
    assert comp.before.shape == (4, 1, 8, 8)
    np.testing.assert_allclose(comp.spearman, 1.0)
    for k, v in vit_study.model.state_dict().items():
        assert torch.equal(v, state[k])
    assert len(vit_study.history) == 1


def test_attention_comparison_after_head_removal(vit_study):
    from xprune_nb.models.mechanisms.attention import remove_heads

    before = vit_study.model
    after = vit_study.model_at(0)
    remove_heads(after, {"blocks.0.attn": [1, 3]})
    x = vit_study.data.test.X[:3]
    comp = compare_attention(before, after, x, labels=vit_study.data.test.y[:3])
    assert comp.maps_after["blocks.0.attn"].shape[1] == 2
    assert comp.heads_after["blocks.0.attn"] == (0, 2)
    frame = comp.layer_frame()
    assert frame["heads_after"].tolist() == [2, 4]
    assert frame["attention_change"].iloc[0] > 0
    assert frame["attention_change"].iloc[1] >= 0
    assert set(comp.summary()) >= {"agreement", "saliency_rank_correlation", "attention_change"}
    assert "<table" in comp._repr_html_()
    import matplotlib

    matplotlib.use("Agg")
    assert comp.plot(index=1) is not None
    assert comp.plot_heads(which="after") is not None
    with pytest.raises(ConfigError, match="index"):
        comp.plot(index=9)


def test_study_attention_maps_and_bad_steps(vit_study):
    comp = attention_maps(vit_study, 0, 0, inputs=[0, 1], n=2)
    assert len(comp.targets) == 2 and comp.agreement == 1.0
    with pytest.raises(ConfigError, match="after"):
        attention_maps(vit_study, 0, 7)


def _manual_head_terms(model, x, y):
    """TinyTransformer's forward written out, with the attention probabilities as a leaf."""
    attn = model.attn
    t = model.embed(x.reshape(x.shape[0], 8, 8))
    h = model.norm1(t)
    q, k, v = torch.nn.functional.linear(h, attn.in_proj_weight, attn.in_proj_bias).chunk(3, -1)
    heads, d = attn.num_heads, attn.head_dim

    def split(z):
        return z.view(z.shape[0], z.shape[1], heads, d).transpose(1, 2)

    a = torch.softmax(split(q) @ split(k).transpose(-1, -2) / d ** 0.5, -1).detach()
    a.requires_grad_(True)
    mixed = (a @ split(v)).transpose(1, 2).reshape(t.shape)
    t = t + attn.out_proj(mixed)
    t = t + model.fc2(model.act(model.fc1(model.norm2(t))))
    logits = model.head(t.mean(1))
    (g,) = torch.autograd.grad(logits.gather(1, y.view(-1, 1)).sum(), a)
    return (g * a).clamp(min=0).sum((2, 3)).detach().double()


def test_attention_criterion_uses_the_same_relevance():
    from conftest import TinyTransformer

    torch.manual_seed(0)
    data = xp.datasets.load("digits")
    study = xp.Study(TinyTransformer(), data, seed=0, probe_size=8)
    scores = study.score("attention", granularity="head", samples=20, relevance="attention")
    from xprune_nb.pruning.scoring import reference_indices

    idx = reference_indices(data.train.y, 20, None, seed=0, call="test")
    terms = _manual_head_terms(study.model, data.train.X[idx], data.train.y[idx])
    torch.testing.assert_close(scores.values["attn"].double(), terms.mean(0), rtol=1e-4,
                               atol=1e-7)
    assert scores.per_class["attn"].shape == (10, 2)


class TokenAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(12, 16)
        self.layer = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True, dropout=0.0)
        self.head = nn.Linear(16, 3)

    def forward(self, ids):
        return self.head(self.layer(self.embed(ids)).mean(1))


def test_attention_maps_of_token_ids_keep_integers():
    torch.manual_seed(0)
    model = TokenAttention().eval()
    ids = torch.randint(1, 12, (3, 5))
    comp = compare_attention(model, model, ids)
    assert comp.inputs.dtype == np.int64 and comp.scores_before.shape == (3, 5)
    assert list(comp.maps_before) == ["layer.self_attn"]
    np.testing.assert_allclose(comp.spearman, 1.0)
    assert np.isfinite(comp.deletion_before).all()
    rel = attention_relevance(model, ids, torch.tensor([0, 1, 2]))
    assert rel.shape == (3, 5)


def test_study_refuses_attention_methods_without_attention():
    data = xp.datasets.load("digits")
    study = xp.Study(LibraryModel(), data, seed=0, probe_size=8)
    with pytest.raises(ConfigError, match=r"method=.*no attention module"):
        study.saliency(0, 0, method="attention_rollout", n=2)
    # the study's own model: no model= parameter the user never passed (issue 17)
    with pytest.raises(ConfigError, match=r"Study\.attention_maps: the study's model .*no "
                                          "attention module"):
        attention_maps(study, 0, 0, n=2)
    assert len(study.history) == 1


def test_relevance_of_a_masked_model_equals_that_of_the_model_with_heads_removed():
    from xprune_nb.models.mechanisms.attention import remove_heads

    torch.manual_seed(0)
    removed = DigitsViT(depth=2).eval()
    masked = DigitsViT(depth=2).eval()
    masked.load_state_dict(removed.state_dict())
    remove_heads(removed, {"blocks.0.attn": [1], "blocks.1.attn": [0, 3]})
    with torch.no_grad():
        for block, heads in ((0, [1]), (1, [0, 3])):
            attn = masked.blocks[block].attn
            for h in heads:
                for proj in (attn.q_proj, attn.k_proj, attn.v_proj):
                    proj.weight[h * 8:(h + 1) * 8] = 0
                    proj.bias[h * 8:(h + 1) * 8] = 0
    x, t = torch.rand(3, 1, 8, 8), torch.tensor([0, 4, 7])
    torch.testing.assert_close(masked(x), removed(x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(attention_relevance(masked, x, t),
                               attention_relevance(removed, x, t), atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(attention_rollout(masked, x), attention_rollout(removed, x),
                               atol=1e-6, rtol=1e-4)
