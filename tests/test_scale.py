"""Measuring on demand and bounded memory (issue 19): what a big model's study defers, caches
and spills, checked on a tiny model with the thresholds lowered."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import TinyResidual

import xprune_nb as xp
from xprune_nb.measure import metrics
from xprune_nb.measure import step as measure
from xprune_nb.record.snapshots import SnapshotStore


def _data(n: int = 48, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 8, 8, generator=g), torch.arange(n) % 4


@pytest.fixture
def lazy(monkeypatch):
    """Every model counts as big: drift is left for the first ask."""
    monkeypatch.setattr(measure, "DRIFT_EAGER_MACS", 0)


def _study(**kwargs):
    X, y = _data()
    torch.manual_seed(0)
    return xp.Study(TinyResidual(num_classes=4), train=(X, y), test=(X[:24], y[:24]),
                    probe_size=8, **kwargs)


def test_lazy_drift_shows_not_measured_yet_then_fills_in_with_progress(lazy):
    study = _study()
    study.score("magnitude")
    study.prune(0.3)
    frame = study.history.to_frame()
    assert frame["not_measured_yet"].tolist() == ["drift", "drift"]
    assert frame["saliency_rank_correlation"].isna().all()
    seen = []
    table = study.drift(progress=lambda done, total: seen.append((done, total)))
    assert seen == [(0, 2), (1, 2), (2, 2)]
    assert all(s.pending == [] for s in study.history)
    col = table.to_frame()["saliency_rank_correlation"].tolist()
    assert col[0] == pytest.approx(1.0) and math.isfinite(col[1])
    assert "not_measured_yet" not in study.history.to_frame().columns


def test_lazy_drift_equals_the_eager_numbers(monkeypatch):
    eager = _study()
    eager.score("magnitude")
    eager.prune(0.3)
    monkeypatch.setattr(measure, "DRIFT_EAGER_MACS", 0)
    lazy = _study()
    lazy.score("magnitude")
    lazy.prune(0.3)
    lazy.drift()
    for a, b in zip(eager.history, lazy.history, strict=True):
        assert a.drift.keys() == b.drift.keys()
        for key, value in a.drift.items():
            assert value == pytest.approx(b.drift[key], nan_ok=True), key


def test_a_stopped_drift_keeps_what_it_measured(lazy):
    study = _study()
    study.score("magnitude")
    study.prune(0.3)
    stop = xp.StopSignal()
    with pytest.raises(xp.errors.StoppedError, match="Study.drift: stopped"):
        study.drift(stop=stop, progress=lambda done, total: done == 1 and stop.set())
    assert study.history[0].pending == [] and study.history[1].pending == ["drift"]


def test_the_panel_strip_says_not_measured_yet(lazy):
    pytest.importorskip("ipywidgets")
    from xprune_nb.ui.widgets.strip import MetricsStrip

    study = _study()
    study.score("magnitude")
    study.prune(0.3)
    strip = MetricsStrip()
    strip.update(study, None, None)
    assert "not measured yet" in strip.text


def test_macs_are_counted_once_per_structure(monkeypatch):
    study = _study()
    calls = []
    real = metrics.macs_of   # every count runs under it: the step's and the surgery check's
    monkeypatch.setattr(metrics, "macs_of", lambda fn: calls.append(1) or real(fn))
    study.retrain(epochs=1, progress=False)          # same structure as the original
    study.evaluate()
    assert calls == []
    study.score("magnitude")
    study.prune(0.3)                                 # a new structure: counted once (in the
    study.retrain(epochs=1, progress=False)          # surgery's check, whose count it takes)
    study.evaluate(step=2)
    assert calls == [1]
    m = [s.metrics["macs"] for s in study.history]   # original, retrain, prune, retrain
    assert m[0] == m[1] > m[2] == m[3]


def test_opening_counts_the_originals_macs_in_its_check_pass(monkeypatch):
    from xprune_nb.models.mechanisms import fit_check

    passes, counts = [], []
    real_pass, real_count = fit_check._counted_pass, metrics.count_macs
    monkeypatch.setattr(fit_check, "_counted_pass", lambda *a: passes.append(1) or real_pass(*a))
    monkeypatch.setattr(measure, "count_macs", lambda *a: counts.append(1) or real_count(*a))
    study = _study()
    assert passes == [1] and counts == []            # one pass checked and counted
    one = study.data.example(1)
    assert study.history[0].metrics["macs"] == real_count(study.original, one, study.forward)


def test_an_opening_the_mac_counter_cannot_run_is_checked_plainly_and_counted_after(
        monkeypatch):
    def refuse(fn):   # e.g. an op the counter cannot dispatch
        raise RuntimeError("no formula for this op")

    monkeypatch.setattr("xprune_nb.study.facade.macs_of", refuse)
    study = _study()                                  # opens: the check ran plainly
    one = study.data.example(1)
    assert study.history[0].metrics["macs"] == metrics.count_macs(study.original, one,
                                                                  study.forward) > 0


def test_evaluate_measures_no_time_unless_asked(monkeypatch):
    study = _study()

    def no_timing(*args, **kwargs):
        raise AssertionError("latency was timed")

    monkeypatch.setattr(metrics, "measure_latency", no_timing)
    m = study.evaluate()
    assert m.latency_ms == {}
    with pytest.raises(AssertionError, match="latency was timed"):
        study.evaluate(latency=True)


def test_evaluate_reports_progress_and_stops():
    study = _study()
    seen = []
    study.evaluate(latency=True, progress=lambda d, t: seen.append((d, t)))
    assert seen[-1][0] == seen[-1][1] and len(seen) >= 3
    stop = xp.StopSignal()
    stop.set()
    with pytest.raises(xp.errors.StoppedError, match="Study.evaluate: stopped"):
        study.evaluate(stop=stop)


def test_latency_repeats_stop_when_the_time_budget_is_spent():
    count = []

    def slow(model, x):
        count.append(1)
        return model(x)

    metrics.measure_latency(torch.nn.Linear(2, 2), torch.zeros(1, 2), slow, repeats=50,
                            warmup=3, budget_s=0.0)
    assert len(count) == 1 + 3        # one warm-up pass and the three timed ones


def test_big_snapshots_spill_to_disk_and_the_original_is_not_copied(tmp_path):
    store = SnapshotStore(max_in_memory=8, directory=tmp_path, memory_bytes=100)
    w = {"w": torch.zeros(20)}            # 80 bytes: only the newest fits in the budget
    store.put(0, w, shared=True)
    store.put(1, {"w": torch.ones(20)})
    store.put(2, {"w": torch.full((20,), 2.0)})
    assert store.get(0)["w"] is w["w"]     # shared, not copied
    assert store.in_memory == [2] and store.on_disk == [1]
    assert store.get(1)["w"].tolist() == [1.0] * 20


def test_step_zero_shares_the_original_weights():
    study = _study()
    assert study.timeline.snapshots.get(0)["stem.weight"] is study.original.stem.weight.data \
        or study.timeline.snapshots.get(0)["stem.weight"].data_ptr() == \
        study.original.stem.weight.data_ptr()
    study.score("magnitude")
    study.prune(0.3)
    study.goto(0)
    assert torch.equal(study.model.stem.weight, study.original.stem.weight)


# ------------------------------------------------------------------ device=
class _DeviceWatch(torch.nn.Module):
    """TinyResidual that records the device of every input it is given."""

    def __init__(self):
        super().__init__()
        self.net = TinyResidual(num_classes=4)
        self.seen: set = set()

    def forward(self, x):
        self.seen.add(x.device.type)
        return self.net(x)


def test_device_auto_is_the_models_own_device_and_everything_runs_there():
    X, y = _data()
    torch.manual_seed(0)
    study = xp.Study(_DeviceWatch(), train=(X, y), test=(X[:24], y[:24]), probe_size=8,
                     device="auto")
    assert study.device == torch.device("cpu")
    study.score("taylor", samples=16)
    study.prune(0.3)
    study.retrain(epochs=1, progress=False)
    study.saliency(0, -1)
    study.evaluate(latency=True)
    for model in (study.model, study.original, study.model_at(1)):
        assert {p.device for p in model.parameters()} == {study.device}
        assert model.seen <= {study.device.type}
    assert all(v.device.type == "cpu" for v in study.scores_at(0).values.values())


@pytest.mark.parametrize("device, match", [
    ("gpu", r'Study\(device=...\): expected "auto", "cpu", "cuda"'),
    (3, r"Study\(device=...\): expected .* got 3"),
    ("xla", r"Study\(device='xla'\): expected .* got a 'xla' device"),
])
def test_device_refuses_what_it_cannot_use(device, match):
    X, y = _data()
    with pytest.raises(xp.errors.ConfigError, match=match):
        xp.Study(TinyResidual(num_classes=4), train=(X, y), device=device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_device_cuda_is_refused_without_a_gpu():
    X, y = _data()
    with pytest.raises(xp.errors.ConfigError, match="CUDA is not available"):
        xp.Study(TinyResidual(num_classes=4), train=(X, y), device="cuda")


def test_a_study_file_holds_cpu_tensors_and_loads_on_the_device_asked(tmp_path):
    study = _study(device="cpu")
    study.score("magnitude")
    study.prune(0.3)
    study.save(tmp_path / "s.xprune")
    back = xp.Study.load(tmp_path / "s.xprune", model=TinyResidual(num_classes=4),
                         data=study.data, device="cpu")
    assert back.device == torch.device("cpu") and back.current == 1
    assert torch.equal(back.model.head.weight, study.model.head.weight)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA-only: needs a GPU")
def test_cuda_only_study_on_gpu_saves_cpu_tensors_and_loads_on_cpu(tmp_path):
    study = _study(device="cuda")
    assert next(study.model.parameters()).is_cuda
    study.score("taylor", samples=16)
    study.prune(0.3)
    study.retrain(epochs=1, progress=False)
    assert study.evaluate(latency=True).latency_ms
    study.save(tmp_path / "s.xprune")
    payload = torch.load(tmp_path / "s.xprune", weights_only=True)   # no map_location
    saved = [payload["original_state"], *payload["states"]]
    assert all(v.device.type == "cpu" for state in saved for v in state.values())
    back = xp.Study.load(tmp_path / "s.xprune", model=TinyResidual(num_classes=4),
                         data=study.data, device="cpu")
    assert back.device.type == "cpu"
    assert torch.allclose(back.model.head.weight, study.model.head.weight.cpu())


# ------------------------------------------------------------------ round_to=
def test_round_to_keeps_multiples_of_channels_and_replays_from_the_recipe():
    study = _study()
    study.score("magnitude")
    with pytest.raises(xp.errors.PruneError, match="smaller round_to"):
        study.prune(0.05, round_to=4)
    step = study.prune(0.5, round_to=4)
    kept = {name: m.out_channels for name, m in study.model.named_modules()
            if isinstance(m, torch.nn.Conv2d)}
    assert all(n % 4 == 0 for n in kept.values()), kept
    assert step.metrics["params"] < study.history[0].metrics["params"]
    assert step.config["round_to"] == 4
    replay = xp.Study.from_recipe(study.recipe(model={"kwargs": {"num_classes": 4}}),
                                  model=study.model_at(0), data=study.data, progress=False)
    assert replay.step.metrics["params"] == step.metrics["params"]
    assert torch.equal(replay.model.head.weight, study.model.head.weight)


def test_round_to_is_refused_for_weights_and_bad_values():
    study = _study()
    study.score("magnitude", granularity="weight")
    with pytest.raises(xp.errors.ConfigError, match=r"Study.prune\(round_to=8\).*'weight'"):
        study.prune(0.3, round_to=8)
    study.score("magnitude")
    with pytest.raises(xp.errors.ConfigError, match="round_to"):
        study.prune(0.3, round_to=0)
    assert len(study.history) == 1


def test_opening_a_study_reports_progress():
    X, y = _data()
    seen = []
    xp.Study(TinyResidual(num_classes=4), train=(X, y), test=(X[:24], y[:24]),
             progress=lambda done, total: seen.append((done, total)))
    assert seen and seen[-1][0] == seen[-1][1]
    with pytest.raises(xp.errors.ConfigError, match="progress"):
        xp.Study(TinyResidual(num_classes=4), train=(X, y), progress="yes")


def test_compare_techniques_and_dynamic_stop_and_leave_nothing_behind():
    stop = xp.StopSignal()
    stop.set()
    with pytest.raises(xp.errors.StoppedError, match="compare_techniques"):
        xp.compare_techniques(xp.zoo.load("toy_mlp"), xp.datasets.load("moons"),
                              techniques=["magnitude_weights"], onnx=False, stop=stop)
    study = _study()
    with pytest.raises(xp.errors.StoppedError, match="stopped by the user"):
        study.dynamic(k=2, keep=0.5, epochs=1, samples=16, stop=stop)
    assert len(study.history) == 1 and study.step.kind == "original"


# ------------------------------------------------------------------ bounded work per step
def test_prune_recalibrates_a_big_model_on_fewer_examples(monkeypatch):
    from xprune_nb.models.mechanisms import recalibrate

    X, y = (torch.randn(700, 1, 8, 8, generator=torch.Generator().manual_seed(0)),
            torch.arange(700) % 4)
    torch.manual_seed(0)
    study = xp.Study(TinyResidual(num_classes=4), train=(X, y), test=(X[:24], y[:24]),
                     probe_size=8)
    study.score("magnitude")
    assert recalibrate.samples_for(2e6) == 640 and recalibrate.samples_for(None) == 640
    assert study.prune(0.2).config["recalibration"]["examples"] == 640   # small: in full
    study.undo()
    monkeypatch.setattr(recalibrate, "RECALIBRATION_MACS", 1)   # every model counts as big
    step = study.prune(0.2)
    assert step.config["recalibration"]["examples"] == recalibrate.RECALIBRATION_MIN_SAMPLES


class _Twice(torch.nn.Module):
    """In-place ReLU right after a conv (no BatchNorm), and a layer called twice."""

    def __init__(self):
        super().__init__()
        self.c1 = torch.nn.Conv2d(1, 6, 3)
        self.act = torch.nn.ReLU(inplace=True)
        self.shared = torch.nn.Conv2d(6, 6, 3, padding=1)
        self.head = torch.nn.Linear(6, 4)

    def forward(self, x):
        x = self.act(self.c1(x))
        x = self.shared(torch.relu(self.shared(x)))
        return self.head(x.mean((2, 3)))


def _retained(model, X, y, batch: int) -> dict:
    """Reference: every output's gradient retained, then Molchanov's |mean(a * g)|."""
    totals: dict = {}
    out: dict = {}

    def keep(module, inputs, o, n):
        o.retain_grad()
        out[n] = o     # a layer called twice: its last call, as the criterion counts

    for i in range(0, len(X), batch):
        out.clear()
        hooks = [m.register_forward_hook(lambda m, i_, o, n=n: keep(m, i_, o, n))
                 for n, m in model.named_children() if n != "act"]
        loss = torch.nn.functional.cross_entropy(model(X[i:i + batch]), y[i:i + batch],
                                                 reduction="sum")
        loss.backward()
        for h in hooks:
            h.remove()
        for n, o in out.items():
            a = o.detach().flatten(2).transpose(1, 2) if o.dim() == 4 else o.detach()[:, None]
            g = o.grad.flatten(2).transpose(1, 2) if o.dim() == 4 else o.grad[:, None]
            v = (a * g).mean(dim=1).abs().sum(dim=0).double()
            totals[n] = totals.get(n, 0) + v
    return {n: (t / len(X)).float() for n, t in totals.items()}


def test_taylor_keeps_no_gradient_and_matches_retained_gradients():
    from xprune_nb.criteria.base import ScoringContext
    from xprune_nb.criteria.gradient import TaylorCriterion

    X, y = _data(24)
    torch.manual_seed(0)
    model = _Twice().eval()
    layers = {n: m for n, m in model.named_children() if n != "act"}
    ctx = ScoringContext(model=model, granularity="channel", layers=layers, inputs=X,
                         targets=y, classes=None, num_classes=4,
                         forward=lambda m, x: m(x), batch_size=8)
    scores = TaylorCriterion().channel_scores(ctx)
    assert all(p.grad is None for p in model.parameters())   # nothing left behind
    expected = _retained(model, X, y, 8)
    assert set(scores) == set(expected) == {"c1", "shared", "head"}
    for name in expected:
        assert torch.allclose(scores[name], expected[name], rtol=1e-5, atol=1e-9), name
