"""The panel's later sections, headless: Sensitivity, Auto, Dynamic, ONNX export, attention maps,
forgotten examples and token highlights. Each test sets controls, clicks, and checks that the
section made its one core call with those settings, showed the result, and put every error in
the status line."""

from __future__ import annotations

import re
import sys

import pytest
import torch
from torch import nn

pytest.importorskip("ipywidgets")

import xprune_nb as xp  # noqa: E402
from xprune_nb.ui.widgets import Panel  # noqa: E402


@pytest.fixture
def study(digits):
    return xp.Study(xp.zoo.load("digits_cnn"), digits, seed=0)


@pytest.fixture
def panel(study):
    p = Panel(study)
    yield p
    if p.busy:
        p.stop()
        p.wait(60)
    p.close()


def status_ok(panel) -> bool:
    return panel.status.startswith("✔")


# ---------------------------------------------------------------------- contract
def test_new_buttons_carry_their_css_classes(panel):
    classes = {
        "xprune-dynamic": panel.dynamic_view.build_button,
        "xprune-dynamic-sweep": panel.dynamic_view.sweep_button,
        "xprune-sensitivity": panel.sensitivity_view.run_button,
        "xprune-sensitivity-preview": panel.sensitivity_view.preview_button,
        "xprune-auto": panel.auto_view.run_button,
        "xprune-onnx": panel.export_view.onnx_button,
        "xprune-attention": panel.explain_view.attention_button,
        "xprune-forgotten": panel.explain_view.forgotten_button,
    }
    for css, button in classes.items():
        assert css in button._dom_classes
    titles = [panel.tabs.get_title(i) for i in range(len(panel.tabs.children))]
    # the original six keep their places; the new sections follow
    assert titles == ["Score", "Prune", "Retrain", "Explain", "History", "Export",
                      "Sensitivity", "Auto", "Dynamic", "Pathways"]
    # a CNN has no attention: the attention maps are not offered
    assert panel.explain_view.attention_row.layout.display == "none"


# ---------------------------------------------------------------------- sensitivity
def test_sensitivity_runs_shows_a_clickable_heat_map_and_previews_a_cell(panel, study):
    view = panel.sensitivity_view
    view.criterion.value = "magnitude"
    view.amounts.value = "0.25, 0.5"
    view.samples.value = "64"
    view.run_button.click()
    assert panel.wait(60), panel.status
    result = view.result
    assert status_ok(panel) and "Sensitivity of 3 channel groups" in panel.status
    assert (result.criterion, result.granularity, result.amounts) == ("magnitude", "channel",
                                                                      [0.25, 0.5])
    assert len(study.history) == 1 and study.scores_at(0) is None     # nothing changed
    assert view.plot.value[:4] == b"\x89PNG"
    cells = [c for c in view.grid.children if "xprune-sensitivity-cell" in c._dom_classes]
    assert len(cells) == 3 * 2
    assert set(view.layer.options) == {"conv1", "conv2", "fc1"}

    # clicking a cell previews pruning that layer alone at that amount; nothing changes
    cell = next(c for c in cells if c.tooltip.startswith("conv2 alone at 50%"))
    cell.click()
    assert panel.wait(60)
    assert status_ok(panel), panel.status
    assert "Pruning 'conv2' alone at 50% would remove 16" in panel.status
    assert "scored with magnitude/channel first" in panel.status
    assert len(study.history) == 1 and study.current == 0
    removed = dict(re.findall(r"<td[^>]*>(conv1|conv2|fc1)</td><td[^>]*>\w+</td>"
                              r"<td[^>]*>\d+</td><td[^>]*>(\d+)</td>",
                              view.preview_html.value))
    assert removed == {"conv2": "16"}                 # the other layers are left alone
    preview, layer, amount, scored = panel.sensitivity_preview("fc1", 0.25)
    assert (layer, amount, scored) == ("fc1", 0.25, None)   # scored already: one call
    assert {r["group"]: r["remove"] for r in preview.rows} == {"fc1": 16}

    # the metric dropdown redraws the heat map from the same result (no new analysis)
    view.metric.value = "loss"
    assert view.result is result
    assert "loss" in view.grid.children[0].value


