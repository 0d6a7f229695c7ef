"""Weight masks through torch.nn.utils.prune."""

from __future__ import annotations

import pytest
import torch
from conftest import make_study


def test_weight_masks_reach_target_sparsity(small_digits):
    study = make_study("mlp", small_digits)
    study.score("magnitude", granularity="weight")
    study.prune(0.5)
    w = study.model.fc1.weight
    assert hasattr(study.model.fc1, "weight_mask")
    prunable = sum(m.weight.numel() for m in (study.model.fc1, study.model.fc2))
    zeros = sum(int((m.weight == 0).sum()) for m in (study.model.fc1, study.model.fc2))
    assert zeros == pytest.approx(prunable * 0.5, abs=1)
    assert w.shape == (32, 64)            # masks keep shapes
    assert study.step.metrics["params"] == study.history[0].metrics["params"]
    assert study.step.metrics["nonzero_params"] < study.step.metrics["params"]


def test_masks_survive_retraining_and_accumulate(small_digits):
    study = make_study("mlp", small_digits)
    study.score("magnitude", granularity="weight")
    study.prune(0.4)
    mask = study.model.fc1.weight_mask.clone()
    study.retrain(epochs=1, progress=False)
    assert torch.all(study.model.fc1.weight[mask == 0] == 0)
    study.score("magnitude", granularity="weight")
    study.prune(0.5)   # half of what is left
    frac = float((study.model.fc1.weight == 0).float().mean())
    assert 0.6 < frac < 0.8


def test_channel_after_weight_keeps_masks(small_digits):
    study = make_study("mlp", small_digits)
    study.score("magnitude", granularity="weight")
    study.prune(0.5)
    study.score("magnitude", granularity="channel")
    study.prune(0.25)
    assert hasattr(study.model.fc1, "weight_mask")
    assert study.model.fc1.weight_mask.shape == study.model.fc1.weight.shape
    assert study.step.metrics["sparsity"] > 0.3
