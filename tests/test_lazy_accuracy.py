"""A big model's step measures its accuracy on first ask (issue 19, "Measure on demand"):
opening and pruning run no pass over the evaluation data, displays say "not measured yet",
and the first read of a step's numbers measures exactly what the eager step would have
recorded. Checked on a tiny model with the threshold lowered (every model counts as big)."""

from __future__ import annotations

import copy
import pickle
import threading

import pytest
import torch
from conftest import TinyResidual

import xprune_nb as xp
from xprune_nb.measure import step as measure


def _data(n: int = 48, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 8, 8, generator=g), torch.arange(n) % 4


def _study(**kwargs):
    X, y = _data()
    torch.manual_seed(0)
    return xp.Study(TinyResidual(num_classes=4), train=(X, y), test=(X[:24], y[:24]),
                    probe_size=8, **kwargs)


def _pruned(**kwargs):
    study = _study(**kwargs)
    study.score("magnitude")
    study.prune(0.3)
    return study


@pytest.fixture
def big(monkeypatch):
    """Every model counts as big: its accuracy is left for the first ask; evaluations counted."""
    calls = []
    real = measure.evaluate_model
    monkeypatch.setattr(measure, "ACCURACY_EAGER_MACS", 0)
    monkeypatch.setattr(measure, "evaluate_model",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


def test_open_and_prune_a_big_model_run_no_evaluation_and_say_not_measured_yet(big):
    study = _pruned()
    assert big == []                                   # no pass over the evaluation data
    steps = list(study.history)
    assert [s.pending for s in steps] == [["accuracy"], ["accuracy"]]
    assert "accuracy" not in steps[1].known() and steps[1].known()["params"] > 0
    assert "not measured yet" in repr(study) and "not measured yet" in repr(steps[1])
    assert "not measured yet" in study.history._repr_html_()
    assert "step.metrics" in study.history._repr_html_()    # how to get the number
    assert "not measured yet" in study._repr_html_() and "not measured yet" in \
        steps[1]._repr_html_()
    shown = study.history.to_frame(measure=False)
    assert shown["accuracy"].isna().all() and set(shown["not_measured_yet"]) == {"accuracy"}
    assert big == []                                   # displays never measure


def test_the_first_read_measures_exactly_what_the_eager_step_records(big, monkeypatch):
    lazy = _pruned()
    acc = lazy.history[1].metrics["accuracy"]          # the first ask: measured now
    assert big == [1] and lazy.history[1].pending == [] and lazy.history[0].pending
    monkeypatch.setattr(measure, "ACCURACY_EAGER_MACS", 1e30)
    eager = _pruned()
    for i in (0, 1):
        assert lazy.history[i].metrics == eager.history[i].metrics
        assert lazy.history[i].per_class_accuracy == eager.history[i].per_class_accuracy
    assert acc == eager.history[1].metrics["accuracy"]
    assert lazy.history.to_frame()["accuracy"].notna().all()


def test_the_table_and_the_plot_measure_what_they_show_the_panel_does_not(big):
    study = _pruned()
    study.history.plot(measure=False)
    assert big == []
    frame = study.history.to_frame()                   # asking for the data measures it
    assert big == [1, 1] and frame["accuracy"].notna().all()
    assert "not_measured_yet" not in frame.columns


def test_evaluate_of_a_step_keeps_its_numbers_for_the_step(big):
    study = _pruned()
    found = study.evaluate(step=1, latency=True)
    assert study.history[1].pending == [] and big == [1]
    assert study.history[1].metrics["accuracy"] == found.accuracy
    assert not any(k.startswith("latency_") for k in study.history[1].metrics)


def test_a_saved_study_keeps_the_accuracy_pending_and_measures_it_after_loading(big, tmp_path):
    study = _pruned()
    study.save(tmp_path / "s.xps")
    assert big == []                                   # saving measures nothing
    loaded = xp.Study.load(tmp_path / "s.xps", model=TinyResidual(num_classes=4))
    assert loaded.history[1].pending == ["accuracy"]
    assert loaded.history[1].metrics["accuracy"] == study.history[1].metrics["accuracy"]


def test_copies_and_pickles_of_a_step_carry_its_numbers_not_its_study(big):
    study = _pruned()
    step = study.history[1]
    for other in (copy.deepcopy(step), pickle.loads(pickle.dumps(step))):
        assert other.pending == ["accuracy"] and "accuracy" not in other.metrics
    assert big == []


def test_a_read_from_another_thread_while_the_study_is_busy_measures_a_rebuilt_copy(big):
    study = _pruned()
    live = study.model
    entered, release = threading.Event(), threading.Event()

    def hold():
        with study.timeline.hold("Study.retrain"):
            entered.set()
            release.wait(30)

    worker = threading.Thread(target=hold)
    worker.start()
    try:
        assert entered.wait(30)
        seen = []
        real = measure.evaluate_model
        measure.evaluate_model = lambda model, *a, **k: seen.append(model) or real(model, *a, **k)
        try:
            acc = study.history[1].metrics["accuracy"]
        finally:
            measure.evaluate_model = real
        assert seen and seen[0] is not live             # the busy thread's model is not touched
    finally:
        release.set()
        worker.join()
    assert acc == study.evaluate().accuracy


def test_the_panel_shows_not_measured_yet_and_measure_fills_it_in(big):
    pytest.importorskip("ipywidgets")
    study = _pruned()
    panel = xp.Panel(study)
    assert "accuracy not measured yet" in panel.metrics_text
    assert big == []
    panel.measure()
    assert study.history[0].pending == study.history[1].pending == []
    assert "accuracy not measured yet" not in panel.metrics_text
    assert "accuracy" in panel.metrics_text


def test_dynamic_steps_are_measured_at_once(big):
    study = _study()
    study.score("magnitude")
    step = study.dynamic(k=2, keep=0.5, epochs=1, finetune=0)
    assert "accuracy" not in step.pending and "accuracy" in step.known()


@pytest.mark.parametrize("zoo_name, granularity", [
    ("digits_resnet", "channel"), ("digits_vit", "head"), ("digits_vit", "block"),
    ("digits_lstm", "recurrent")])
def test_the_still_runs_check_counts_the_macs_the_step_records(zoo_name, granularity,
                                                               monkeypatch):
    """The surgery's check runs the pruned model once and counts its MACs in the same pass:
    the step records that count (equal to a fresh one), and no second counting pass runs."""
    from xprune_nb.measure import metrics

    data = xp.datasets.load("digits")
    study = xp.Study(xp.zoo.load(zoo_name), data, seed=0)
    study.score("magnitude", granularity=granularity)
    counted = []
    real = measure.count_macs
    monkeypatch.setattr(measure, "count_macs", lambda *a, **k: counted.append(1) or real(*a, **k))
    step = study.prune(0.2, recalibrate=False)
    assert counted == []
    assert step.metrics["macs"] == metrics.count_macs(study.model, study.data.example(1),
                                                      study.forward)
    assert step.metrics["macs"] < study.history[0].metrics["macs"]


def test_a_model_the_mac_counter_cannot_run_is_still_checked_and_counted(monkeypatch):
    from xprune_nb.measure import metrics

    study = _study()
    study.score("magnitude")
    real = metrics.macs_of
    monkeypatch.setattr(metrics, "macs_of", lambda fn: (_ for _ in ()).throw(RuntimeError("x")))
    monkeypatch.setattr(measure, "count_macs", lambda m, x, f: real(lambda: f(m, x)))
    step = study.prune(0.3)                            # the check ran the model plainly
    assert step.metrics["macs"] == real(lambda: study.forward(study.model,
                                                              study.data.example(1)))


def _fingerprint(model):
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
                for m in model.modules())
    attention = getattr(getattr(model, "config", None), "_attn_implementation", None)
    return ({k: v.clone() for k, v in model.state_dict().items()}, model.training, hooks,
            [type(m) for m in model.modules()], attention)