def test_sensitivity_errors_and_stop_end_in_the_status_line(panel, study):
    view = panel.sensitivity_view
    view.amounts.value = "half"
    assert panel.sensitivity() is None
    assert panel.status.startswith("✖") and "amounts" in panel.status
    view.amounts.value = "1.5"
    assert panel.sensitivity() is None
    assert panel.status.startswith("✖") and "amounts[0]" in panel.status   # the core's check
    # a cell before any analysis
    assert panel.sensitivity_preview() is None
    assert "run the sensitivity analysis first" in panel.status
    view.amounts.value = "0.5"
    view.criterion.value = "magnitude"
    assert panel.sensitivity() is not None
    assert panel.sensitivity_preview("conv9", 0.5) is None
    assert panel.status.startswith("✖") and "conv9" in panel.status
    assert panel.sensitivity_preview("conv1", 0.3) is None
    assert panel.status.startswith("✖") and "amount" in panel.status
    panel.prune_view.amount.value = 0.2
    panel.score()
    panel.prune()                     # the heat map belongs to step 0, not to step 1
    assert panel.sensitivity_preview("conv1", 0.5) is None
    assert "measured on step 0" in panel.status and len(study.history) == 2
    panel.undo()

    # Stop: the analysis gets the panel's stop signal and ends at its next tick
    real = study.sensitivity

    def stopped_then_real(*args, **kwargs):
        panel.stop()
        return real(*args, **kwargs)

    study.sensitivity = stopped_then_real
    assert panel.sensitivity() is None
    assert panel.status.startswith("⚠") and "stopped" in panel.status
    assert len(study.history) == 2 and study.current == 0       # nothing new


# ---------------------------------------------------------------------- auto
def test_auto_prune_shows_rounds_live_in_history_and_the_outcome(digits):
    study = xp.Study(xp.zoo.load("toy_mlp"), xp.datasets.load("moons"), seed=0)
    panel = Panel(study)
    seen = []
    refresh = panel.history_view.refresh

    def spy(s):
        seen.append((len(s.history), panel.busy))
        refresh(s)

    panel.history_view.refresh = spy
    view = panel.auto_view
    view.budget.value = "params"
    view.value.value = 0.5
    view.max_accuracy_drop.value = "0.1"
    view.steps.value = 2
    view.run_button.click()
    assert panel.wait(120), panel.status
    step = study.step
    assert step.auto.budget == "params" and step.auto.target == 0.5
    assert status_ok(panel) and "auto_prune reached params" in panel.status
    assert step.auto.message in view.outcome.value
    assert "round" in view.rounds.value and "yes" in view.rounds.value
    # the history was redrawn after a kept round while the work still ran
    assert any(busy and n > 1 for n, busy in seen), seen
    assert f"params {step.metrics['params']}" in panel.metrics_text
    panel.close()


def test_auto_tab_passes_the_grounding_limit_and_shows_its_refusal():
    study = xp.Study(xp.zoo.load("toy_mlp"), xp.datasets.load("moons"), seed=0)
    panel = Panel(study)
    view = panel.auto_view
    view.max_grounding_drop.value = "0.05"
    view.grounding_method.value = "integrated_gradients"
    config = view.config()
    assert config["max_grounding_drop"] == 0.05
    assert config["grounding_method"] == "integrated_gradients"
    view.max_grounding_drop.value = ""
    assert view.config()["max_grounding_drop"] is None
    # moons has no evidence boxes: the core's refusal reaches the status, nothing changes
    view.max_grounding_drop.value = "0.05"
    view.run_button.click()
    assert panel.wait(60)
    assert "max_grounding_drop" in panel.status and len(study.history) == 1
    panel.close()


def test_auto_prune_stop_keeps_the_rounds_done(digits):
    study = xp.Study(xp.zoo.load("toy_mlp"), xp.datasets.load("moons"), seed=0)
    panel = Panel(study)
    real = study.auto_prune

    def stop_after_first_round(**kwargs):
        inner = kwargs["progress"]

        def progress(done, total):
            if done >= 1:
                panel.stop()        # as a click on Stop during round 2 would
            inner(done, total)

        return real(**{**kwargs, "progress": progress})

    study.auto_prune = stop_after_first_round
    panel.auto_view.budget.value = "params"
    panel.auto_view.value.value = 0.3
    panel.auto_view.steps.value = 3
    with pytest.warns(UserWarning, match="stopped by the user after round 1"):
        step = panel.auto_prune()
    assert step.auto.rounds == 1 and study.current == step.index > 0
    assert panel.status.startswith("⚠") and "stopped by the user after round 1" in panel.status
    panel.close()


