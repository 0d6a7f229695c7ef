"""The ``recurrent`` unit kind: LSTM/GRU/RNN hidden units found, scored (magnitude, random,
taylor, lrp), removed for real in a Study, restored exactly by the timeline, files and recipes;
layers that can't be pruned are refused by name with the study unchanged."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import no_hooks, state_equal
from torch import nn

import xprune_nb as xp
from xprune_nb.core.errors import ModelError, PruneError
from xprune_nb.criteria import ScoringContext, create
from xprune_nb.criteria._recurrent import per_example_unit_gates, unit_relevance, unrolled
from xprune_nb.models import zoo
from xprune_nb.models.mechanisms.recurrent import recurrent_magnitude, remove_hidden_units
from xprune_nb.pruning import units
from xprune_nb.pruning.units import ModelEnv


def _call(model, x):
    return model(x)


class Seq(nn.Module):
    """A recurrent layer (or two in a row) read at the last step by a linear head."""

    def __init__(self, rnn: nn.RNNBase, second: nn.RNNBase | None = None, bias: bool = True):
        super().__init__()
        self.rnn, self.second = rnn, second
        last = second or rnn
        width = last.hidden_size * (2 if last.bidirectional else 1)
        self.head = nn.Linear(width, 3, bias=bias)

    def forward(self, x):
        out = self.rnn(x)[0]
        if self.second is not None:
            out = self.second(out)[0]
        return self.head(out[:, -1] if self.rnn.batch_first else out[-1])


class Mixed(nn.Module):
    """One good LSTM, a projected one, one read in reversed unit order, one that never runs."""

    def __init__(self):
        super().__init__()
        self.good = nn.LSTM(4, 6, batch_first=True)
        self.proj = nn.LSTM(4, 6, proj_size=2, batch_first=True)
        self.flipped = nn.GRU(4, 5, batch_first=True)
        self.unused = nn.GRU(4, 5, batch_first=True)
        self.head, self.head_p, self.head_f = nn.Linear(6, 3), nn.Linear(2, 3), nn.Linear(5, 3)

    def forward(self, x):
        a = self.head(self.good(x)[0][:, -1])
        b = self.head_p(self.proj(x)[0][:, -1])
        return a + b + self.head_f(self.flipped(x)[0][:, -1].flip(-1))


def _env(model, x):
    return ModelEnv.of(model, x[:2], _call, 3)


def _ctx(model, x, y, kind="recurrent"):
    found = units.get(kind, "test").find(model, _env(model, x))
    return ScoringContext(model, "recurrent", found.layers, x, y, None, 3, _call,
                          batch_size=4, units=found)


@pytest.mark.parametrize("rnn", [
    nn.LSTM(3, 4, 2, batch_first=True, bidirectional=True),
    nn.GRU(3, 4, 2, bidirectional=True),
    nn.RNN(3, 4, nonlinearity="relu", batch_first=True),
    nn.LSTM(3, 5, bias=False),
], ids=["lstm-2x-bidir", "gru-2x-bidir-seqfirst", "rnn-relu", "lstm-nobias"])
def test_unrolled_equals_the_module(rnn):
    torch.manual_seed(0)
    rnn.eval()
    x = torch.randn(2, 6, 3)
    out, state = rnn(x)
    got, got_state = unrolled(rnn, x)
    assert torch.allclose(got, out, atol=1e-5)
    for a, b in zip(state if isinstance(state, tuple) else [state],
                    got_state if isinstance(got_state, tuple) else [got_state]):
        assert torch.allclose(a, b, atol=1e-5)
    again = unrolled(rnn, x, state)[0]          # an initial state given by the caller
    assert torch.allclose(again, rnn(x, state)[0], atol=1e-5)
    assert torch.allclose(unrolled(rnn, x[0])[0], rnn(x[0])[0], atol=1e-5)   # unbatched


def test_find_offers_good_layers_and_names_the_others():
    torch.manual_seed(0)
    model = Mixed().eval()
    found = units.get("recurrent", "test").find(model, _env(model, torch.randn(2, 7, 4)))
    assert found.groups == {"good": ("good", "head")} and found.sizes == {"good": 6}
    assert set(found.skipped) == {"proj", "flipped", "unused"}
    assert "proj_size" in found.skipped["proj"]
    assert "could not be mapped" in found.skipped["flipped"]
    assert "never runs" in found.skipped["unused"]
    assert no_hooks(model)


def test_magnitude_counts_gates_layers_and_readers():
    torch.manual_seed(0)
    model = Seq(nn.GRU(4, 6, 2, batch_first=True, bidirectional=True)).eval()
    x, y = torch.randn(8, 5, 4), torch.randint(0, 3, (8,))
    got = create("magnitude", p=2).recurrent_scores(_ctx(model, x, y))["rnn"]
    own = recurrent_magnitude(model)["rnn"].double()          # gates, layers, directions
    head = model.head.weight.detach().double()                  # (3, 2 * 6): both directions
    reader = head[:, :6].pow(2).sum(0) + head[:, 6:].pow(2).sum(0)
    assert torch.allclose(got.double(), (own.pow(2) + reader).sqrt(), rtol=1e-5)
    l1 = create("magnitude", p=1).recurrent_scores(_ctx(model, x, y))["rnn"]
    assert l1.shape == (6,) and (l1 > got).all()


def test_taylor_gate_is_the_first_order_change_of_removing_a_unit():
    torch.manual_seed(1)
    model = Seq(nn.LSTM(4, 6, 2, batch_first=True)).eval()
    x, y = torch.randn(6, 5, 4), torch.randint(0, 3, (6,))
    ctx = _ctx(model, x, y)
    gates = per_example_unit_gates(ctx)["rnn"]                   # (examples, units)
    assert gates.shape == (6, 6) and no_hooks(model)

    def loss(scale):
        with torch.no_grad():
            out = unrolled(model.rnn, x, gate=scale)[0]
            return nn.functional.cross_entropy(model.head(out[:, -1]), y, reduction="none")

    ones = torch.ones(6, 6)
    for unit in (0, 3):
        step = ones.clone()
        step[:, unit] = 1 - 1e-3
        finite = (loss(ones) - loss(step)) / 1e-3
        assert torch.allclose(finite.double(), gates[:, unit], atol=2e-3)
    # gate 0 is removal: the unrolled model with unit 3 gated off is the pruned model
    silenced = ones.clone()
    silenced[:, 3] = 0
    pruned = copy.deepcopy(model)
    remove_hidden_units(pruned, {"rnn": [3]}, x, _call)
    with torch.no_grad():
        gated = model.head(unrolled(model.rnn, x, gate=silenced)[0][:, -1])
        assert torch.allclose(gated, pruned(x), atol=1e-5)
    scores = create("taylor").recurrent_scores(ctx)["rnn"]
    assert torch.allclose(scores.double(), gates.abs().mean(0), atol=1e-6)


def test_lrp_relevance_at_the_recurrent_output_is_conserved():
    from xprune_nb.models.mechanisms.lrp import LRPRunner

    torch.manual_seed(2)
    model = Seq(nn.GRU(4, 6, batch_first=True, bidirectional=True), bias=False).eval()
    x, y = torch.randn(8, 5, 4), torch.randint(0, 3, (8,))
    ctx = _ctx(model, x, y)
    signed = unit_relevance(ctx, LRPRunner(model, _call), signed=True)["rnn"]
    # epsilon rule on a bias-free head: the relevance reaching the units is the target logit
    with torch.no_grad():
        target = model(x).gather(1, y[:, None]).mean()
    assert torch.allclose(signed.sum().double(), target.double(), rtol=1e-3)
    scored = create("lrp").recurrent_scores(ctx)["rnn"]
    assert scored.shape == (6,) and (scored >= 0).all() and no_hooks(model)


@pytest.fixture(scope="module")
def lstm_study(digits):
    return xp.Study(zoo.load("digits_lstm"), digits, seed=0)


@pytest.mark.parametrize("criterion", ["magnitude", "random", "taylor", "lrp"])
def test_every_criterion_scores_the_units(lstm_study, criterion):
    before = copy.deepcopy(lstm_study.model.state_dict())
    scores = lstm_study.score(criterion, granularity="recurrent", samples=48)
    assert set(scores.values) == {"rnn"} and scores.values["rnn"].shape == (32,)
    assert torch.isfinite(scores.values["rnn"]).all()
    assert scores.groups == {"rnn": ("rnn", "head")}
    assert state_equal(lstm_study.model.state_dict(), before) and no_hooks(lstm_study.model)
    assert all(p.grad is None for p in lstm_study.model.parameters())


def test_study_prunes_and_restores_exactly(digits, tmp_path):
    study = xp.Study(zoo.load("digits_lstm"), digits, seed=0)
    assert "recurrent" in units.present(study.model, study.env)
    table = study.prunable("recurrent")
    assert table.loc[0, "group"] == "rnn" and table.loc[0, "units"] == 32
    study.score("taylor", granularity="recurrent", samples=64)
    preview = study.preview(0.5)
    step = study.prune(0.5)
    assert preview.removed == 16 == len(step.removed["rnn"])
    assert study.model.rnn.hidden_size == 16 and study.model.head.in_features == 16
    base = study.history[0].metrics
    assert step.metrics["params"] < base["params"]
    assert step.metrics["macs"] < base["macs"]
    assert 0.0 <= step.metrics["accuracy"] <= 1.0
    assert step.structure == [{"kind": "recurrent", "plan": {"rnn": step.removed["rnn"]}}]
    pruned = copy.deepcopy(study.model.state_dict())
    assert state_equal(study.model_at(step.index).state_dict(), pruned)

    study.undo()
    assert study.model.rnn.hidden_size == 32
    assert state_equal(study.model.state_dict(), study.original.state_dict())
    study.goto(step.index)
    assert state_equal(study.model.state_dict(), pruned)

    loaded = xp.Study.load(study.save(tmp_path / "lstm.xprune"))
    assert state_equal(loaded.model.state_dict(), pruned)
    model = xp.load_pruned(study.save_pruned(tmp_path / "model.pt"))
    assert state_equal(model.state_dict(), pruned)
    x = digits.test.X[:16]
    with torch.no_grad():
        assert torch.equal(model(x), study.model.eval()(x))
    again = xp.Study.from_recipe(study.recipe(), progress=False)
    assert state_equal(again.model.state_dict(), pruned)
    assert again.step.metrics["accuracy"] == step.metrics["accuracy"]


def test_bad_inputs_name_the_layer_and_leave_the_study_unchanged(digits):
    cnn = xp.Study(zoo.load("digits_cnn"), digits, seed=0)
    with pytest.raises(ModelError, match="no nn.LSTM / nn.GRU / nn.RNN"):
        cnn.score("magnitude", granularity="recurrent")
    assert len(cnn.history) == 1 and cnn.scores_at(0) is None

    class Projected(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.LSTM(8, 16, proj_size=4, batch_first=True)
            self.head = nn.Linear(4, 10)

        def forward(self, x):
            return self.head(self.rnn(torch.flatten(x, 1, 2))[0][:, -1])

    torch.manual_seed(0)
    study = xp.Study(Projected(), digits, seed=0)
    before = copy.deepcopy(study.model.state_dict())
    with pytest.raises(ModelError, match=r"'rnn'.*proj_size"):
        study.score("taylor", granularity="recurrent")
    assert len(study.history) == 1 and state_equal(study.model.state_dict(), before)
    assert study.prunable("recurrent").loc[0, "prunable"] == False  # noqa: E712


def test_removing_every_unit_is_refused_by_name(lstm_study):
    kind = units.get("recurrent", "test")
    found = kind.find(lstm_study.model, lstm_study.env)
    with pytest.raises(PruneError, match=r"every hidden unit of 'rnn'"):
        kind.check(found, {"rnn": torch.arange(32)}, "Study.prune")
    lstm_study.score("magnitude", granularity="recurrent")
    with pytest.raises(PruneError, match="'rnn'"):
        lstm_study.prune(0.5, scope="layer", layer_amounts={"rnn": 0.99})
    assert lstm_study.model.rnn.hidden_size == 32 and len(lstm_study.history) == 1


def test_stacked_bidirectional_modules_in_a_study():
    torch.manual_seed(0)
    model = Seq(nn.GRU(4, 6, batch_first=True, bidirectional=True),
                nn.LSTM(12, 5, 2, batch_first=True))
    x = torch.randn(96, 7, 4)
    y = (x[:, :, 0].sum(1) > 0).long() + (x[:, :, 1].sum(1) > 0).long()
    split = (x[:64], y[:64])
    study = xp.Study(model, train=split, val=(x[64:80], y[64:80]), test=(x[80:], y[80:]),
                     seed=0)
    scores = study.score("taylor", granularity="recurrent")
    assert {k: v.shape[0] for k, v in scores.values.items()} == {"rnn": 6, "second": 5}
    assert scores.groups == {"rnn": ("rnn", "second"), "second": ("second", "head")}
    step = study.prune(0.4, scope="layer")
    assert study.model.rnn.hidden_size == 6 - len(step.removed["rnn"]) < 6
    assert study.model.second.input_size == 2 * study.model.rnn.hidden_size
    assert state_equal(study.model_at(step.index).state_dict(), study.model.state_dict())
