"""Token models explained (explain/tokens.py, explain/token_compare.py): ids stay integers,
integrated gradients are complete, Shapley values are efficient (and exact where promised),
highlighted text escapes tokens, float inputs are refused clearly, the study is unchanged."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

import xprune_nb as xp
from xprune_nb.core.errors import ConfigError
from xprune_nb.explain import compare_saliency, compare_shapley
from xprune_nb.explain.token_compare import TokenComparison, highlight_html
from xprune_nb.explain.token_perturb import token_shapley
from xprune_nb.explain.tokens import (
    check_float_inputs,
    embedding_layer,
    token_attribution,
)

VOCAB = 20


class TokenNet(nn.Module):
    """Embedding, one transformer encoder layer, mean pooling, a linear head."""

    def __init__(self, classes: int = 3):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 16)
        self.pos = nn.Embedding(8, 16)
        self.encoder = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True, dropout=0.0)
        self.head = nn.Linear(16, classes)

    def forward(self, ids):
        positions = torch.arange(ids.shape[1]).expand_as(ids)
        h = self.encoder(self.embed(ids) + self.pos(positions))
        return self.head(h.mean(1))


def _data(n=60, length=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (n, length), generator=g)
    y = (ids[:, 0] % 3).long()          # the class is written in the first token
    return ids, y


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return TokenNet().eval()


def test_embedding_found_by_the_forward_pass(net):
    ids, _ = _data(4)
    assert embedding_layer(net, ids) is net.embed      # not the position embedding
    with pytest.raises(ConfigError, match="layer"):
        embedding_layer(net, ids, layer="head")


def test_integrated_gradients_are_complete_and_ids_stay_integers(net):
    ids, _ = _data(4)
    seen = []
    handle = net.embed.register_forward_pre_hook(lambda m, a: seen.append(a[0].dtype))
    try:
        scores, gap = token_attribution(net, ids, torch.tensor([0, 1, 2, 0]),
                                        "integrated_gradients", n_steps=200)
    finally:
        handle.remove()
    assert set(seen) == {torch.long}
    assert scores.shape == (4, 6)
    # completeness computed independently: sum of scores = f(x) - f(zero word embedding)
    rows, target = torch.arange(4), torch.tensor([0, 1, 2, 0])
    with torch.no_grad():
        fx = net(ids)[rows, target]
        handle = net.embed.register_forward_hook(lambda m, a, out: torch.zeros_like(out))
        try:
            fb = net(ids)[rows, target]
        finally:
            handle.remove()
    np.testing.assert_allclose(scores.sum(1), (fx - fb).numpy(), atol=5e-3)
    assert gap.max() < 5e-3
    # baseline_token=id: from a sequence of that token instead
    scores, gap = token_attribution(net, ids, target, "integrated_gradients", n_steps=200,
                                    baseline_token=0)
    with torch.no_grad():
        fb = net(torch.zeros_like(ids))[rows, target]
    np.testing.assert_allclose(scores.sum(1), (fx - fb).numpy(), atol=5e-3)


def test_default_baseline_leaves_no_token_blank(net):
    """Tokens equal to a token baseline get exactly zero; the zero embedding is no word, so
    every token that matters gets a score."""
    ids, _ = _data(4)
    ids[:, ::2] = 0                       # id 0 is an ordinary word of this vocabulary
    target = torch.tensor([0, 1, 2, 0])
    token, _ = token_attribution(net, ids, target, "integrated_gradients", baseline_token=0)
    assert np.all(token[:, ::2] == 0)
    zero, _ = token_attribution(net, ids, target, "integrated_gradients")
    assert np.all(np.abs(zero[:, ::2]) > 0)


def _shapley_by_definition(f, x, base):
    n = len(x)
    phi = np.zeros(n)
    for j in range(n):
        others = [i for i in range(n) if i != j]
        for k in range(n):
            for s in itertools.combinations(others, k):
                w = math.factorial(k) * math.factorial(n - k - 1) / math.factorial(n)
                with_j = [x[i] if i in s or i == j else base for i in range(n)]
                without = [x[i] if i in s else base for i in range(n)]
                phi[j] += w * (f(with_j) - f(without))
    return phi


def test_exact_shapley_matches_the_definition_and_permutation_is_efficient(net):
    ids, _ = _data(2, length=4)

    def f(row):
        with torch.no_grad():
            return float(net(torch.tensor([row]))[0, 1])

    values, base, fx, used = token_shapley(net, ids, explainer="auto")
    assert used == "exact"
    np.testing.assert_allclose(values[0, :, 1], _shapley_by_definition(f, ids[0].tolist(), 0),
                               atol=1e-5)
    perm, base_p, fx_p, used = token_shapley(net, ids, explainer="permutation",
                                             permutations=3, seed=1)
    assert used == "permutation"
    np.testing.assert_allclose(perm.sum(1), fx_p - base_p, atol=1e-5)
    again, *_ = token_shapley(net, ids, explainer="permutation", permutations=3, seed=1)
    np.testing.assert_array_equal(perm, again)


def test_compare_routes_integer_inputs_to_tokens(net):
    ids, y = _data(3)
    comp = compare_saliency(net, net, ids, labels=y, method="integrated_gradients",
                            vocab=[f"w{i}" for i in range(VOCAB)])
    assert isinstance(comp, TokenComparison)
    assert comp.tokens[0][0] == f"w{int(ids[0, 0])}"
    np.testing.assert_allclose(comp.spearman, 1.0)
    assert np.abs(comp.completeness_before).max() < 1e-2
    frame = comp.to_frame()
    assert {"saliency_rank_correlation", "deletion_auc_before", "completeness_after"} <= set(
        frame.columns)
    rel = compare_saliency(net, net, ids, method="attention_relevance")
    assert rel.before.shape == (3, 6)
    shap_comp = compare_shapley(net, net, ids, None, explainer="permutation", permutations=2)
    assert isinstance(shap_comp, TokenComparison)
    assert np.abs(shap_comp.completeness_before).max() < 1e-5


def test_highlighted_text_escapes_tokens():
    out = highlight_html(["<script>", "&"], [0.5, -1.0])
    assert "<script>" not in out and "&lt;script&gt;" in out and "&amp;" in out
    assert "rgba(220,50,47,0.50)" in out and "rgba(38,139,210,1.00)" in out


def test_float_inputs_for_a_token_model_are_refused(net):
    ids, _ = _data(2)
    with pytest.raises(ConfigError, match=r"inputs=.*integer token ids"):
        check_float_inputs(net, ids.float())
    with pytest.raises(ConfigError, match=r"study.saliency\(inputs=.*integer token ids"):
        compare_saliency(net, net, ids.float())
    with pytest.raises(ConfigError, match=r"study.shapley\(inputs=.*integer token ids"):
        compare_shapley(net, net, ids.float(), ids.float())
    with pytest.raises(ConfigError, match="method"):
        compare_saliency(net, net, ids, method="gradcam")


def test_study_on_a_token_model(net):
    ids, y = _data(90)
    study = xp.Study(net, train=(ids[:60], y[:60]), val=(ids[60:75], y[60:75]),
                     test=(ids[75:], y[75:]), seed=0, probe_size=6)
    state = {k: v.clone() for k, v in study.model.state_dict().items()}
    comp = study.saliency(0, 0, method="integrated_gradients", n=4)
    assert isinstance(comp, TokenComparison) and comp.ids.dtype == np.int64
    comp = study.shapley(0, 0, n=2, explainer="exact")
    assert isinstance(comp, TokenComparison)
    with pytest.raises(ConfigError, match="inputs"):
        study.saliency(0, 0, inputs=ids[:2].float())
    assert len(study.history) == 1
    for k, v in study.model.state_dict().items():
        assert torch.equal(v, state[k])
    import matplotlib

    matplotlib.use("Agg")
    assert comp.plot() is not None
    assert "<span" in comp._repr_html_()
