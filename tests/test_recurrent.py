"""Hidden-unit removal for nn.LSTM / nn.GRU / nn.RNN: every gate, layer and direction, and the
layers that read the recurrent output, shrink together; silenced units are what removal removes."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import xprune_nb.models.zoo as zoo
from xprune_nb.core.errors import PruneError
from xprune_nb.measure.metrics import count_macs
from xprune_nb.models.mechanisms.recurrent import (
    find_recurrent,
    recurrent_magnitude,
    remove_hidden_units,
    unit_slices,
)


class Reader(nn.Module):
    """A recurrent layer read at the last step (``out``) or through its final state."""

    def __init__(self, rnn: nn.RNNBase, use_state: bool = False):
        super().__init__()
        self.rnn, self.use_state = rnn, use_state
        width = rnn.hidden_size * (1 if use_state else 2 if rnn.bidirectional else 1)
        self.head = nn.Linear(width, 3)

    def forward(self, x):
        out, state = self.rnn(x)
        if self.use_state:
            h = state[0] if isinstance(state, tuple) else state
            return self.head(h[-1])
        return self.head(out[:, -1])


class Stacked(nn.Module):
    """Two recurrent modules in a row: the second reads the first."""

    def __init__(self):
        super().__init__()
        self.first = nn.GRU(6, 10, batch_first=True, bidirectional=True)
        self.second = nn.LSTM(20, 8, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.second(self.first(x)[0])[0].mean(1))


class Scrambled(nn.Module):
    """Reads the output in reversed unit order: the columns cannot be mapped by position."""

    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(6, 8, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        out = self.rnn(x)[0][:, -1]
        return self.head(out.flip(-1))


def _call(model, x):
    return model(x)


def _silenced_copy(model, name, units):
    ref = copy.deepcopy(model)
    rnn = ref.get_submodule(name)
    with torch.no_grad():
        for pname, dim, idx in unit_slices(rnn):
            if dim == 0:
                getattr(rnn, pname)[idx[units].flatten()] = 0
    return ref


CASES = {
    "lstm": lambda: Reader(nn.LSTM(6, 8, batch_first=True)),
    "gru_stacked": lambda: Reader(nn.GRU(6, 8, num_layers=2, batch_first=True)),
    "rnn_bidirectional": lambda: Reader(nn.RNN(6, 8, batch_first=True, bidirectional=True)),
    "lstm_bidir_2layer": lambda: Reader(nn.LSTM(6, 8, 2, batch_first=True, bidirectional=True)),
    "lstm_state": lambda: Reader(nn.LSTM(6, 8, 2, batch_first=True), use_state=True),
    "gru_no_bias": lambda: Reader(nn.GRU(6, 8, batch_first=True, bias=False)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_removal_equals_silenced_units(case):
    torch.manual_seed(0)
    model = CASES[case]().eval()
    x = torch.randn(4, 5, 6)
    units = [1, 6]
    reference = _silenced_copy(model, "rnn", units)
    params = sum(p.numel() for p in model.parameters())
    macs = count_macs(model, x, _call)
    assert remove_hidden_units(model, {"rnn": [6, 1]}, x, _call) == {"rnn": [1, 6]}
    assert model.rnn.hidden_size == 6
    for _name, param in model.rnn.named_parameters():   # every gate block shrank
        gates = param.shape[0] // 6
        assert param.shape[0] == gates * 6
    with torch.no_grad():
        assert torch.allclose(model(x), reference(x), atol=1e-5)
    assert sum(p.numel() for p in model.parameters()) < params
    assert count_macs(model, x, _call) <= macs


def test_stacked_recurrent_readers():
    torch.manual_seed(0)
    model = Stacked().eval()
    x = torch.randn(3, 4, 6)
    reference = _silenced_copy(model, "first", [0, 9])
    remove_hidden_units(model, {"first": [0, 9]}, x, _call)
    assert model.second.input_size == 16 and model.second.weight_ih_l0.shape == (32, 16)
    with torch.no_grad():
        assert torch.allclose(model(x), reference(x), atol=1e-5)


def test_plan_replays_on_fresh_copy():
    torch.manual_seed(0)
    original = CASES["lstm_bidir_2layer"]().eval()
    x = torch.randn(2, 5, 6)
    a, b = copy.deepcopy(original), copy.deepcopy(original)
    plan = remove_hidden_units(a, {"rnn": [0, 3, 4]}, x, _call)
    remove_hidden_units(b, plan, x, _call)
    assert {k: v.shape for k, v in a.state_dict().items()} == \
        {k: v.shape for k, v in b.state_dict().items()}
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


def test_refusals_name_the_layer_and_change_nothing():
    model = nn.ModuleDict({"proj": nn.LSTM(4, 8, proj_size=2), "one": nn.GRU(4, 1)})
    groups, skipped = find_recurrent(model)
    assert groups == [] and "proj_size" in skipped["proj"] and "single" in skipped["one"]
    with pytest.raises(PruneError, match="cannot prune 'proj': proj_size"):
        remove_hidden_units(model, {"proj": [0]}, None, _call)
    reader = Reader(nn.GRU(6, 8, batch_first=True))
    before = copy.deepcopy(reader.state_dict())
    x = torch.randn(2, 3, 6)
    with pytest.raises(PruneError, match="every hidden unit of 'rnn'"):
        remove_hidden_units(reader, {"rnn": list(range(8))}, x, _call)
    with pytest.raises(PruneError, match="distinct indices in \\[0, 8\\)"):
        remove_hidden_units(reader, {"rnn": [8]}, x, _call)
    scrambled = Scrambled().eval()
    with pytest.raises(PruneError, match="could not be mapped"):
        remove_hidden_units(scrambled, {"rnn": [0]}, x, _call)
    assert scrambled.rnn.hidden_size == 8 and scrambled.head.in_features == 8
    assert all(torch.equal(before[k], v) for k, v in reader.state_dict().items())


def test_magnitude_by_hand():
    torch.manual_seed(0)
    rnn = nn.GRU(3, 4)
    mag = recurrent_magnitude(nn.ModuleDict({"r": rnn}))["r"]
    unit = 2
    rows = [unit, 4 + unit, 8 + unit]
    expected = (rnn.weight_ih_l0[rows].pow(2).sum() + rnn.weight_hh_l0[rows].pow(2).sum()
                + rnn.weight_hh_l0[:, unit].pow(2).sum() + rnn.bias_ih_l0[rows].pow(2).sum()
                + rnn.bias_hh_l0[rows].pow(2).sum()).sqrt()
    assert mag[unit].item() == pytest.approx(expected.item(), rel=1e-5)


def test_zoo_lstm(digits):
    model = zoo.load("digits_lstm")
    x = digits.test.X
    groups, _ = find_recurrent(model)
    assert [(g.name, g.kind, g.hidden_size) for g in groups] == [("rnn", "LSTM", 32)]
    weakest = recurrent_magnitude(model)["rnn"].argsort()[:8].tolist()
    with torch.no_grad():
        before = (model(x).argmax(1) == digits.test.y).float().mean().item()
    remove_hidden_units(model, {"rnn": weakest}, x[:4], _call)
    with torch.no_grad():
        after = (model(x).argmax(1) == digits.test.y).float().mean().item()
    assert model.rnn.hidden_size == 24 and model.head.in_features == 24
    assert after > 0.5 and before > 0.9
