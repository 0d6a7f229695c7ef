"""Saliency comparisons: each method equals a direct captum (or zennit) call, drift metrics are
right on hand-checked cases, and neither model is changed."""

from __future__ import annotations

import subprocess
import sys

import matplotlib
import numpy as np
import pytest
import torch
from torch import nn

from xprune_nb import explain
from xprune_nb.core.errors import ConfigError

matplotlib.use("Agg")
torch.set_num_threads(1)
# direct captum calls below warn that they switch on requires_grad for the input
pytestmark = pytest.mark.filterwarnings("ignore:Input Tensor 0 did not already require")


class TinyCNN(nn.Module):
    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Linear(6 * 4 * 4, 3)

    def forward(self, x):
        return self.head(torch.flatten(self.pool(self.relu2(self.conv2(self.relu1(self.conv1(x))))),
                                       1))


def tiny_mlp(seed: int = 0, bias: bool = True) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 10, bias=bias), nn.ReLU(), nn.Linear(10, 3, bias=bias))


def images(n: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, 8, 8, generator=gen), torch.arange(n) % 3


def unchanged(model: nn.Module, state: dict) -> bool:
    hooks = any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks
                for m in model.modules())
    grads = any(p.grad is not None for p in model.parameters())
    same = all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    return same and not hooks and not grads


@pytest.mark.parametrize("use_abs", [True, False])
def test_gradient_saliency_equals_captum(use_abs):
    from captum.attr import Saliency

    model = TinyCNN()
    x, y = images()
    ours, logits = explain.gradient_saliency(model, x, y, abs=use_abs)
    theirs = Saliency(model).attribute(x, target=y, abs=use_abs)
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(logits, model(x).detach())


def test_integrated_gradients_equals_captum_and_reports_completeness():
    from captum.attr import IntegratedGradients

    model = TinyCNN()
    x, y = images()
    ours, completeness = explain.attribute(model, x, y, "integrated_gradients")
    theirs, delta = IntegratedGradients(model).attribute(x, target=y,
                                                         return_convergence_delta=True)
    np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(completeness, delta.detach().numpy(), rtol=1e-5, atol=1e-7)
    gap = (model(x) - model(torch.zeros_like(x))).gather(1, y[:, None]).squeeze(1)
    # signed, as the glossary says: sum of attributions minus the change of the output
    np.testing.assert_allclose(completeness, ours.reshape(len(x), -1).sum(1)
                               - gap.detach().numpy(), rtol=1e-4, atol=1e-5)
    assert (np.abs(completeness) <= 0.05 * gap.abs().detach().numpy() + 1e-3).all()


def test_gradcam_is_last_conv_upsampled_and_occlusion_equals_captum():
    from captum.attr import LayerAttribution, LayerGradCam, Occlusion

    model = TinyCNN()
    x, y = images()
    cam, _ = explain.attribute(model, x, y, "gradcam")
    direct = LayerAttribution.interpolate(LayerGradCam(model, model.conv2).attribute(x, target=y),
                                          (8, 8))
    np.testing.assert_allclose(cam, direct.expand_as(x).detach().numpy(), rtol=1e-5, atol=1e-7)
    occ, _ = explain.attribute(model, x, y, "occlusion")
    direct = Occlusion(model).attribute(x, target=y, sliding_window_shapes=(1, 2, 2),
                                        strides=(1, 1, 1))
    np.testing.assert_allclose(occ, direct.numpy(), rtol=1e-5, atol=1e-6)


def test_lrp_saliency_conserves_the_target_logit():
    model = tiny_mlp(bias=False)
    x = torch.randn(4, 6)
    y = torch.tensor([0, 1, 2, 0])
    maps, _ = explain.attribute(model, x, y, "lrp")
    logit = model(x).gather(1, y[:, None]).squeeze(1).detach().numpy()
    np.testing.assert_allclose(maps.sum(1), logit, rtol=0.01, atol=1e-5)


# the attention methods need a transformer: tests/test_explain_attention.py covers them
@pytest.mark.parametrize("method", [m for m in explain.METHODS if not m.startswith("attention")])
def test_compare_same_targets_for_both_models_and_models_unchanged(method):
    before, after = TinyCNN(0), TinyCNN(1)
    x, y = images(6)
    states = [{k: v.clone() for k, v in m.state_dict().items()} for m in (before, after)]
    comp = explain.compare_saliency(before, after, x, method=method)
    pred_b = before(x).argmax(1).numpy()
    np.testing.assert_array_equal(comp.targets, pred_b)     # no labels: the first model's call
    np.testing.assert_array_equal(comp.pred_before, pred_b)
    np.testing.assert_array_equal(comp.pred_after, after(x).argmax(1).numpy())
    assert comp.before.shape == comp.after.shape == tuple(x.shape)
    direct, _ = explain.attribute(after, x, torch.as_tensor(pred_b), method)
    np.testing.assert_allclose(comp.after, direct, rtol=1e-5, atol=1e-6)
    assert unchanged(before, states[0]) and unchanged(after, states[1])
    frame = comp.to_frame()
    assert len(frame) == 6 and {"saliency_rank_correlation", "saliency_topk_iou",
                                "deletion_auc_before"} <= set(frame)
    assert "agreement" in comp._repr_html_()
    fig = comp.plot(max_inputs=2)
    assert len(fig.axes) == 8 + 2 * 2   # 4 panels per input, and 2 colour bars each