def test_auto_prune_bad_constraints_and_unmet_budgets_are_shown(digits):
    study = xp.Study(xp.zoo.load("toy_mlp"), xp.datasets.load("moons"), seed=0)
    panel = Panel(study)
    view = panel.auto_view
    view.max_accuracy_drop.value = "a lot"
    assert panel.auto_prune() is None
    assert panel.status.startswith("✖") and "max_accuracy_drop" in panel.status
    view.max_accuracy_drop.value = "-0.5"
    assert panel.auto_prune() is None
    assert panel.status.startswith("✖") and "max_accuracy_drop" in panel.status
    assert len(study.history) == 1
    # a budget that cannot be met without losing accuracy: a warning, what it reached
    view.max_accuracy_drop.value = "0"
    view.budget.value = "params"
    view.value.value = 0.05
    view.steps.value = 1
    with pytest.warns(UserWarning, match="short of the budget"):
        panel.auto_prune()
    assert panel.status.startswith("⚠") and "short of the budget 0.05" in panel.status
    panel.close()


# ---------------------------------------------------------------------- dynamic
def _small_dynamic(view) -> None:
    view.k.value = 2
    view.keep.value = 0.5
    view.confidence.value = 0.9
    view.epochs.value = 1
    view.finetune.value = 0
    view.samples.value = "64"


def test_dynamic_build_records_a_step_and_the_strip_shows_its_metrics(panel, study):
    view = panel.dynamic_view
    _small_dynamic(view)
    assert view.at.label == "auto" and view.config()["at"] is None   # the study picks it
    view.build_button.click()
    assert panel.wait(120), panel.status
    step = study.step
    assert step.kind == "dynamic" and status_ok(panel), panel.status
    assert {k: step.config[k] for k in ("k", "keep", "confidence", "epochs", "finetune",
                                        "samples")} == {"k": 2, "keep": 0.5, "confidence": 0.9,
                                                        "epochs": 1, "finetune": 0,
                                                        "samples": 64}
    assert step.config["at"] in [value for _, value in view.at.options[1:]]
    assert "latency not measured yet" in panel.metrics_text   # timed only on Measure
    panel.measure()
    text = panel.metrics_text
    assert f"mean MACs {step.metrics['macs']}" in text
    assert f"longest-path MACs {step.metrics['macs_longest']}" in text
    assert f"early exits {100 * step.metrics['exit_share']:.1f}%" in text
    # the glossary's names (explain/glossary.py)
    assert re.search(r"mean batch-1 latency \d+\.\d+ ms", text) and "(p95)" in text
    assert f"params {step.metrics['params']}" in text
    # glossary names with their plain meaning as tooltips
    assert "saliency rank correlation" in text
    assert "title='Mean Spearman correlation" in panel.metrics.widget.value
    assert "Multiply-accumulates of the most expensive path" in panel.metrics.widget.value
    assert "longest-path MACs" in view.result.value

    # a second build on the dynamic step is refused by the core, shown, nothing changes
    assert panel.dynamic() is None
    assert panel.status.startswith("✖") and "dynamic already" in panel.status
    assert len(study.history) == 2
    # ONNX of a dynamic step: refused with the core's reason
    assert panel.export_onnx("unused.onnx") is None
    assert panel.status.startswith("✖") and "no single ONNX graph" in panel.status
    # why() explains the dynamic step
    assert panel.why() is not None and status_ok(panel)


def test_dynamic_sweep_plots_and_the_sliders_mark_its_points(panel, study):
    view = panel.dynamic_view
    _small_dynamic(view)
    view.sweep_k.value = "2"
    view.sweep_keep.value = "0.5"
    view.sweep_confidence.value = "0.8, 1.0"
    view.sweep_button.click()
    assert panel.wait(120), panel.status
    assert status_ok(panel) and "Swept 2 dynamic settings of step 0" in panel.status
    assert len(study.history) == 1                       # a sweep changes nothing
    frame = view.frame
    assert sorted(frame[frame["technique"] == "dynamic"]["confidence"]) == [0.8, 1.0]
    assert view.plot.value[:4] == b"\x89PNG"
    # 0.9 was not swept: the nearest point is marked, and the text says so
    assert "nearest swept setting" in view.point.value
    view.confidence.value = 1.0                          # redrawn at once, no new sweep
    assert view.frame is frame
    assert "this setting" in view.point.value and "early exits <b>0.0%</b>" in view.point.value
    # a failure inside the slider callback reaches the status line
    view.frame = frame.drop(columns=["macs_mean"])
    view.confidence.value = 0.8
    assert panel.status.startswith("✖") and "Drawing the sweep failed" in panel.status
    view.sweep_keep.value = "lots"
    assert panel.dynamic_sweep() is None
    assert panel.status.startswith("✖") and "keep" in panel.status


