"""Real attention-head removal: SDPAttention as an exact nn.MultiheadAttention, head discovery
across attention styles, remove_heads from plain-data plans, gates, magnitudes and true MACs."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from xprune_nb.core.errors import ModelError, PruneError
from xprune_nb.measure.metrics import count_macs
from xprune_nb.models.mechanisms.attention import (
    SDPAttention,
    check_head_plan,
    convert_mha,
    find_heads,
    head_gates,
    head_magnitude,
    remove_heads,
)


def _params(model):
    return sum(p.numel() for p in model.parameters())


def _call(module, x):
    return module(x)


class FusedAttention(nn.Module):
    """timm-style attention: one fused qkv layer laid out (q|k|v, head, head_dim)."""

    def __init__(self, dim=16, num_heads=4):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, -1))


class FusedHardCoded(FusedAttention):
    """Like timm before 0.9: the output reshape hard-codes the model width."""

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(*qkv.unbind(0))
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class GroupedQuery(nn.Module):
    def __init__(self):
        super().__init__()
        self.num_heads, self.num_key_value_heads = 4, 2
        self.q_proj, self.k_proj = nn.Linear(16, 16), nn.Linear(16, 8)
        self.v_proj, self.o_proj = nn.Linear(16, 8), nn.Linear(16, 16)


class NoHeadCount(nn.Module):
    def __init__(self):
        super().__init__()
        self.query, self.key, self.value = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 8)


# ---------------------------------------------------------------- SDPAttention == MHA

@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("case", ["plain", "no_weights", "padding", "bool_mask", "head_mask",
                                  "float_masks", "per_head_weights"])
def test_sdpa_equals_mha(batch_first, case):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(16, 4, batch_first=batch_first).eval()
    sdpa = SDPAttention.from_mha(mha).eval()
    n, length, src = 3, 5, 7
    q = torch.randn(n, length, 16)
    kv = torch.randn(n, src, 16)
    if not batch_first:
        q, kv = q.transpose(0, 1), kv.transpose(0, 1)
    pad = torch.rand(n, src) > 0.7
    pad[:, 0] = False
    bool_mask = torch.rand(length, src) > 0.8
    bool_mask[:, 0] = False
    kwargs = {
        "plain": {},
        "no_weights": {"need_weights": False},
        "padding": {"key_padding_mask": pad},
        "bool_mask": {"attn_mask": bool_mask, "key_padding_mask": pad, "need_weights": False},
        "head_mask": {"attn_mask": torch.randn(n * 4, length, src)},
        "float_masks": {"attn_mask": torch.randn(length, src),
                        "key_padding_mask": pad.float() * -1e4},
        "per_head_weights": {"average_attn_weights": False, "key_padding_mask": pad},
    }[case]
    with torch.no_grad():
        expected, expected_w = mha(q, kv, kv, **kwargs)
        got, got_w = sdpa(q, kv, kv, **kwargs)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-5)
    if expected_w is None:
        assert got_w is None
    else:
        assert torch.allclose(got_w, expected_w, atol=1e-5)


def test_sdpa_unbatched_causal_and_separate_kv_dims():
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(16, 4, kdim=6, vdim=10).eval()
    sdpa = SDPAttention.from_mha(mha)
    q, k, v = torch.randn(5, 16), torch.randn(5, 6), torch.randn(5, 10)
    mask = nn.Transformer.generate_square_subsequent_mask(5)
    with torch.no_grad():
        a = mha(q, k, v, attn_mask=mask, is_causal=True)
        b = sdpa(q, k, v, attn_mask=mask, is_causal=True)
    assert torch.allclose(a[0], b[0], atol=1e-5) and torch.allclose(a[1], b[1], atol=1e-5)


def test_sdpa_rejects_bias_kv():
    with pytest.raises(ModelError, match="add_bias_kv"):
        SDPAttention.from_mha(nn.MultiheadAttention(8, 2, add_bias_kv=True))


def test_convert_mha_in_encoder_layers_and_nested_padding():
    torch.manual_seed(0)
    encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 4, 32, batch_first=True),
                                    2).eval()
    original = copy.deepcopy(encoder)
    assert convert_mha(encoder) == ["layers.0.self_attn", "layers.1.self_attn"]
    assert all(isinstance(layer.self_attn, SDPAttention) for layer in encoder.layers)
    x = torch.randn(3, 6, 16)
    pad = torch.zeros(3, 6, dtype=torch.bool)
    pad[0, 4:] = True
    with torch.no_grad():   # the original takes its fused fast path (nested tensors) here
        assert torch.allclose(encoder(x), original(x), atol=1e-5)
        got, ref = encoder(x, src_key_padding_mask=pad), original(x, src_key_padding_mask=pad)
    assert torch.allclose(got[~pad], ref[~pad], atol=1e-5)
    encoder.train()
    encoder(x).sum().backward()    # trains through the replacement
    assert encoder.layers[0].self_attn.q_proj.weight.grad is not None


# ---------------------------------------------------------------- discovery

def test_find_heads_styles_and_reasons():
    model = nn.ModuleDict({
        "mha": nn.MultiheadAttention(16, 4), "sdpa": SDPAttention(16, 2),
        "fused": FusedAttention(), "single": nn.MultiheadAttention(16, 1),
        "gqa": GroupedQuery(), "nocount": NoHeadCount(),
        "biaskv": nn.MultiheadAttention(16, 4, add_bias_kv=True),
    })
    groups, skipped = find_heads(model)
    assert [(g.name, g.kind, g.num_heads) for g in groups] == [
        ("mha", "mha", 4), ("sdpa", "sdpa", 2), ("fused", "fused_qkv", 4)]
    assert groups[2].out_proj == "fused.proj"
    assert "single head" in skipped["single"]
    assert "grouped-query" in skipped["gqa"]
    assert "head-count attribute" in skipped["nocount"]
    assert "add_bias_kv" in skipped["biaskv"]
    assert find_heads(nn.Linear(3, 3)) == ([], {})


def test_find_heads_executed_filter():
    layer = nn.TransformerEncoderLayer(16, 4, 32)
    groups, skipped = find_heads(layer, executed=set())
    assert groups == [] and skipped == {"self_attn": "never runs in the model's forward"}


# ---------------------------------------------------------------- removal

def _reference_without(module: SDPAttention, heads: list[int]) -> SDPAttention:
    """The same module with the heads' output-projection columns zeroed: removal must match."""
    ref = copy.deepcopy(module)
    with torch.no_grad():
        for h in heads:
            ref.out_proj.weight[:, h * module.head_dim:(h + 1) * module.head_dim] = 0
    return ref


