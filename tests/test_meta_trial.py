"""The channel safety trial on a meta copy (shapes without data): the same verdicts as the real
trial on a deep copy, no weights copied and no arithmetic, and a real trial whenever the model
cannot run on the meta device."""

from __future__ import annotations

import pytest
import torch
from conftest import MODEL_FACTORIES, state_equal
from torch import nn

from xprune_nb.models.mechanisms.copies import meta_copy
from xprune_nb.pruning import groups as G


def _logits(m, x):
    out = m(**x) if isinstance(x, dict) else m(x)
    return out.logits if hasattr(out, "logits") else out


def _verdicts(model, x, ignored, monkeypatch, *, real: bool):
    """(safe group keys, skipped reasons, devices the trials ran on)."""
    devices = []
    runs_like = G._runs_like

    def spy(m, example, *a, **k):
        first = example if isinstance(example, torch.Tensor) else next(iter(example.values()))
        devices.append(first.device.type)
        return runs_like(m, example, *a, **k)

    with monkeypatch.context() as patch:
        patch.setattr(G, "_runs_like", spy)
        patch.setattr(G, "SHAPE_ONLY_PARAMS", 0)   # these models are small: meta all the same
        if real:
            patch.setattr(G, "_shape_only_example", lambda *a, **k: None)
        safe, skipped = G.safe_channel_groups(model, x, ignored=ignored, forward=_logits)
    return [g.key for g in safe], skipped, devices


class HardCodedWidth(nn.Module):
    """A width hard-coded in a view: ``fc1`` cannot lose a unit, ``fc0`` can."""

    def __init__(self):
        super().__init__()
        self.fc0, self.fc1, self.head = nn.Linear(8, 12), nn.Linear(12, 6), nn.Linear(6, 3)

    def forward(self, x):
        h = torch.relu(self.fc1(torch.relu(self.fc0(x))))
        return self.head(h.view(-1, 6))


class Tied(nn.Module):
    """Encoder and decoder share one weight: removing a unit would untie them."""

    def __init__(self):
        super().__init__()
        self.enc, self.dec, self.mid = nn.Linear(8, 8, bias=False), nn.Linear(8, 8), \
            nn.Linear(8, 5)
        self.dec.weight = self.enc.weight
        self.head = nn.Linear(5, 3)

    def forward(self, x):
        return self.head(torch.relu(self.mid(self.dec(torch.relu(self.enc(x))))))


