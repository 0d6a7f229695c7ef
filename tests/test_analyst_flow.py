"""The analyst's path of notebook 07 with a model and tabular tensors of one's own: the names
given to ``Study`` reach every result, class-aware scores still explain the prune after a
retrain, Shapley reports progress, and the stakeholder report has its why-removed and Shapley
sections, a glossary and no NaN."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from torch import nn

import xprune_nb as xp
from xprune_nb.export.report import write_report

# more than 20 features, as in the breast cancer data: Shapley takes its cheaper defaults
FEATURES = [f"measure {i}" for i in range(24)]
CLASSES = ["malignant", "benign"]


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(len(FEATURES), 16)
        self.fc2 = nn.Linear(16, 16)
        self.out = nn.Linear(16, len(CLASSES))

    def forward(self, x):
        return self.out(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


@pytest.fixture(scope="module")
def study():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(240, len(FEATURES), generator=gen)
    y = (x @ torch.randn(len(FEATURES), generator=gen) > 0).long()
    torch.manual_seed(0)
    net = Net()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(30):
        optimizer.zero_grad()
        nn.functional.cross_entropy(net(x[:160]), y[:160]).backward()
        optimizer.step()
    s = xp.Study(net.eval(), train=(x[:160], y[:160]), val=(x[160:200], y[160:200]),
                 test=(x[200:], y[200:]), feature_names=FEATURES, class_names=CLASSES, seed=0)
    s.score("lrp", classes=[0])
    s.prune(0.4)
    s.retrain(epochs=1, progress=False)
    return s


def test_names_of_your_own_tensors_reach_shapley_why_and_forgotten(study):
    frame = study.shapley(0, -1, n=4, background_size=8, progress=False).to_frame()
    assert sorted(frame["feature"]) == sorted(FEATURES)
    assert list(study.why().per_class_accuracy["class"]) == CLASSES
    assert set(study.forgotten(0, -1, saliency=False).per_class()["class"]) <= set(CLASSES)


def test_why_after_retraining_explains_the_class_aware_prune(study):
    assert study.step.kind == "retrain"
    prune = study.history[1]
    why = study.why()
    frame = why.to_frame()
    assert len(frame) == sum(len(units) for units in prune.removed.values()) > 0
    # scored on malignant examples only: relevance for malignant, none for benign
    assert np.isfinite(frame["relevance[malignant]"]).all()
    assert frame["relevance[benign]"].isna().all()
    assert why.summary()["max_percentile"] < 45     # 40% pruned: all from the least relevant
    assert study.why(-1).to_frame().equals(frame)


def test_shapley_progress_callable_is_called_with_growing_counts(study):
    calls = []
    study.shapley(0, -1, n=3, background_size=6, progress=lambda d, t: calls.append((d, t)))
    done = [d for d, _ in calls]
    assert done and done == sorted(done) and all(d <= t for d, t in calls)


def test_stakeholder_report_has_why_and_shapley_sections_and_no_nan(study, tmp_path):
    path = write_report(study, tmp_path, title="Own data, pruned by malignant relevance")
    page = path.read_text(encoding="utf-8")
    text = re.sub(r"data:image/png;base64,[^\"']*", "", page)
    why = text.split("Why units were removed", 1)[1].split("<h2>", 1)[0]
    assert "<table" in why and "relevance[malignant]" in why
    assert "alt='shapley' src='data:image/png;base64," in page
    assert "unavailable" not in text
    assert "xprune-glossary" in text and "Shapley rank correlation" in text
    assert not re.search(r"\bnan\b", text, flags=re.IGNORECASE)