def test_labels_are_the_targets_and_identical_models_do_not_drift():
    model = tiny_mlp()
    x = torch.randn(7, 6)
    labels = torch.tensor([2, 2, 1, 0, 1, 2, 0])
    comp = explain.compare_saliency(model, model, x, labels=labels, method="integrated_gradients")
    np.testing.assert_array_equal(comp.targets, labels.numpy())
    assert comp.agreement == 1.0
    np.testing.assert_allclose(comp.spearman, 1.0)
    np.testing.assert_allclose(comp.topk_iou, 1.0)
    assert comp.completeness_before is not None
    ax = comp.plot()          # tabular: bars per feature
    assert len(ax.patches) == 12


def test_rank_correlation_matches_scipy_with_ties():
    from scipy.stats import spearmanr

    gen = np.random.default_rng(0)
    a = gen.integers(0, 4, size=(5, 20)).astype(float)      # many ties
    b = a + gen.normal(size=a.shape)
    expected = [spearmanr(ra, rb).statistic for ra, rb in zip(a, b)]
    np.testing.assert_allclose(explain.rank_correlation(a, b), expected, atol=1e-12)
    assert np.isnan(explain.rank_correlation(np.ones((1, 4)), b[:1, :4]))[0]


def test_topk_iou_and_image_maps_use_pixels():
    a = np.zeros((1, 2, 2, 2))
    b = np.zeros((1, 2, 2, 2))
    a[0, 0, 0, 0] = a[0, 1, 0, 0] = 1.0       # pixel (0, 0) in both channels
    b[0, 1, 0, 0] = 3.0
    assert explain.feature_map(a).shape == (1, 4)
    assert explain.topk_iou(a, b, k=0.25).tolist() == [1.0]
    b[0, 1, 0, 0], b[0, 1, 1, 1] = 0.0, 3.0
    assert explain.topk_iou(a, b, k=0.25).tolist() == [0.0]


def test_deletion_and_insertion_reward_faithful_maps():
    model = nn.Linear(8, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.stack([torch.linspace(4, 0.5, 8), torch.zeros(8)]))
    x = torch.ones(3, 8)
    y = torch.zeros(3, dtype=torch.long)
    good = model.weight[0].detach().expand(3, 8)     # the true contribution of each feature
    bad = good.flip(1)
    del_good, ins_good = explain.deletion_insertion_auc(model, x, good, y)
    del_bad, ins_bad = explain.deletion_insertion_auc(model, x, bad, y)
    assert (del_good < del_bad).all() and (ins_good > ins_bad).all()


def test_deletion_insertion_forward_passes_are_bounded(monkeypatch):
    """Big inputs: the 2 x 21 variants per input run in chunks (not one pass of 126 images),
    with the same curves as one pass."""
    from xprune_nb.explain import compare

    model = TinyCNN()
    x, y = images(3)
    maps = torch.randn(3, 1, 8, 8)
    whole = explain.deletion_insertion_auc(model, x, maps, y)
    seen = []
    monkeypatch.setattr(compare, "_AUC_FORWARD_ELEMENTS", 5 * 64)   # 5 images of 1x8x8

    def counting(m, inp):
        seen.append(len(inp))
        return m(inp)

    chunked = explain.deletion_insertion_auc(model, x, maps, y, forward=counting)
    assert max(seen) == 5 and sum(seen) == 3 * 2 * 21
    np.testing.assert_allclose(chunked[0], whole[0], rtol=1e-6)
    np.testing.assert_allclose(chunked[1], whole[1], rtol=1e-6)

def test_errors_name_the_parameter():
    model = tiny_mlp()
    x = torch.randn(3, 6)
    with pytest.raises(ConfigError, match=r"method=\.\.\.\): unknown name 'smoothgrad'; valid"):
        explain.compare_saliency(model, model, x, method="smoothgrad")
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['n_steps'\]"):
        explain.compare_saliency(model, model, x, method="saliency", n_steps=3)
    with pytest.raises(ConfigError, match="the model has no convolution"):
        explain.compare_saliency(model, model, x, method="gradcam")
    with pytest.raises(ConfigError, match=r"labels=\.\.\.\): expected 3 labels"):
        explain.compare_saliency(model, model, x, labels=[0, 1])


def test_probe_drift_identical_and_pruned():
    model = TinyCNN()
    x, y = images(9)
    same = explain.probe_drift(model, model, x, y, num_classes=4)
    assert same["saliency_spearman"] == pytest.approx(1.0)
    assert same["saliency_topk_iou"] == 1.0 and same["agreement"] == 1.0
    assert np.isnan(same["accuracy_per_class"][3])
    pruned = TinyCNN()
    with torch.no_grad():
        pruned.conv2.weight[::2] = 0
    drift = explain.probe_drift(model, pruned, x, y)
    assert drift["saliency_spearman"] < 0.99
    acc = (pruned(x).argmax(1) == y).float().mean().item()
    assert drift["accuracy"] == pytest.approx(acc)


def test_probe_drift_never_imports_captum():
    code = (
        "import sys, torch; torch.set_num_threads(1)\n"
        "from torch import nn\n"
        "from xprune_nb.explain import probe_drift\n"
        "m = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Flatten(),"
        " nn.Linear(1024, 10))\n"
        "x, y = torch.rand(200, 1, 8, 8), torch.arange(200) % 10\n"
        "probe_drift(m, m, x, y)\n"
        "print('captum' in sys.modules, 'shap' in sys.modules)\n"
    )
    # its speed (milliseconds per step) is measured in benchmarks/bench_explain.py
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["False", "False"]
