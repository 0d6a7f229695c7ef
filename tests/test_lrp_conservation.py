"""LRP reports how much of the explained logit reached the input (conserved share) and how much
biases and merged BatchNorm shifts absorbed, per input and on average."""

import numpy as np
import pytest
import torch
from torch import nn

from xprune_nb import explain


def _net(bias: bool, batchnorm: bool) -> nn.Module:
    torch.manual_seed(0)
    layers = [nn.Conv2d(1, 4, 3, padding=1, bias=bias)]
    if batchnorm:
        layers.append(nn.BatchNorm2d(4))
    layers += [nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3, bias=bias)]
    net = nn.Sequential(*layers)
    with torch.no_grad():
        if batchnorm:              # a real BatchNorm: a shift that LRP merges into a bias
            net[1].running_mean.uniform_(-1, 1)
            net[1].running_var.uniform_(0.5, 2)
            net[1].bias.uniform_(-1, 1)
        for m in net:
            if isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
                m.bias.uniform_(-0.5, 0.5)
    return net.eval()


# seeded: drawn at import, the inputs must not depend on which test modules were collected first
X = torch.rand(6, 1, 6, 6, generator=torch.Generator().manual_seed(0))
Y = torch.tensor([0, 1, 2, 0, 1, 2])


def test_bias_free_layers_conserve_the_logit():
    net = _net(bias=False, batchnorm=False)
    comp = explain.compare_saliency(net, net, X, labels=Y, method="lrp")
    # up to the epsilon rule's stabiliser
    np.testing.assert_allclose(comp.conserved_share_before, 1.0, atol=1e-3)
    np.testing.assert_allclose(comp.completeness_before, 0.0, atol=1e-3)


@pytest.mark.parametrize("bias, batchnorm", [(True, False), (False, True), (True, True)])
def test_biases_and_batchnorm_absorb_relevance_and_the_shares_say_how_much(bias, batchnorm):
    net = _net(bias, batchnorm)
    comp = explain.compare_saliency(net, net, X, labels=Y, method="lrp")
    logit = net(X).gather(1, Y[:, None]).squeeze(1).detach().double().numpy()
    total = comp.before.reshape(len(X), -1).sum(1)
    np.testing.assert_allclose(comp.completeness_before, total - logit, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(comp.conserved_share_before, total / logit, rtol=1e-3,
                               atol=1e-4)
    np.testing.assert_allclose(comp.absorbed_share_before, 1 - total / logit, rtol=1e-3,
                               atol=1e-4)
    # the point: not conserved, and now said so (measured: 10-90% absorbed here)
    assert np.abs(comp.absorbed_share_before).max() > 0.02
    frame = comp.to_frame()
    assert {"conserved_share_before", "absorbed_share_after", "completeness_before"} <= set(
        frame.columns)
    summary = comp.summary()
    assert summary["conserved_share_before"] == pytest.approx(float(np.mean(total / logit)),
                                                              rel=1e-3, abs=1e-4)


def test_methods_without_completeness_report_none_and_integrated_gradients_no_shares():
    net = _net(True, True)
    sal = explain.compare_saliency(net, net, X, labels=Y)
    assert sal.completeness_before is None and "conserved_share_before" not in sal.to_frame()
    ig = explain.compare_saliency(net, net, X, labels=Y, method="integrated_gradients")
    assert ig.completeness_before is not None and ig.conserved_share_before is None


def test_conserved_share_of_a_zero_logit_is_nan():
    assert np.isnan(explain.saliency.conserved_share([0.5], [0.0])[0])


def test_the_docs_glossary_is_the_code_glossary():
    """docs/explain.md's table is GLOSSARY, word for word (re-read against the code)."""
    from pathlib import Path

    from xprune_nb.explain.glossary import GLOSSARY

    doc = (Path(__file__).parent.parent / "docs" / "explain.md").read_text()
    for name, (label, meaning) in GLOSSARY.items():
        assert f"| `{name}` | {label} | {meaning.replace('|', chr(92) + '|')} |" in doc, name
