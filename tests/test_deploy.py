"""Deployment export: BatchNorm folding, ONNX export checked with onnxruntime, compressed storage
of masked models, and explanation-contract test files run by pytest in a subprocess."""

from __future__ import annotations

import copy
import importlib.util
import os
import subprocess
import sys

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from xprune_nb.core.errors import (
    ConfigError,
    MissingDependencyError,
    ModelError,
    StudyFileError,
)
from xprune_nb.export.compressed import load_compressed, save_compressed
from xprune_nb.export.contract import (
    bounds_from_drift,
    measure_contract,
    write_contract_test,
)
from xprune_nb.export.fold import bake_masks, batchnorm_pairs, fold_batchnorm

HAVE_ONNX = all(importlib.util.find_spec(p) is not None
                for p in ("onnx", "onnxscript", "onnxruntime"))
needs_onnx = pytest.mark.skipif(
    not HAVE_ONNX, reason="onnx, onnxscript and onnxruntime (pip install 'xprune_nb[deploy]') "
    "are not installed")


@pytest.fixture(scope="module")
def pruned(digits):
    """digits_cnn with 20% of channels removed and 30% of the remaining weights masked."""
    import xprune_nb as xp

    study = xp.Study(xp.zoo.load("digits_cnn"), digits, seed=0, probe_size=20)
    study.score("magnitude", granularity="channel", samples=64)
    study.prune(0.2)
    study.score("magnitude", granularity="weight", samples=64)
    study.prune(0.3)
    return study


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same_state(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------- BatchNorm folding
def test_fold_pruned_masked_model(pruned, digits):
    model = pruned.model
    before = _state(model)
    folded = fold_batchnorm(model, digits.test.X[:4])
    assert _same_state(before, model.state_dict())          # the model itself is untouched
    assert folded.xprune_fold.pairs == [("conv1", "bn1"), ("conv2", "bn2")]
    assert isinstance(folded.bn1, nn.Identity) and isinstance(folded.bn2, nn.Identity)
    assert not any(k.endswith(("_mask", "_orig")) for k in folded.state_dict())
    for name in ("conv1", "conv2", "fc1"):                    # masked zeros stay zeros
        mask = getattr(model, name).weight_mask
        assert torch.all(getattr(folded, name).weight[mask == 0] == 0)
    x = digits.test.X[:64]
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), atol=1e-5, rtol=1e-5)


class LinearBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.bn = nn.BatchNorm1d(4)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.bn(self.fc(x)).reshape(x.shape[0], -1)[:, :4])


def _trained_stats(model, x):
    model.train()
    with torch.no_grad():
        model(x)
    return model.eval()


def test_linear_batchnorm_needs_an_example_showing_2d_outputs():
    torch.manual_seed(0)
    model = _trained_stats(LinearBN(), torch.randn(16, 4) * 3 + 1)
    assert batchnorm_pairs(model).pairs == []
    assert "example" in batchnorm_pairs(model).kept["bn"]
    folded = fold_batchnorm(model, torch.randn(3, 4))
    assert folded.xprune_fold.pairs == [("fc", "bn")]
    x = torch.randn(5, 4)
    torch.testing.assert_close(folded(x), model(x), atol=1e-5, rtol=1e-5)
    # on (N, 4, 4) inputs BatchNorm1d normalises dim 1, not the Linear layer's features
    assert fold_batchnorm(model, torch.randn(3, 4, 4)).xprune_fold.pairs == []