def _hf_vit_study():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = transformers.ViTForImageClassification(transformers.ViTConfig(
        num_labels=4, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=48, image_size=16, patch_size=8)).eval()
    x = torch.randn(24, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    return xp.Study(model, train=(x, torch.arange(24) % 4), seed=0)


@pytest.mark.parametrize("zoo_name", ["digits_resnet", "digits_vit", "hf_vit"])
def test_explanations_of_step_zero_read_the_original_itself_and_leave_it_untouched(zoo_name,
                                                                                   monkeypatch):
    """Step 0's model is the original itself for every explanation (no rebuilt copy of a big
    model's weights); no method changes its weights, mode, hooks or modules."""
    from xprune_nb import explain
    from xprune_nb.core.errors import XPruneError

    study = _hf_vit_study() if zoo_name == "hf_vit" else xp.Study(
        xp.zoo.load(zoo_name), xp.datasets.load("digits"), seed=0)
    study.score("magnitude")
    study.prune(0.2)
    rebuilt = []
    real = study.timeline.model_at
    monkeypatch.setattr(study.timeline, "model_at", lambda i: rebuilt.append(i) or real(i))
    before = _fingerprint(study.original)
    ran = 0
    for method in explain.METHODS:
        try:
            study.saliency(0, -1, method=method, n=2)
            ran += 1
        except XPruneError:   # a method this architecture does not have (e.g. attention)
            continue
    study.shapley(0, -1, inputs=study.data.test.X[:2], background=study.data.test.X[:4],
                  nsamples=4)
    study.forgotten(0, -1)
    after = _fingerprint(study.original)
    assert ran >= 3 and rebuilt == []
    assert before[1:] == after[1:]
    assert all(torch.equal(v, after[0][k]) for k, v in before[0].items())
