"""Data-parallel retraining under torchrun: 2 CPU processes with gloo against one process.

What "matches" means: every rank draws the same shuffled global batch and trains on its half;
the loss is scaled so that DDP's gradient average is the gradient of the whole global batch,
and BatchNorm normalises over the global batch. So each update is the single-process update up
to the order of floating-point sums: with SGD the weights agree to ~1e-6 after a few epochs,
the parameter count and architecture exactly, accuracy exactly (at most a rare flip of an example
near the decision boundary). Adam is the exception to keep in mind: on a parameter whose true
gradient is zero (a conv bias right before BatchNorm) it turns rounding noise into full-size
steps, so such parameters drift apart by up to ~lr per step although the function barely
changes (see docs/export_and_scale_out.md).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import xprune_nb as xp
from xprune_nb.core.errors import ConfigError
from xprune_nb.record import distributed

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def test_single_process_is_a_no_op():
    assert (distributed.world_size(), distributed.rank(), distributed.is_main()) == (1, 0, True)
    assert distributed.all_reduce_sum([1.5, 2.0]) == [1.5, 2.0]
    study = xp.Study(xp.zoo.load("toy_mlp"), xp.datasets.load("moons"))
    before = {k: v.clone() for k, v in study.model.state_dict().items()}
    distributed.broadcast_study(study)
    assert all(torch.equal(before[k], v) for k, v in study.model.state_dict().items())
    with pytest.raises(ConfigError, match=r"distributed.setup\(device=...\): unknown name "
                                          "'tpu'; valid names are 'cpu', 'cuda'"):
        distributed.setup("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device is available here"):
            distributed.setup("cuda")
    assert distributed.setup("cpu") == torch.device("cpu")
    distributed.teardown()


def _torchrun() -> list[str]:
    exe = Path(sys.executable).with_name("torchrun")
    exe = str(exe) if exe.exists() else shutil.which("torchrun")
    return [exe] if exe else [sys.executable, "-m", "torch.distributed.run"]


def test_two_gloo_processes_match_one(tmp_path):
    # BatchNorm model; iterative pruning with retraining between rounds (rounds replayed with
    # rank 0 pruning and both ranks training), then masks and a final retraining
    study = xp.Study(xp.zoo.load("digits_cnn"), xp.datasets.load("digits"), seed=0)
    study.score("taylor", samples=64)
    sgd = {"optimizer": "sgd", "lr": 0.02}
    study.prune(0.4, steps=2, retrain={"epochs": 1, "batch_size": 32, **sgd})
    study.score("magnitude", granularity="weight")
    study.prune(0.3)
    study.retrain(epochs=2, progress=False, **sgd)
    script = study.export_script(tmp_path / "prune.py")
    out = tmp_path / "out"
    proc = subprocess.run(_torchrun() + ["--standalone", "--nproc_per_node=2", str(script),
                                         "--out", str(out), "--quiet"],
                          env=ENV, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("world_size: 2") == 1          # rank 0 alone writes and prints
    metrics = json.loads((out / "metrics.json").read_text())
    m = study.step.metrics
    assert metrics["world_size"] == 2
    assert metrics["params"] == m["params"] and metrics["nonzero_params"] == m["nonzero_params"]
    assert abs(metrics["accuracy"] - m["accuracy"]) <= 1 / len(study.data.test)
    assert metrics["loss"] == pytest.approx(m["loss"], rel=1e-4)
    model = xp.load_pruned(out / "model.pt")
    ref = study.model.state_dict()
    for key, value in model.state_dict().items():
        assert value.shape == ref[key].shape, key
        assert torch.allclose(value, ref[key], atol=1e-4), (key, (value - ref[key]).abs().max())