def test_remove_heads_is_exact_and_shrinks():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 4, 32, batch_first=True).eval()
    x = torch.randn(2, 5, 16)
    converted = copy.deepcopy(layer)
    convert_mha(converted)
    reference = copy.deepcopy(converted)
    reference.self_attn = _reference_without(converted.self_attn, [1, 2])
    params = _params(layer)
    assert remove_heads(layer, {"self_attn": [2, 1]}) == {"self_attn": [1, 2]}
    attn = layer.self_attn
    assert isinstance(attn, SDPAttention) and attn.num_heads == 2 and attn.head_ids == (0, 3)
    assert attn.q_proj.weight.shape == (8, 16) and attn.out_proj.weight.shape == (16, 8)
    assert attn.out_proj.in_features == 8
    assert _params(layer) == params - 2 * (3 * (4 * 16 + 4) + 16 * 4)
    with torch.no_grad():
        assert torch.allclose(layer(x), reference(x), atol=1e-5)
    # a second removal indexes the heads that are left
    remove_heads(layer, {"self_attn": [0]})
    assert layer.self_attn.head_ids == (3,)
    # a 3-D mask written for the original four heads still applies to the remaining one
    mask = torch.randn(2 * 4, 5, 5)
    assert layer.self_attn(x, x, x, attn_mask=mask)[0].shape == x.shape