class Grouped(nn.Module):
    """A grouped and a depthwise convolution: a channel fewer does not divide into groups,
    which the meta convolution kernel does not check by itself."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.grouped = nn.Conv2d(8, 6, 3, padding=1, groups=2)
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        x = torch.relu(self.grouped(torch.relu(self.dw(torch.relu(self.stem(x))))))
        return self.head(x.mean(dim=(2, 3)))


class ReadsValues(nn.Module):
    """A branch on a value: cannot run on the meta device, so it is tried for real."""

    def __init__(self):
        super().__init__()
        self.fc0, self.head = nn.Linear(8, 10), nn.Linear(10, 3)

    def forward(self, x):
        h = torch.relu(self.fc0(x))
        return self.head(h if float(h.sum()) >= 0 else -h)


def _cases():
    torch.manual_seed(0)
    cases = [(name, factory(), torch.randn(2, 1, 8, 8), ["head"] if name != "wrapped"
              else ["inner.classifier"]) for name, factory in MODEL_FACTORIES.items()]
    cases += [("hard-coded width", HardCodedWidth(), torch.randn(2, 8), ["head"]),
              ("tied", Tied(), torch.randn(2, 8), ["head"]),
              ("grouped", Grouped(), torch.randn(2, 1, 8, 8), ["head"])]
    return cases


@pytest.mark.parametrize("case", _cases(), ids=lambda c: c[0])
def test_meta_trial_gives_the_real_trials_verdicts(case, monkeypatch):
    _, model, x, ignored = case
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    meta = _verdicts(model, x, ignored, monkeypatch, real=False)
    real = _verdicts(model, x, ignored, monkeypatch, real=True)
    assert meta[:2] == real[:2]
    assert set(meta[2]) == {"meta"} and set(real[2]) == {"cpu"}
    assert state_equal(model.state_dict(), before)
    assert all(p.device.type == "cpu" for p in model.parameters())


def test_hard_coded_width_and_tied_weights_are_refused_on_meta_too(monkeypatch):
    safe, skipped, _ = _verdicts(HardCodedWidth().eval(), torch.randn(2, 8), ["head"],
                                 monkeypatch, real=False)
    assert "fc0" in safe and "fc1" not in safe and "breaks the model" in skipped["fc1"]
    safe, skipped, _ = _verdicts(Tied().eval(), torch.randn(2, 8), ["head"], monkeypatch,
                                 real=False)
    assert "enc" not in safe and "tied weights" in skipped["enc"] and "mid" in safe


def test_a_small_model_is_tried_for_real():
    """Meta kernels are largely Python: below SHAPE_ONLY_PARAMS a real trial is cheaper."""
    model = HardCodedWidth().eval()
    assert sum(p.numel() for p in model.parameters()) < G.SHAPE_ONLY_PARAMS
    assert G._shape_only_example(model, torch.randn(2, 8), torch.Size([2, 3]), _logits) is None


def test_a_model_that_reads_values_is_tried_for_real(monkeypatch):
    monkeypatch.setattr(G, "SHAPE_ONLY_PARAMS", 0)
    model = ReadsValues().eval()
    assert G._shape_only_example(model, torch.randn(2, 8), torch.Size([2, 3]), _logits) is None
    safe, _, devices = _verdicts(model, torch.randn(2, 8), ["head"], monkeypatch, real=False)
    assert safe == ["fc0"]
    assert devices[0] == "meta" and set(devices[1:]) == {"cpu"}   # the probe, then for real


def test_meta_copy_keeps_ties_and_holds_no_data():
    model = Tied()
    shell = meta_copy(model)
    assert shell.dec.weight is shell.enc.weight
    assert all(t.device.type == "meta" for t in list(shell.parameters()) + list(shell.buffers()))
    assert model.enc.weight.device.type == "cpu"


@pytest.mark.parametrize("arch", ["vit", "bert", "resnet"])
def test_meta_trial_on_hugging_face_models(arch, monkeypatch):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    if arch == "vit":
        model = transformers.ViTForImageClassification(transformers.ViTConfig(
            num_labels=4, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=48, image_size=16, patch_size=8))
        x = torch.randn(2, 3, 16, 16)
    elif arch == "bert":
        model = transformers.BertForSequenceClassification(transformers.BertConfig(
            vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=48, max_position_embeddings=16, num_labels=3))
        x = {"input_ids": torch.randint(0, 50, (2, 8)),
             "attention_mask": torch.ones(2, 8, dtype=torch.long)}
    else:
        model = transformers.ResNetForImageClassification(transformers.ResNetConfig(
            embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=3))
        x = torch.randn(2, 3, 32, 32)
    model.eval()
    from xprune_nb.pruning.units.channel import _head_projections

    heads = _head_projections(model)
    ignored = ["classifier"] if arch != "resnet" else ["classifier.1"]
    monkeypatch.setattr(G, "SHAPE_ONLY_PARAMS", 0)
    with monkeypatch.context() as patch:
        meta = G.safe_channel_groups(model, x, ignored=ignored, forward=_logits,
                                     head_layers=heads)
        patch.setattr(G, "_shape_only_example", lambda *a, **k: None)
        real = G.safe_channel_groups(model, x, ignored=ignored, forward=_logits,
                                     head_layers=heads)
    assert [g.key for g in meta[0]] == [g.key for g in real[0]] and meta[1] == real[1]
    assert meta[0]   # something is prunable
    shape_only = G._shape_only_example(model, x, _logits(model, x).shape, _logits)
    if arch != "bert":   # BERT's mask code reads values (padding_mask.all()): tried for real
        assert shape_only is not None
