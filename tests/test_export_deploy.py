"""export_script(deploy=True, contract=True): the script writes ONNX (and compressed weights for
masked models) and a contract test that passes on the model it guards."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import xprune_nb as xp

pytest.importorskip("onnxruntime", reason="the deploy extra (onnx, onnxruntime) is missing")


@pytest.mark.slow
def test_deploy_script_writes_onnx_compressed_weights_and_a_passing_contract(tmp_path):
    study = xp.Study(xp.zoo.load("digits_cnn"), xp.datasets.load("digits"), seed=0,
                     probe_size=16)
    study.score("magnitude", granularity="weight")
    study.prune(0.5)
    script = study.export_script(tmp_path / "deploy.py", deploy=True, contract=True)
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, str(script), "--out", str(out), "--quiet"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["onnx"] == "model.onnx" and (out / "model.onnx").stat().st_size > 0
    assert 0 < metrics["compressed_bytes"] < metrics["dense_bytes"]
    test = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           str(out / "test_model_contract.py")], capture_output=True, text=True,
                          timeout=600)
    assert test.returncode == 0, test.stdout[-2000:]


def test_dynamic_steps_have_no_onnx_graph(tmp_path):
    study = xp.Study(xp.zoo.load("digits_cnn"), xp.datasets.load("digits"), seed=0,
                     probe_size=8)
    study.dynamic(epochs=1, finetune=0, samples=32)
    with pytest.raises(xp.ModelError, match="no single ONNX graph"):
        study.export_onnx(tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()