def test_plan_replays_on_fresh_copy():
    torch.manual_seed(0)
    original = nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 4, 32, batch_first=True),
                                     3, enable_nested_tensor=False).eval()
    a, b = copy.deepcopy(original), copy.deepcopy(original)
    plan = remove_heads(a, {"layers.0.self_attn": [0], "layers.2.self_attn": [1, 3]})
    remove_heads(b, plan)
    assert {k: v.shape for k, v in a.state_dict().items()} == \
        {k: v.shape for k, v in b.state_dict().items()}
    x = torch.randn(2, 4, 16)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


@pytest.mark.parametrize(("plan", "match"), [
    ({"self_attn": [0, 1, 2, 3]}, "every head of 'self_attn'"),
    ({"self_attn": [4]}, "distinct indices in \\[0, 4\\)"),
    ({"self_attn": [1, 1]}, "distinct indices"),
    ({"linear1": [0]}, "cannot remove heads of 'linear1'"),
    ({"self_attn": "ab"}, "must be integers"),
    ([("self_attn", [0])], "expected a dict"),
])
def test_bad_plans_leave_model_unchanged(plan, match):
    layer = nn.TransformerEncoderLayer(16, 4, 32)
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    with pytest.raises(PruneError, match=match):
        remove_heads(layer, plan)
    assert isinstance(layer.self_attn, nn.MultiheadAttention)
    assert all(torch.equal(before[k], v) for k, v in layer.state_dict().items())


def test_single_head_layer_named_in_error():
    model = nn.ModuleDict({"only": nn.MultiheadAttention(8, 1)})
    with pytest.raises(PruneError, match="'only'.*single head"):
        check_head_plan(model, {"only": []})


def test_fused_qkv_removal_and_hard_coded_width():
    torch.manual_seed(0)
    attn = FusedAttention().eval()
    x = torch.randn(2, 5, 16)
    with head_gates(attn, values={"": torch.tensor([1.0, 0.0, 1.0, 1.0])}):
        gated = attn(x)
    remove_heads(attn, {"": [1]})
    assert attn.num_heads == 3 and attn.qkv.out_features == 36 and attn.proj.in_features == 12
    assert torch.allclose(attn(x), gated, atol=1e-6)
    hard = FusedHardCoded()
    remove_heads(hard, {"": [1]})   # the surgery is exact, but this forward cannot follow it
    with pytest.raises(RuntimeError):
        hard(x)


def test_removal_keeps_pruning_masks():
    from torch.nn.utils import prune

    attn = SDPAttention(8, 2, batch_first=True)
    prune.l1_unstructured(attn.q_proj, "weight", amount=0.5)
    mask = attn.q_proj.weight_mask.clone()
    remove_heads(attn, {"": [0]})
    assert torch.equal(attn.q_proj.weight_mask, mask[4:])
    assert attn(torch.randn(1, 3, 8), torch.randn(1, 3, 8), torch.randn(1, 3, 8))[0].shape == \
        (1, 3, 8)
    assert torch.equal(attn.q_proj.weight, attn.q_proj.weight_orig * attn.q_proj.weight_mask)


# ---------------------------------------------------------------- scores

def test_head_magnitude_by_hand():
    torch.manual_seed(0)
    attn = SDPAttention(8, 2)
    mag = head_magnitude(attn)[""]
    rows = slice(4, 8)
    expected = sum(p[rows].pow(2).sum() for p in (
        attn.q_proj.weight, attn.q_proj.bias, attn.k_proj.weight, attn.k_proj.bias,
        attn.v_proj.weight, attn.v_proj.bias)) + attn.out_proj.weight[:, rows].pow(2).sum()
    assert mag[1].item() == pytest.approx(expected.sqrt().item(), rel=1e-5)
    mha_mag = head_magnitude(nn.MultiheadAttention(8, 2))[""]
    assert mha_mag.shape == (2,) and torch.all(mha_mag > 0)


