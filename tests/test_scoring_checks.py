"""The cheap checks around scoring and measuring: they read every weight once and miss nothing."""

from __future__ import annotations

import torch
from torch import nn

from xprune_nb.measure.metrics import count_params, layer_sparsity, param_stats
from xprune_nb.pruning.scoring import fingerprint


def test_fingerprint_sees_a_change_of_one_weight_by_one_ulp():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.BatchNorm1d(32), nn.Linear(32, 3))
    before = fingerprint(model)
    assert fingerprint(model) == before
    with torch.no_grad():
        w = model[0].weight
        w[3, 5] = torch.nextafter(w[3, 5], torch.tensor(10.0))
    assert fingerprint(model) != before
    model[1].num_batches_tracked += 1   # an integer buffer counts too
    changed = fingerprint(model)
    model[1].num_batches_tracked -= 1
    assert fingerprint(model) != changed


def test_param_stats_is_count_params_and_layer_sparsity_in_one_sweep():
    model = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 2))
    with torch.no_grad():
        model[0].weight[:2] = 0
        model[2].bias.zero_()
    total, nonzero, layers = param_stats(model)
    assert (total, nonzero) == count_params(model) == (38, 38 - 12 - 2)
    assert layers == layer_sparsity(model)
    assert layers["0.weight"]["nonzero"] == 12 and layers["0.weight"]["sparsity"] == 0.5
    assert set(layers) == {"0.weight", "2.weight"}


def test_only_a_class_that_declares_itself_read_only_skips_the_change_check():
    import pytest

    import xprune_nb as xp
    from xprune_nb import criteria
    from xprune_nb.criteria.magnitude import MagnitudeCriterion

    class Meddling(MagnitudeCriterion):   # inherits read_only=True from magnitude
        name = "meddling_magnitude"

        def channel_scores(self, ctx):
            with torch.no_grad():
                next(iter(ctx.layers.values())).weight.mul_(1.0 + 2 ** -20)
            return super().channel_scores(ctx)

    assert MagnitudeCriterion.read_only and "read_only" not in vars(Meddling)
    criteria.register(Meddling)
    try:
        study = xp.Study(xp.zoo.load("toy_mlp"), xp.datasets.load("moons"))
        before = fingerprint(study.model)
        study.score("magnitude")
        assert fingerprint(study.model) == before
        with pytest.raises(xp.ModelError, match="criterion 'meddling_magnitude' changed the "
                                                "model's weights"):
            study.score("meddling_magnitude")
    finally:
        criteria._REGISTRY.pop("meddling_magnitude", None)


def test_a_torchscript_model_is_refused_with_the_packages_error_not_a_hook_error():
    import pytest

    import xprune_nb as xp

    X, y = torch.randn(12, 4), torch.arange(12) % 2
    scripted = torch.jit.script(nn.Sequential(nn.Linear(4, 2)))
    with pytest.raises(xp.ModelError, match="no Conv or Linear layer to prune"):
        xp.Study(scripted, train=(X, y), test=(X, y))