class SharedOutput(nn.Module):
    """The conv's output feeds the BatchNorm and a residual add: it must not be folded."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1)
        self.bn = nn.BatchNorm2d(2)

    def forward(self, x):
        y = self.conv(x)
        return (self.bn(y) + y).mean((2, 3))


class Untraceable(nn.Module):
    """Python control flow on tensor values: torch.fx cannot trace it."""

    def __init__(self):
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU())
        self.conv = nn.Conv2d(3, 3, 1)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x):
        x = self.block(x)
        if x.mean() > 0:
            x = self.bn(self.conv(x))
        return x.mean((2, 3))


def test_only_safe_pairs_are_folded():
    torch.manual_seed(0)
    shared = _trained_stats(SharedOutput(), torch.randn(8, 2, 5, 5))
    plan = batchnorm_pairs(shared)
    assert plan.pairs == [] and "also used elsewhere" in plan.kept["bn"]
    model = _trained_stats(Untraceable(), torch.randn(8, 1, 6, 6) + 2)
    folded = fold_batchnorm(model, torch.randn(4, 1, 6, 6))
    assert folded.xprune_fold.method == "sequential"
    assert folded.xprune_fold.pairs == [("block.0", "block.1")]
    assert "cannot be traced" in folded.xprune_fold.kept["bn"]
    x = torch.randn(4, 1, 6, 6) + 1
    torch.testing.assert_close(folded(x), model(x), atol=1e-5, rtol=1e-5)


def test_fold_bad_arguments():
    with pytest.raises(ConfigError, match=r"fold_batchnorm\(model=...\)"):
        fold_batchnorm("model")
    with pytest.raises(ConfigError, match=r"fold_batchnorm\(example=...\)"):
        fold_batchnorm(nn.Linear(2, 2), example=[1, 2])
    with pytest.raises(ConfigError, match=r"fold_batchnorm\(atol=...\)"):
        fold_batchnorm(nn.Linear(2, 2), atol=0)


def test_bake_masks_makes_zeros_permanent():
    layer = prune.l1_unstructured(nn.Linear(6, 3), "weight", amount=0.5)
    effective = layer.weight.detach().clone()
    bake_masks(layer)
    assert not layer._forward_pre_hooks and torch.equal(layer.weight, effective)


# ---------------------------------------------------------------- ONNX
@pytest.fixture(scope="module")
def onnx_file(pruned, tmp_path_factory):
    from xprune_nb.export.onnx import export_onnx

    path = tmp_path_factory.mktemp("onnx") / "cnn.onnx"
    return export_onnx(pruned.model, pruned.data.train.X[:1], path)


@needs_onnx
def test_export_onnx_matches_the_model(pruned, onnx_file):
    import onnx

    from xprune_nb.export.onnx import onnx_session, run_onnx

    graph = onnx.load(str(onnx_file)).graph
    assert not [n for n in graph.node if n.op_type == "BatchNormalization"]   # folded
    assert [p.name for p in onnx_file.parent.iterdir()] == ["cnn.onnx"]     # no temp left
    session = onnx_session(onnx_file)
    for n in (1, 9):   # the batch dimension is dynamic although traced with one example
        x = pruned.data.test.X[:n]
        with torch.no_grad():
            want = pruned.model(x)
        assert (run_onnx(session, x) - want).abs().max() <= 1e-4


@needs_onnx
def test_export_onnx_names_the_layer_that_cannot_be_traced(tmp_path):
    from xprune_nb.export.onnx import export_onnx

    class Gate(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)

        def forward(self, x):
            return self.conv(x) if x.sum() > 0 else x

    model = nn.Sequential(nn.Conv2d(1, 3, 3), Gate(), nn.Flatten(), nn.Linear(48, 2)).eval()
    target = tmp_path / "model.onnx"
    target.write_bytes(b"previous")
    with pytest.raises(ModelError, match=r"tracing fails in layer '1' \(Gate\) at .*test_deploy"):
        export_onnx(model, torch.randn(2, 1, 6, 6), target)
    assert target.read_bytes() == b"previous" and len(list(tmp_path.iterdir())) == 1


@needs_onnx
def test_export_onnx_refuses_outputs_that_differ(monkeypatch, tmp_path):
    from xprune_nb.export import onnx as onnx_export

    real = onnx_export.run_onnx
    monkeypatch.setattr(onnx_export, "run_onnx", lambda s, x: real(s, x) + 1e-3)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.ReLU()).eval()
    with pytest.raises(ModelError, match=r"differ from the model's by 0.001.*nothing written"):
        onnx_export.export_onnx(model, torch.randn(3, 4), tmp_path / "m.onnx")
    assert not list(tmp_path.iterdir())


def test_export_onnx_bad_arguments_and_missing_package(monkeypatch, tmp_path):
    from xprune_nb.export.onnx import export_onnx

    model = nn.Linear(4, 2)
    for kwargs, match in [({"atol": 0}, r"atol=...\): expected a positive number"),
                          ({"fold_bn": "yes"}, r"fold_bn=...\): expected True or False"),
                          ({"opset": 3}, r"opset=...\)"),
                          ({"output_fn": 1}, r"output_fn=...\)")]:
        with pytest.raises(ConfigError, match=match):
            export_onnx(model, torch.randn(2, 4), tmp_path / "m.onnx", **kwargs)
    with pytest.raises(ConfigError, match=r"export_onnx\(example=...\)"):
        export_onnx(model, [[0.0] * 4], tmp_path / "m.onnx")
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'xprune_nb\[deploy\]'"):
        export_onnx(model, torch.randn(2, 4), tmp_path / "m.onnx")
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------- compressed storage
def test_compressed_round_trip_of_a_masked_model(tmp_path, digits):
    import xprune_nb as xp

    model = xp.zoo.load("digits_cnn")
    layers = [model.conv1, model.conv2, model.fc1, model.head]
    prune.global_unstructured([(m, "weight") for m in layers], prune.L1Unstructured, amount=0.8)
    size = save_compressed(model, tmp_path / "cnn.xpz", meta={"note": "80%"})
    assert size.bytes == (tmp_path / "cnn.xpz").stat().st_size
    assert size.ratio < 0.45 and size.sparsity > 0.75           # measured: about 0.32
    raw = torch.load(tmp_path / "cnn.xpz", weights_only=True)   # plain tensors and data
    assert raw["meta"] == {"note": "80%"} and sorted(raw["masked"]) == sorted(
        f"{n}.weight" for n in ("conv1", "conv2", "fc1", "head"))

    fresh = xp.zoo.build("digits_cnn")
    loaded = load_compressed(size.path, fresh)
    assert loaded is fresh
    for name in ("conv1", "conv2", "fc1", "head"):
        a, b = getattr(model, name), getattr(loaded, name)
        assert torch.equal(a.weight_mask, b.weight_mask) and torch.equal(a.weight, b.weight)
    x = digits.test.X[:32]
    assert torch.equal(model(x), loaded(x))
    # unmasked tensors come back bit for bit
    assert torch.equal(model.bn1.running_var, loaded.bn1.running_var)


def test_compressed_masks_of_other_parameters(tmp_path):
    torch.manual_seed(0)
    attn = nn.MultiheadAttention(8, 2, batch_first=True)
    prune.l1_unstructured(attn, "in_proj_weight", amount=0.6)
    size = save_compressed(attn, tmp_path / "attn.xpz")
    fresh = load_compressed(size.path, nn.MultiheadAttention(8, 2, batch_first=True))
    x = torch.randn(2, 3, 8)
    assert torch.equal(fresh(x, x, x)[0], attn(x, x, x)[0])
    assert torch.equal(fresh.in_proj_weight_mask, attn.in_proj_weight_mask)


def test_compressed_refuses_a_model_that_does_not_fit(tmp_path):
    size = save_compressed(prune.random_unstructured(nn.Linear(8, 4), "weight", 0.5),
                           tmp_path / "a.xpz")
    other = nn.Linear(8, 5)
    before = _state(other)
    with pytest.raises(StudyFileError, match="does not fit the model.*unchanged"):
        load_compressed(size.path, other)
    assert _same_state(before, other.state_dict()) and not other._forward_pre_hooks
    raw = torch.load(size.path, weights_only=True)
    raw["entries"]["weight"]["dtype"] = "save"        # a file may name only a dtype
    torch.save(raw, tmp_path / "damaged.xpz")
    with pytest.raises(StudyFileError, match="entry 'weight' of the file is damaged"):
        load_compressed(tmp_path / "damaged.xpz", nn.Linear(8, 4))
    torch.save({"x": torch.zeros(2)}, tmp_path / "b.pt")
    with pytest.raises(StudyFileError, match="not written by xprune_nb's save_compressed"):
        load_compressed(tmp_path / "b.pt", other)
    with pytest.raises(StudyFileError, match="no such file"):
        load_compressed(tmp_path / "missing.xpz", other)
    with pytest.raises(ConfigError, match=r"save_compressed\(model=...\)"):
        save_compressed("model", tmp_path / "c.xpz")


# ---------------------------------------------------------------- explanation contracts
def _run_pytest(test_file):
    # the generated file needs pytest alone: skip loading the venv's plugins (seconds each)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1",
           "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           str(test_file)], capture_output=True, text=True,
                          cwd=test_file.parent, env=env, timeout=300)


def test_contract_passes_then_catches_a_broken_model(pruned, tmp_path):
    folder = tmp_path / "we'ird \"folder\""   # never pasted into code
    model_path = pruned.save_pruned(folder / "model.pt")
    drift = pruned.step.drift
    bounds = bounds_from_drift(drift, margin=0.05, reference_drift=pruned.history[0].drift)
    assert set(bounds) == {"accuracy_min", "agreement_min", "saliency_spearman_min",
                           "saliency_topk_iou_min", "max_class_drop"}
    assert bounds["accuracy_min"] == pytest.approx(drift["accuracy"] - 0.05)
    test = write_contract_test(
        folder / "test_digits_contract.py", model_path=model_path, probe_x=pruned.probe_x,
        probe_y=pruned.probe_y, reference=pruned.original, forward=pruned.forward, **bounds)
    assert "we'ird" not in test.read_text()
    measured = measure_contract(folder / "test_digits_contract.contract.json")
    assert measured["accuracy"] == pytest.approx(drift["accuracy"])
    assert measured["saliency_spearman"] == pytest.approx(drift["saliency_spearman"], abs=1e-6)

    ok = _run_pytest(test)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "5 passed" in ok.stdout

    # the deliberately broken model: the same checkpoint with noise on every weight
    payload = torch.load(model_path, weights_only=True)
    gen = torch.Generator().manual_seed(0)
    for key, value in payload["state_dict"].items():
        if key.endswith(("weight", "weight_orig")):
            value.add_(torch.randn(value.shape, generator=gen) * value.std())
    torch.save(payload, model_path)
    bad = _run_pytest(test)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "accuracy = " in bad.stdout and "agreed >=" in bad.stdout


@needs_onnx
def test_contract_for_an_onnx_file(pruned, onnx_file, tmp_path):
    common = {"model_path": onnx_file, "probe_x": pruned.probe_x, "probe_y": pruned.probe_y,
              "reference": pruned.original}
    with pytest.raises(ConfigError, match=r"saliency_spearman_min=...\): expected None for an "
                                          "ONNX model"):
        write_contract_test(tmp_path / "test_x.py", accuracy_min=0.5,
                            saliency_spearman_min=0.5, **common)
    write_contract_test(tmp_path / "test_onnx.py", accuracy_min=0.5, agreement_min=0.5,
                        **common)
    measured = measure_contract(tmp_path / "test_onnx.contract.json")
    assert measured["accuracy"] >= 0.5 and measured["saliency_spearman"] != measured[
        "saliency_spearman"]   # NaN: not measurable, and no bound on it


def test_contract_bad_input_and_a_contract_broken_from_the_start(pruned, tmp_path):
    model_path = pruned.save_pruned(tmp_path / "m.pt")
    common = {"model_path": model_path, "probe_x": pruned.probe_x, "probe_y": pruned.probe_y}
    with pytest.raises(ConfigError, match=r"accuracy_min=...\): expected a number in \[0, 1\]"):
        write_contract_test(tmp_path / "test_a.py", accuracy_min=1.5, **common)
    with pytest.raises(ConfigError, match=r"reference=...\): expected the reference nn.Module"):
        write_contract_test(tmp_path / "test_a.py", accuracy_min=0.1, agreement_min=0.9,
                            **common)
    with pytest.raises(ConfigError, match=r"path=...\): expected a .py file name"):
        write_contract_test(tmp_path / "test-a b.py", accuracy_min=0.1, **common)
    with pytest.raises(ConfigError, match=r"model_path=...\): expected an existing"):
        write_contract_test(tmp_path / "test_a.py", accuracy_min=0.1,
                            **{**common, "model_path": tmp_path / "nope.pt"})
    with pytest.raises(ConfigError, match="already breaks the contract: accuracy = "):
        write_contract_test(tmp_path / "test_a.py", accuracy_min=1.0, **{
            **common, "probe_y": (pruned.probe_y + 1) % 10})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]
    # without the check, the model may be one a script will write later
    later = write_contract_test(tmp_path / "test_later.py", accuracy_min=0.5, check=False,
                                **{**common, "model_path": tmp_path / "out" / "model.pt"})
    assert "out/model.pt" in (tmp_path / "test_later.contract.json").read_text()
    assert later.exists()
    with pytest.raises(ConfigError, match=r"bounds_from_drift\(margin=...\)"):
        bounds_from_drift({}, margin=-1)


def test_module_copies_are_independent(pruned):
    # the deployment helpers never touch the study's model
    before = copy.deepcopy(pruned.model.state_dict())
    fold_batchnorm(pruned.model)
    assert _same_state(before, pruned.model.state_dict())
