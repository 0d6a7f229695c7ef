"""The panel, headless: set control values, click buttons, and check the study, the status line
and the metrics strip after each action — errors, Stop and double clicks included."""

from __future__ import annotations

import logging
import time

import pytest
import torch

pytest.importorskip("ipywidgets")

import xprune_nb as xp  # noqa: E402
from xprune_nb.core.errors import ConfigError, NotScoredError, PruneError  # noqa: E402
from xprune_nb.ui.widgets import Panel, preview_prune  # noqa: E402
from xprune_nb.ui.widgets._common import parse_classes, parse_layer_amounts  # noqa: E402
from xprune_nb.ui.widgets.retrain import LivePlot  # noqa: E402

CONTRACT = ("score", "preview", "prune", "retrain", "stop", "undo", "export")


@pytest.fixture
def study(digits):
    return xp.Study(xp.zoo.load("digits_cnn"), digits, seed=0)


@pytest.fixture
def panel(study):
    p = Panel(study)
    yield p
    if p.busy:       # a failed test may leave retraining running
        p.stop()
        p.wait(30)
    p.close()


def wait_until(cond, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def params_shown(panel) -> int:
    import re

    return int(re.search(r"params (\d+)", panel.metrics_text).group(1))


def test_contract_classes_and_first_view(panel, study):
    for action in CONTRACT:
        assert f"xprune-{action}" in panel.buttons[action]._dom_classes
    assert "xprune-status" in panel.status_line.widget._dom_classes
    assert "xprune-metrics" in panel.metrics.widget._dom_classes
    assert "xprune-history" in panel.history_view.table._dom_classes
    m = study.step.metrics
    assert params_shown(panel) == m["params"]
    assert f"accuracy {m['accuracy']:.4f}" in panel.metrics_text
    assert "Ready" in panel.status
    assert "application/vnd.jupyter.widget-view+json" in panel._repr_mimebundle_()


def test_rejects_what_is_not_a_study():
    with pytest.raises(ConfigError, match=r"Panel\(study=...\): expected an xprune_nb.Study"):
        Panel("study")


def test_score_button_scores_with_the_chosen_settings(panel, study):
    panel.score_view.criterion.value = "taylor"
    panel.score_view.samples.value = "64"
    panel.score_view.classes.value = "3, 8"
    panel.buttons["score"].click()
    assert panel.wait(30)
    scores = study.scores_
    assert (scores.criterion, scores.options["samples"], scores.options["classes"]) == (
        "taylor", 64, [3, 8])
    assert "Scored" in panel.status and "taylor" in panel.status
    assert panel.score_view.plot.value[:4] == b"\x89PNG"
    assert list(panel.prune_view.ignore.options) == list(scores.values)
    assert len(study.history) == 1          # scoring records no step


def test_criterion_options_become_controls(panel, study):
    panel.score_view.criterion.value = "magnitude"
    p_control = panel.score_view._option_widgets["p"]
    assert list(p_control.options) == [1, 2]
    p_control.value = 2
    assert panel.score() is not None
    assert study.scores_.options["p"] == 2


def test_preview_changes_nothing_and_predicts_the_prune(panel, study):
    panel.score()
    panel.prune_view.amount.value = 0.4
    state = {k: v.clone() for k, v in study.model.state_dict().items()}
    preview = panel.preview()
    assert "would remove" in panel.status and "Nothing was changed" in panel.status
    assert len(study.history) == 1 and study.current == 0
    assert all(torch.equal(v, study.model.state_dict()[k]) for k, v in state.items())
    assert params_shown(panel) == study.history[0].metrics["params"]
    step = panel.prune()
    assert (preview.params[1], preview.macs[1]) == (step.metrics["params"],
                                                   step.metrics["macs"])
    assert {r["group"]: r["remove"] for r in preview.rows if r["remove"]} == {
        k: len(v) for k, v in step.removed.items()}


def test_preview_of_weight_pruning_predicts_nonzero_params(panel, study):
    panel.score_view.granularity.value = "weight"
    panel.score()
    panel.prune_view.amount.value = 0.5
    preview = panel.preview()
    step = panel.prune()
    assert preview.nonzero_params[1] == step.metrics["nonzero_params"]
    assert preview.macs[0] == preview.macs[1]         # masks do not remove MACs
    assert "dense kernels" in preview.summary()


def test_tabs_that_compute_build_on_first_show(panel, study):
    # opening the panel neither traces the model for branch points nor builds the table
    assert panel.history_view.table.value == "" and len(panel.dynamic_view.at.options) == 1
    panel.tabs.selected_index = 4   # History
    assert "1 steps" in panel.history_view.table.value
    panel.tabs.selected_index = 8   # Dynamic
    options = [value for _, value in panel.dynamic_view.at.options]
    assert len(options) > 1 and "conv1" in options and panel.dynamic_view.at.label == "auto"


def test_prune_click_updates_metrics_history_and_status(panel, study):
    before = study.step.metrics["params"]
    panel.score()
    panel.prune_view.amount.value = 0.3
    panel.buttons["prune"].click()
    assert panel.wait(30)
    assert study.current == 1 and study.step.kind == "prune"
    after = study.step.metrics["params"]
    assert after < before and params_shown(panel) == after
    assert f"params {before} → {after}" in panel.status
    assert "prune magnitude/channel 30%" in panel.history_view.table.value


def test_prune_before_score_says_what_to_do(panel, study):
    assert panel.prune() is None
    assert "Prune failed" in panel.status and "call study.score(criterion) first" in panel.status
    assert isinstance(panel.last_error, NotScoredError)
    assert len(study.history) == 1


@pytest.mark.parametrize("overrides, scope, message", [
    ("conv1=1.5", "global", r"layer_amounts\['conv1'\]=...\): expected a number in \[0, 1\)"),
    ("conv1:0.5", "global", r"layer overrides=...\): expected entries like 'conv1=0.5"),
    ("nope=0.5", "global", r"unknown name 'nope'; valid names are 'conv1', 'conv2', 'fc1'"),
    ("conv1=0.99", "layer", r"would remove every unit of 'conv1'"),
])
def test_bad_prune_settings_fail_in_plain_words_and_change_nothing(panel, study, overrides,
                                                                   scope, message):
    import re

    panel.score()
    panel.prune_view.layer_amounts.value = overrides
    panel.prune_view.scope.value = scope
    state = {k: v.clone() for k, v in study.model.state_dict().items()}
    for action in (panel.preview, panel.prune):
        assert action() is None
        assert re.search(message, panel.status), panel.status
        assert panel.status_line.level == "error"
    assert len(study.history) == 1
    assert all(torch.equal(v, study.model.state_dict()[k]) for k, v in state.items())
    assert isinstance(panel.last_error, (ConfigError, PruneError))


@pytest.mark.parametrize("control, value, message", [
    ("classes", "three", r"score\(classes=...\): expected class indices or names"),
    ("classes", "42", r"Study.score\(classes=...\): expected class indices in \[0, 10\)"),
    ("samples", "many", r"score\(samples=...\): expected a positive integer"),
])
def test_bad_score_settings_fail_in_plain_words(panel, study, control, value, message):
    import re

    getattr(panel.score_view, control).value = value
    assert panel.score() is None
    assert re.search(message, panel.status), panel.status
    assert study.scores_at(0) is None


def test_unexpected_errors_are_shown_not_swallowed(panel, study, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(study, "score", broken)
    with caplog.at_level(logging.ERROR, logger="xprune_nb.ui.widgets"):
        panel.buttons["score"].click()
        panel.wait(10)
    assert "Score failed with an unexpected RuntimeError: disk on fire" in panel.status
    assert isinstance(panel.last_error, RuntimeError)
    assert "disk on fire" in caplog.text        # the traceback is logged as well
    assert not panel.busy


def test_stop_during_retraining_records_a_consistent_step(panel, study):
    panel.retrain_view.epochs.value = 500           # far longer than the test waits
    panel.buttons["retrain"].click()
    wait_until(lambda: panel.status_line.bar.value > 0)
    assert panel.busy and "Retraining" in panel.status
    panel.buttons["stop"].click()
    assert "Stopping" in panel.status
    assert panel.wait(30)
    step = study.step
    assert step.kind == "retrain" and step.stopped and study.current == 1
    assert "stopped by you" in panel.status
    assert step.metrics["params"] == study.history[0].metrics["params"]
    with torch.no_grad():                            # the recorded model is the live one
        assert study.model(study.data.test.X[:4]).shape == (4, 10)
    assert panel.retrain_view.plot.value[:4] == b"\x89PNG"
    assert panel.status_line.bar.layout.display == "none"


def test_second_click_while_busy_is_refused(panel, study):
    panel.retrain_view.epochs.value = 500
    panel.buttons["retrain"].click()
    wait_until(lambda: panel.busy)
    for action in ("retrain", "score", "undo"):
        panel.buttons[action].click()
        assert "Busy: Retraining for 500 epoch(s) is still running" in panel.status
        assert f"so {action} was not started" in panel.status
    panel.stop()
    assert panel.wait(30)
    assert len(study.history) == 2                   # one retraining, not two
    assert study.scores_at(0) is None


def test_stop_during_scoring_leaves_the_study_unchanged(panel, study, monkeypatch):
    score = study.score

    def score_and_press_stop(*args, progress, **kwargs):
        def progress_then_stop(done, total):
            panel.buttons["stop"].click()        # the click arrives between two batches
            progress(done, total)
        return score(*args, progress=progress_then_stop, **kwargs)

    monkeypatch.setattr(study, "score", score_and_press_stop)
    panel.score_view.criterion.value = "taylor"
    assert panel.score() is None
    assert "Scoring with taylor was stopped by you; the study is unchanged." in panel.status
    assert study.scores_at(0) is None and not panel.busy


def test_stop_when_idle_says_so(panel):
    assert panel.stop() is False
    assert "Nothing is running" in panel.status


def test_retrain_then_undo_and_goto_restore_exact_steps(panel, study):
    panel.score()
    panel.prune()
    pruned = study.step.metrics["params"]
    panel.retrain_view.epochs.value = 1
    step = panel.retrain()
    assert step.kind == "retrain" and not step.stopped and "Retrained" in panel.status
    panel.undo()
    assert study.current == 1 and params_shown(panel) == pruned
    panel.buttons["undo"].click()
    panel.wait(10)
    assert study.current == 0 and "Now at step 0" in panel.status
    assert params_shown(panel) == study.history[0].metrics["params"]
    assert panel.undo() is None and "nothing to undo" in panel.status
    panel.history_view.step.value = 2
    panel.history_view.goto_button.click()
    panel.wait(10)
    assert study.current == 2 and "Now at step 2" in panel.status


def test_compare_shows_two_steps(panel, study):
    panel.score()
    panel.prune()
    frame = panel.compare(0, 1)
    assert list(frame.columns[:2]) == ["step 0", "step 1"]
    assert "Step 0 vs step 1" in panel.history_view.compare_html.value


def test_history_plot_is_drawn_when_its_tab_is_shown(panel, study):
    panel.score()
    panel.prune()
    assert panel.history_view.plot.layout.display == "none"
    panel.tabs.selected_index = 4                    # History
    assert panel.history_view.plot.value[:4] == b"\x89PNG"
    assert panel.history_view.plot.layout.display is None


def test_export_writes_the_script_and_the_recipe(panel, study, tmp_path):
    panel.score()
    panel.prune()
    panel.export_view.script_path.value = str(tmp_path / "pruned.py")
    panel.buttons["export"].click()
    assert panel.wait(30)
    assert (tmp_path / "pruned.py").is_file(), panel.status
    assert "Exported the script" in panel.status
    assert "pruned.py" in panel.export_view.preview.value
    out = panel.export_recipe(tmp_path / "pruned.yaml")
    assert out is not None and out.is_file(), panel.status
    assert "prune" in out.read_text()


def test_export_to_an_unwritable_place_fails_in_plain_words(panel, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert panel.export(blocker / "sub" / "x.py") is None
    assert panel.status.startswith("✖ Export failed")


def test_explain_buttons_show_comparisons(panel, study):
    if not all(hasattr(study, m) for m in ("saliency", "why", "drift")):
        pytest.skip("the explain methods are not part of this Study yet")
    panel.score()
    panel.prune()
    panel.explain_view.n.value = 3
    panel.explain_view.inputs.value = "misclassified"
    comparison = panel.saliency()
    assert comparison is not None, panel.status
    assert len(comparison.before) <= 3
    assert panel.explain_view.plots["saliency"].value[:4] == b"\x89PNG"
    # a comparison's numbers are of its rows, named so (the history's are the probe's)
    assert f"(these {len(comparison.targets)} rows)" in panel.explain_view.html["saliency"].value
    assert panel.why() is not None, panel.status
    assert "<table" in panel.explain_view.html["why"].value
    assert panel.drift() is not None, panel.status
    panel.explain_view.inputs.value = "indices"
    panel.explain_view.indices.value = "1, x"
    assert panel.saliency() is None and "expected test-split indices" in panel.status


def test_why_needs_a_prune_step(panel):
    assert panel.why() is None
    assert "no prune step before it" in panel.status


def test_refresh_after_changes_from_code(panel, study):
    study.score("magnitude")
    study.prune(0.5)
    panel.refresh()
    assert params_shown(panel) == study.step.metrics["params"]
    assert list(panel.prune_view.ignore.options) == []         # no scores on the new step
    assert "No scores for the current model (step 1)" in panel.score_view.table.value


def test_live_plot_draws_and_reports_progress(panel):
    seen = []
    live = LivePlot(panel.retrain_view, lambda *a: seen.append(a))
    live.on_train_start(2, 3)
    assert seen == [(0, 6, "epoch 1/2")]   # the bar shows before the first batch ends
    for b in range(3):
        live.on_batch_end(0, b, 1.0 / (b + 1), 0.5)
    live.on_epoch_end(0, {"epoch": 1, "train_loss": 0.6, "val_accuracy": 0.7})
    live.on_train_end(None)
    assert seen[-1][:2] == (3, 6) and "loss" in seen[-1][2]
    assert panel.retrain_view.plot.value[:4] == b"\x89PNG"
    assert "validation accuracy 0.7000" in panel.retrain_view.live.value


def test_a_progress_tick_comes_before_the_first_batch():
    from xprune_nb.measure.training import TickCallback

    ticks = []
    tick = TickCallback(lambda done, total: ticks.append((done, total)))
    tick.on_train_start(2, 3)
    tick.on_batch_end(0, 0, 1.0, 0.5)
    assert ticks == [(0, 6), (1, 6)]


def test_preview_validates_like_prune(study):
    with pytest.raises(NotScoredError, match="call study.score"):
        preview_prune(study, 0.3)
    study.score("magnitude")
    with pytest.raises(ConfigError, match=r"Study.preview\(amount=...\): expected a number"):
        preview_prune(study, 1.0)
    with pytest.raises(ConfigError, match="unknown name 'x'; valid names are 'conv1'"):
        preview_prune(study, 0.3, ignore=["x"])


def test_text_controls_parse_strictly():
    assert parse_layer_amounts("conv1 = 0.5; fc1=0.25") == {"conv1": 0.5, "fc1": 0.25}
    with pytest.raises(ConfigError, match="layer overrides"):
        parse_layer_amounts("conv1=half")
    assert parse_classes("cat, 2", ["dog", "cat", "bird"]) == [1, 2]
    with pytest.raises(ConfigError, match="classes"):
        parse_classes("fish", ["dog", "cat"])


def test_panel_is_the_public_lazy_name():
    assert xp.Panel is Panel