@pytest.mark.parametrize("convert", [False, True])
def test_gate_gradient_matches_finite_difference(convert):
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 4, 32, batch_first=True, norm_first=True).eval()
    if convert:
        convert_mha(layer)
    x = torch.randn(2, 5, 16)
    with head_gates(layer) as gates:
        layer(x).pow(2).sum().backward()
    grad = gates["self_attn"].grad

    def objective(scale):
        values = torch.ones(4)
        values[2] = scale
        with torch.no_grad(), head_gates(layer, values={"self_attn": values}):
            return layer(x).pow(2).sum().item()

    eps = 1e-2
    fd = (objective(1 + eps) - objective(1 - eps)) / (2 * eps)
    assert grad[2].item() == pytest.approx(fd, rel=1e-3, abs=1e-4)
    # a zero gate is the removal itself
    values = torch.tensor([1.0, 1.0, 0.0, 1.0])
    with torch.no_grad(), head_gates(layer, values={"self_attn": values}):
        gated = layer(x)
    remove_heads(layer, {"self_attn": [2]})
    with torch.no_grad():
        assert torch.allclose(layer(x), gated, atol=1e-5)


# ---------------------------------------------------------------- MACs

def _attention_hand_count(n, length, dim, heads, ffn=0):
    head_dim = dim // heads
    projections = 4 * n * length * dim * dim
    products = 2 * n * heads * length * length * head_dim    # QK^T and AV
    return projections + products + 2 * n * length * dim * ffn


def test_macs_hand_count_every_path():
    torch.manual_seed(0)
    n, length, dim, heads = 2, 8, 32, 4
    x = torch.randn(n, length, dim)
    mha = nn.MultiheadAttention(dim, heads, batch_first=True)
    expected = _attention_hand_count(n, length, dim, heads)
    for need_weights in (True, False):     # math path / SDPA kernel
        assert count_macs(mha, x, lambda m, t, w=need_weights: m(t, t, t, need_weights=w)[0]) \
            == expected
    sdpa = SDPAttention.from_mha(mha)
    assert count_macs(sdpa, x, lambda m, t: m(t, t, t, need_weights=False)[0]) == expected
    layer = nn.TransformerEncoderLayer(dim, heads, 64, batch_first=True)   # fused fast path
    assert count_macs(layer, x, _call) == _attention_hand_count(n, length, dim, heads, ffn=64)
    assert torch.backends.mha.get_fastpath_enabled()    # restored afterwards


def test_macs_fall_with_heads():
    torch.manual_seed(0)
    model = nn.TransformerEncoder(nn.TransformerEncoderLayer(32, 4, 64, batch_first=True), 2,
                                  enable_nested_tensor=False)
    x = torch.randn(1, 8, 32)
    before = count_macs(model, x, _call)
    remove_heads(model, {"layers.0.self_attn": [0, 1]})
    after = count_macs(model, x, _call)
    removed_per_head = 4 * 8 * 32 * 8 + 2 * 8 * 8 * 8
    assert after == before - 2 * removed_per_head


# ---------------------------------------------------------------- Hugging Face / LeViT

@pytest.fixture(scope="module")
def hf():
    return pytest.importorskip("transformers")


def _hf_vit(hf):
    config = hf.ViTConfig(image_size=32, patch_size=8, hidden_size=48, num_hidden_layers=2,
                          num_attention_heads=6, intermediate_size=96, num_labels=10)
    torch.manual_seed(0)
    return hf.ViTForImageClassification(config).eval()


def _hf_bert(hf):
    config = hf.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2,
                           num_attention_heads=4, intermediate_size=64, num_labels=3)
    torch.manual_seed(0)
    return hf.BertForSequenceClassification(config).eval()


