"""Shapley comparisons: the values are shap's own (ExactExplainer / PermutationExplainer with an
Independent masker over the whole background), the permutation estimate is efficient,
reproducible under a seed and converges to the exact values. The speed of the 50-row comparison
is measured in benchmarks/bench_explain.py, not asserted here."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
import torch
from torch import nn

from xprune_nb import explain
from xprune_nb.core.errors import ConfigError

matplotlib.use("Agg")
torch.set_num_threads(1)
shap = pytest.importorskip("shap")


def mlp(features: int = 6, classes: int = 3, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(features, 16), nn.ReLU(), nn.Linear(16, classes)).eval()


def rows(n: int, features: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, features, generator=torch.Generator().manual_seed(seed))


def shap_exact(model: nn.Module, x: torch.Tensor, background: torch.Tensor, output: str):
    def f(a: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = model(torch.as_tensor(a, dtype=torch.float32))
            return (torch.softmax(out, 1) if output == "probability" else out).numpy()

    masker = shap.maskers.Independent(background.numpy(), max_samples=100)
    return shap.explainers.Exact(f, masker)(x.numpy())


@pytest.mark.parametrize("output", ["logits", "probability"])
def test_exact_equals_shap_exact_explainer(output):
    model = mlp()
    x, background = rows(7), rows(30, seed=1)
    phi, expected, fx, used = explain.shapley_values(model, x, background, explainer="exact",
                                                     output=output)
    ref = shap_exact(model, x, background, output)
    assert used == "exact"
    np.testing.assert_allclose(phi, ref.values, atol=1e-6, rtol=0)
    np.testing.assert_allclose(np.tile(expected, (7, 1)), ref.base_values, atol=1e-6, rtol=0)
    total = phi.sum(axis=1)
    np.testing.assert_allclose(total, fx - expected, atol=1e-6)


def test_permutation_is_efficient_and_converges_to_exact():
    model = mlp()
    x, background = rows(5), rows(20, seed=1)
    exact, expected, fx, _ = explain.shapley_values(model, x, background, explainer="exact")
    few, *_ = explain.shapley_values(model, x, background, explainer="permutation",
                                     permutations=2)
    many, *_ = explain.shapley_values(model, x, background, explainer="permutation",
                                      permutations=100)
    np.testing.assert_allclose(few.sum(axis=1), fx - expected, atol=1e-5)
    np.testing.assert_allclose(many.sum(axis=1), fx - expected, atol=1e-5)
    err_few, err_many = np.abs(few - exact).max(), np.abs(many - exact).max()
    assert err_many < err_few and err_many < 0.02 * np.abs(exact).max()


def test_permutation_is_shaps_and_reproducible_under_the_seed():
    model = mlp()
    x, background = rows(4), rows(15, seed=1)
    np.random.seed(123)
    state = np.random.get_state()
    phi, *_ = explain.shapley_values(model, x, background, explainer="permutation",
                                     permutations=3, seed=7)
    assert np.array_equal(np.random.get_state()[1], state[1])  # global generator left alone
    again, *_ = explain.shapley_values(model, x, background, explainer="permutation",
                                       permutations=3, seed=7)
    other, *_ = explain.shapley_values(model, x, background, explainer="permutation",
                                       permutations=3, seed=8)
    np.testing.assert_array_equal(phi, again)
    assert not np.allclose(phi, other)

    def f(a: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.as_tensor(a, dtype=torch.float32)).numpy()

    masker = shap.maskers.Independent(background.numpy(), max_samples=len(background))
    ref = shap.explainers.Permutation(f, masker, seed=7)(x.numpy(), max_evals=3 * (2 * 6 + 1))
    np.testing.assert_allclose(phi, ref.values, atol=1e-6, rtol=0)


def test_compare_returns_shap_explanations_and_drift():
    before, after = mlp(seed=0), mlp(seed=0)
    with torch.no_grad():
        after[0].weight[:, 0] = 0                # feature 0 no longer used after "pruning"
    x, background = rows(10), rows(25, seed=1)
    names = [f"f{i}" for i in range(6)]
    comp = explain.compare_shapley(before, after, x, background, feature_names=names,
                                   class_names=["a", "b", "c"])
    assert isinstance(comp.before, shap.Explanation) and comp.explainer == "exact"
    assert comp.before.values.shape == (10, 6, 3)
    assert comp.before.feature_names == names and list(comp.before.output_names) == ["a", "b",
                                                                                       "c"]
    np.testing.assert_allclose(np.asarray(comp.after.values)[:, 0], 0.0, atol=1e-7)
    assert comp.importance_after[0] == pytest.approx(0.0, abs=1e-7)
    gaps = comp.efficiency_gap
    assert gaps["before"] < 1e-5 and gaps["after"] < 1e-5
    frame = comp.to_frame()
    assert list(frame.columns) == ["feature", "importance_before", "importance_after",
                                   "rank_before", "rank_after", "rank_shift"]
    moved = comp.moved_most(3)
    assert "f0" in set(moved["feature"]) or frame.loc[frame.feature == "f0",
                                                      "rank_shift"].item() == 0
    same = explain.compare_shapley(before, before, x, background)
    assert same.rank_correlation == pytest.approx(1.0)
    assert "rank_correlation" in comp._repr_html_()
    fig = comp.plot()
    assert len(fig.axes) >= 3


def test_auto_picks_exact_up_to_12_features_and_permutation_above():
    for features, expected in ((12, "exact"), (13, "permutation"), (30, "permutation")):
        model = mlp(features, 2)
        x, background = rows(3, features), rows(4, features, seed=1)
        comp = explain.compare_shapley(model, mlp(features, 2, seed=1), x, background)
        assert comp.explainer == expected
        assert comp.before.values.shape == (3, features, 2)
        assert max(comp.efficiency_gap.values()) < 1e-5
    same = explain.compare_shapley(model, model, x, background)     # same permutations for both
    np.testing.assert_array_equal(same.before.values, same.after.values)


def test_image_model_uses_shap_gradient_explainer_on_a_copy():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(3 * 16, 2))
    model.train()                     # shap calls .eval(); it must not reach the user's model
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x, background = torch.rand(3, 1, 4, 4), torch.rand(10, 1, 4, 4)
    comp = explain.compare_shapley(model, model, x, background, seed=0, classes="all")
    assert comp.explainer == "gradient"
    assert np.asarray(comp.before.values).shape == (3, 1, 4, 4, 2)
    assert model.training and all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert len(comp.to_frame()) == 16
    fig = comp.plot()
    assert len(fig.axes) == 9


def test_a_plain_model_is_explained_without_a_copy_a_masked_one_on_a_copy(monkeypatch):
    """No copy of a plain model's weights (a ViT-B's are 343 MB); the values equal those of a
    copy; a masked model (and DeepExplainer) still gets its detached copy."""
    from torch.nn.utils import prune

    from xprune_nb.explain import shapley as shapley_module
    from xprune_nb.models.mechanisms import copies

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(3 * 16, 2)).eval()
    x, background = torch.rand(3, 1, 4, 4), torch.rand(10, 1, 4, 4)
    made = []
    real = copies.detached_copy
    monkeypatch.setattr(copies, "detached_copy", lambda m: made.append(m) or real(m))
    phi, *_ = shapley_module.shapley_values(model, x, background, seed=0, nsamples=16)
    assert made == []
    on_copy, *_ = shapley_module.shapley_values(real(model), x, background, seed=0, nsamples=16)
    np.testing.assert_array_equal(phi, on_copy)
    prune.l1_unstructured(model[0], "weight", amount=0.5)
    shapley_module.shapley_values(model, x, background, seed=0, nsamples=16)
    assert made == [model]


def test_image_shapley_explains_the_predicted_classes_with_the_given_sample_budget(monkeypatch):
    import shap

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 5))
    x, background = torch.rand(4, 1, 4, 4), torch.rand(6, 1, 4, 4)
    predicted = sorted(set(model(x).argmax(1).tolist()))
    seen = []
    original = shap.GradientExplainer.shap_values

    def spy(self, X, nsamples=200, **kw):
        seen.append(nsamples)
        return original(self, X, nsamples=nsamples, **kw)

    monkeypatch.setattr(shap.GradientExplainer, "shap_values", spy)
    comp = explain.compare_shapley(model, model, x, background, nsamples=7)
    assert seen == [7, 7]
    assert comp.class_names == [str(c) for c in predicted]
    assert np.asarray(comp.before.values).shape == (4, 1, 4, 4, len(predicted))
    # the explained outputs are those classes' logits, for both models alike
    np.testing.assert_allclose(comp.fx_before, model(x).detach().double()[:, predicted].numpy(),
                               rtol=1e-6)
    chosen = explain.compare_shapley(model, model, x, background, nsamples=3, classes=[4, 1],
                                     class_names=list("abcde"))
    assert chosen.class_names == ["e", "b"] and chosen.before.values.shape[-1] == 2
    with pytest.raises(ConfigError, match=r"nsamples=\.\.\.\): expected 'auto' or an integer"):
        explain.compare_shapley(model, model, x, background, nsamples=0)
    with pytest.raises(ConfigError, match=r"classes=\.\.\.\): expected .* class indices in "
                                          r"\[0, 5\)"):
        explain.compare_shapley(model, model, x, background, classes=[5])


def test_errors_name_the_parameter():
    model = mlp(16)
    with pytest.raises(ConfigError, match=r"explainer=\.\.\.\): unknown name 'tree'"):
        explain.compare_shapley(model, model, rows(2, 16), rows(4, 16), explainer="tree")
    with pytest.raises(ConfigError, match="at most 14 features"):
        explain.compare_shapley(model, model, rows(2, 16), rows(4, 16), explainer="exact")
    with pytest.raises(ConfigError, match=r"output=\.\.\.\): unknown name 'margin'"):
        explain.compare_shapley(model, model, rows(2, 16), rows(4, 16), output="margin")
    with pytest.raises(ConfigError, match=r"background=\.\.\.\): expected rows shaped like"):
        explain.compare_shapley(model, model, rows(2, 16), rows(4, 5))
    with pytest.raises(ConfigError, match=r"permutations=\.\.\.\): expected an integer >= 1"):
        explain.compare_shapley(model, model, rows(2, 16), rows(4, 16), permutations=0)