def test_dynamic_bad_settings_are_named_in_the_status(panel, study):
    view = panel.dynamic_view
    view.samples.value = "sixty"
    assert panel.dynamic() is None
    assert panel.status.startswith("✖") and "samples" in panel.status
    assert len(study.history) == 1


# ---------------------------------------------------------------------- export
def test_onnx_export_writes_the_file(panel, study, tmp_path):
    pytest.importorskip("onnxruntime")
    target = tmp_path / "model.onnx"
    panel.export_view.onnx_path.value = str(target)
    panel.export_view.onnx_button.click()
    assert panel.wait(120), panel.status
    assert target.is_file() and status_ok(panel), panel.status
    assert "model.onnx" in panel.export_view.preview.value


def test_onnx_export_without_the_deploy_extra_says_how_to_install_it(panel, monkeypatch,
                                                                      tmp_path):
    monkeypatch.setitem(sys.modules, "onnx", None)      # import onnx now raises ImportError
    assert panel.export_onnx(tmp_path / "m.onnx") is None
    assert panel.status.startswith("✖")
    assert "pip install 'xprune_nb[deploy]'" in panel.status
    assert not (tmp_path / "m.onnx").exists()


# ---------------------------------------------------------------------- explain
def test_forgotten_examples_after_a_prune(panel, study):
    panel.score()
    panel.prune_view.amount.value = 0.6
    panel.prune()
    panel.explain_view.n.value = 2
    panel.explain_view.forgotten_button.click()
    assert panel.wait(60), panel.status
    assert status_ok(panel), panel.status
    html = panel.explain_view.html["forgotten"].value
    assert "accuracy_change" in html and "changed prediction" in html
    assert "data:image/png;base64" in html                   # saliency of the examples
    assert panel.explain_view.plots["forgotten"].value[:4] == b"\x89PNG"


def test_attention_maps_only_for_models_with_attention(panel, digits):
    # the CNN: the core's refusal reaches the status line
    assert panel.attention() is None
    assert panel.status.startswith("✖") and "attention" in panel.status
    study = xp.Study(xp.zoo.load("digits_vit"), digits, seed=0)
    vit = Panel(study)
    assert vit.explain_view.attention_row.layout.display is None
    vit.explain_view.n.value = 2
    vit.explain_view.attention_button.click()
    assert vit.wait(60), vit.status
    assert status_ok(vit), vit.status
    assert "heads_before" in vit.explain_view.html["attention"].value
    assert "saliency rank correlation" in vit.explain_view.html["attention"].value
    assert vit.explain_view.plots["attention"].value[:4] == b"\x89PNG"
    vit.close()


class TokenNet(nn.Module):
    """Embedding, one transformer encoder layer, mean pooling, a linear head."""

    def __init__(self, vocab: int = 20, classes: int = 3):
        super().__init__()
        self.embed = nn.Embedding(vocab, 16)
        self.encoder = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True, dropout=0.0)
        self.head = nn.Linear(16, classes)

    def forward(self, ids):
        return self.head(self.encoder(self.embed(ids)).mean(1))


def test_token_models_show_highlighted_text():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 20, (60, 6), generator=g)
    y = (ids[:, 0] % 3).long()
    torch.manual_seed(0)
    study = xp.Study(TokenNet().eval(), train=(ids[:40], y[:40]), val=(ids[40:], y[40:]),
                     test=(ids[40:], y[40:]), seed=0)
    panel = Panel(study)
    assert panel.explain_view.attention_row.layout.display is None    # it has attention
    panel.explain_view.method.value = "integrated_gradients"
    panel.explain_view.n.value = 2
    assert panel.saliency() is not None, panel.status
    html = panel.explain_view.html["saliency"].value
    assert "<span" in html and "Token attributions" in html
    assert panel.explain_view.plots["saliency"].layout.display == "none"   # text, not maps
    panel.close()