def _hf_levit(hf):
    config = hf.LevitConfig(image_size=32, patch_size=16, hidden_sizes=[32, 48, 64],
                            num_attention_heads=[2, 3, 4], depths=[1, 1, 1], key_dim=[8, 8, 8],
                            num_labels=10)
    torch.manual_seed(0)
    return hf.LevitForImageClassification(config).eval()


@pytest.mark.parametrize("arch", ["vit", "bert", "levit"])
def test_hugging_face_heads(hf, arch):
    model = {"vit": _hf_vit, "bert": _hf_bert, "levit": _hf_levit}[arch](hf)
    x = torch.randint(0, 50, (2, 7)) if arch == "bert" else torch.randn(2, 3, 32, 32)
    groups, skipped = find_heads(model)
    assert groups and {g.kind for g in groups} == {"levit" if arch == "levit" else "hf"}
    if arch == "levit":   # the subsampling attention blocks are named with their reason
        assert skipped and all("subsampling" in why for why in skipped.values())
    target = groups[-1]
    if arch == "bert":
        assert target.out_proj.endswith("attention.output.dense")
    values = torch.ones(target.num_heads)
    values[0] = 0

    def forward(m, t):
        return m(t).logits

    with torch.no_grad(), head_gates(model, values={target.name: values}):
        gated = forward(model, x)
    params, macs = _params(model), count_macs(model, x, forward)
    remove_heads(model, {target.name: [0]})
    with torch.no_grad():
        assert torch.allclose(forward(model, x), gated, atol=1e-5)
    assert _params(model) < params and count_macs(model, x, forward) < macs
    module = model.get_submodule(target.name)
    count = module.num_attention_heads
    assert count == target.num_heads - 1
    if arch == "bert":
        assert module.all_head_size == count * module.attention_head_size


def test_hugging_face_macs_hand_count(hf):
    model = _hf_vit(hf)
    layer = model.vit.layers[0]
    tokens = torch.randn(2, 17, 48)
    expected = _attention_hand_count(2, 17, 48, 6)
    assert count_macs(layer.attention, tokens, lambda m, t: m(t)[0]) == expected


# ---------------------------------------------------------------- criteria helpers

class _Ctx:
    """The parts of a scoring context the gate helpers read."""

    def __init__(self, model, layers, x, y):
        self.model, self.layers, self.x, self.y = model, layers, x, y

    def forward(self, model, x):
        return model(x)

    def batches(self):
        yield self.x[:3], self.y[:3]
        yield self.x[3:], self.y[3:]


class _Classifier(nn.Module):
    def __init__(self, attention):
        super().__init__()
        self.attn, self.head = attention, nn.Linear(16, 3)

    def forward(self, x):
        return self.head(self.attn(x, x, x, need_weights=False)[0].mean(1))


@pytest.mark.parametrize("convert", [False, True])
def test_per_example_gates_are_gate_derivatives(convert):
    from xprune_nb.models.mechanisms.attention.gates import head_norms, per_example_head_gates

    torch.manual_seed(0)
    model = _Classifier(nn.MultiheadAttention(16, 4, batch_first=True)).eval()
    if convert:
        convert_mha(model)
    x, y = torch.randn(5, 6, 16), torch.tensor([0, 1, 2, 0, 1])
    ctx = _Ctx(model, {"attn": model.attn}, x, y)
    gates = per_example_head_gates(ctx, target="loss")["attn"]
    assert gates.shape == (5, 4)
    for example in (0, 4):
        with head_gates(model) as g:
            F.cross_entropy(model(x[example:example + 1]), y[example:example + 1],
                            reduction="sum").backward()
        assert torch.allclose(gates[example].float(), g["attn"].grad, atol=1e-5)
    assert torch.allclose(head_norms(ctx)["attn"], head_magnitude(model)["attn"])
