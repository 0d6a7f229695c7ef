"""The study's lock and transactions across threads and Ctrl-C (issue 17, causes 6 and 7).

- ``save()`` while another thread changes the study is refused with ``StudyBusyError`` and never
  writes a file that does not load;
- ``auto_prune`` holds the lock for its whole run (``busy_with`` names it throughout, other
  threads' calls are refused) and commits round by round: Ctrl-C leaves the study on the last
  kept round, never on a rejected one, also when it lands while a rejected try is undone;
- a second Ctrl-C during a rollback does not leave half of it.
"""

from __future__ import annotations

import threading

import pytest
from _bad_input_cases import Blocker, fingerprint, same

import xprune_nb as xp
from xprune_nb.core.errors import StudyBusyError
from xprune_nb.pruning import auto as auto_module
from xprune_nb.record.timeline import Timeline


@pytest.fixture(scope="module")
def data():
    return xp.datasets.load("moons")


def _study(data):
    return xp.Study(xp.zoo.load("toy_mlp"), data, seed=0)


def _consistent(study) -> str | None:
    return same(study.model.state_dict(), study.model_at(study.current).state_dict())


def _background(fn):
    outcome = {}

    def run():
        try:
            outcome["result"] = fn()
        except BaseException as exc:   # noqa: BLE001 - reported by the test
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


# ------------------------------------------------------------------ save (cause 6)
def test_save_during_a_background_retrain_is_refused_and_never_writes_a_broken_file(
        data, tmp_path):
    """The retrain in another thread commits its step while the save gathers the weights of
    every step: without the lock this wrote "the weights of N+1 steps for N steps"."""
    study = _study(data)
    block = Blocker()
    main = threading.current_thread()
    store = study.timeline.snapshots
    real_get = store.get

    def get_while_the_retrain_commits(index):
        # the first read of the save lets the retrain finish and commit its step
        if threading.current_thread() is main and not block.release.is_set():
            block.release.set()
            thread.join(60)
        return real_get(index)

    store.get = get_while_the_retrain_commits
    thread, outcome = _background(
        lambda: study.retrain(epochs=1, callbacks=[block], progress=False))
    assert block.started.wait(30)
    target = tmp_path / "during.xprune"
    try:
        try:
            study.save(target)
        except StudyBusyError as exc:
            refused = exc
        else:
            xp.Study.load(target)     # a save that reports success must load
            refused = None
    finally:
        block.release.set()
        thread.join(60)
        store.get = real_get
    assert "error" not in outcome, outcome
    assert refused is not None, "save ran while another thread changed the study"
    assert "Study.save" in str(refused) and "Study.retrain" in str(refused), str(refused)
    assert not target.exists()
    # once the retrain is done, the same save works and loads with both steps
    loaded = xp.Study.load(study.save(target))
    assert len(loaded.history) == 2 and loaded.current == 1


def test_changing_calls_are_refused_while_a_save_writes(data, tmp_path, monkeypatch):
    study = _study(data)
    study.score("magnitude")
    writing, release, seen = threading.Event(), threading.Event(), {}
    from xprune_nb.record.io import study_file

    real = study_file.write_study_file

    def slow_write(*a, **k):
        writing.set()
        release.wait(30)
        return real(*a, **k)

    monkeypatch.setattr(study_file, "write_study_file", slow_write)
    thread, outcome = _background(lambda: study.save(tmp_path / "s.xprune"))
    assert writing.wait(30)
    try:
        seen["busy"] = study.busy_with
        with pytest.raises(StudyBusyError, match=r"Study\.prune.*busy with Study\.save"):
            study.prune(0.3)
    finally:
        release.set()
        thread.join(60)
    assert "error" not in outcome, outcome
    assert seen["busy"] == "Study.save"
    assert len(study.history) == 1
    xp.Study.load(tmp_path / "s.xprune")


# ------------------------------------------------------------------ auto_prune (cause 7)
def test_auto_prune_holds_the_lock_for_its_whole_run(data, tmp_path):
    """Between rounds (at every progress tick) and inside them (at every commit), the study
    is busy with auto_prune; other threads' score, prune and save are refused."""
    study = _study(data)
    study.score("magnitude")      # so that the refused prune gets as far as the lock
    at_tick, go_on = threading.Event(), threading.Event()
    ticks, commits = [], []
    real_commit = study.timeline.commit

    def commit(step, model):
        commits.append(study.busy_with)
        return real_commit(step, model)

    study.timeline.commit = commit

    def progress(done, total):
        ticks.append(done)
        if done == 0:           # the run has begun: hold it here while the test pokes
            at_tick.set()
            go_on.wait(30)

    thread, outcome = _background(lambda: study.auto_prune(params=0.5, steps=2, samples=64,
                                                           progress=progress))
    assert at_tick.wait(60)
    refused = []
    try:
        busy = study.busy_with
        for call in (lambda: study.score("magnitude"), lambda: study.prune(0.2),
                     lambda: study.save(tmp_path / "x.xprune"), lambda: study.goto(0)):
            try:
                call()
            except StudyBusyError as exc:
                refused.append(str(exc))
    finally:
        go_on.set()
        thread.join(120)
    assert "error" not in outcome, outcome
    assert busy == "Study.auto_prune"
    assert len(refused) == 4 and all("busy with Study.auto_prune" in r for r in refused), refused
    assert commits and set(commits) == {"Study.auto_prune"}, commits
    assert study.busy_with is None
    assert [s.kind for s in study.history][0] == "original"
    assert all(s.kind == "prune" for s in study.history[1:])
    assert _consistent(study) is None


def _always_rejected(monkeypatch):
    """Judge every try as breaking a constraint (the reason does not matter here)."""
    real = auto_module.violations

    def broken(*a, **k):
        _, values = real(*a, **k)
        return ["forced rejection"], values

    monkeypatch.setattr(auto_module, "violations", broken)


def test_ctrl_c_while_a_rejected_try_is_undone_leaves_the_last_kept_round(data, monkeypatch):
    study = _study(data)
    before = fingerprint(study, timings=False)
    _always_rejected(monkeypatch)
    real_go = Timeline.go
    calls = []

    def go(self, index):
        calls.append(index)
        if len(calls) == 1:
            raise KeyboardInterrupt("Ctrl-C while going back from a rejected try")
        return real_go(self, index)

    monkeypatch.setattr(Timeline, "go", go)
    with pytest.raises(KeyboardInterrupt):
        study.auto_prune(params=0.5, steps=2, samples=64)
    assert calls == [0]
    assert study.current == 0, "the study was left on the rejected try"
    assert same(before, fingerprint(study, timings=False)) is None
    assert _consistent(study) is None
    assert study.busy_with is None


def test_a_second_ctrl_c_during_the_rollback_is_absorbed(data, monkeypatch):
    """Ctrl-C while a rejected try is undone, then again while the transaction rebuilds the
    model it rolls back to: the rollback still finishes."""
    study = _study(data)
    before = fingerprint(study, timings=False)
    _always_rejected(monkeypatch)
    real_go, real_restore = Timeline.go, Timeline._restore
    hits = {"go": 0, "restore": 0}

    def go(self, index):
        hits["go"] += 1
        if hits["go"] == 1:
            raise KeyboardInterrupt("first Ctrl-C")
        return real_go(self, index)

    def restore(self, saved):
        hits["restore"] += 1
        if hits["restore"] == 1:      # half of the restore is done: history cut, model not
            self.history.current = saved[1]
            del self.history[saved[0]:]
            raise KeyboardInterrupt("second Ctrl-C")
        return real_restore(self, saved)

    monkeypatch.setattr(Timeline, "go", go)
    monkeypatch.setattr(Timeline, "_restore", restore)
    with pytest.raises(KeyboardInterrupt, match="first"):
        study.auto_prune(params=0.5, steps=2, samples=64)
    assert hits == {"go": 1, "restore": 2}
    assert same(before, fingerprint(study, timings=False)) is None
    assert _consistent(study) is None


def test_ctrl_c_in_a_later_round_keeps_the_earlier_rounds(data, monkeypatch):
    study = _study(data)
    kept = {}

    def progress(done, total):
        if done == 1:
            kept["fp"] = fingerprint(study, timings=False)

    from xprune_nb.study import prune_round as runner

    real_round = runner.prune_round
    rounds = []

    def prune_round(*a, **k):
        rounds.append(1)
        if len(rounds) == 2:
            raise KeyboardInterrupt("Ctrl-C in round 2")
        return real_round(*a, **k)

    monkeypatch.setattr(runner, "prune_round", prune_round)
    with pytest.raises(KeyboardInterrupt):
        study.auto_prune(params=0.3, steps=3, samples=64, progress=progress)
    assert "fp" in kept, "round 1 was never kept"
    assert len(rounds) == 2
    assert study.current != 0 and study.step.kind == "prune"
    # exactly the study after round 1: round 2's scores are gone too
    assert same(kept["fp"], fingerprint(study, timings=False)) is None
    assert _consistent(study) is None


def test_a_rollback_finishes_despite_a_second_ctrl_c(data, monkeypatch):
    """A plain prune interrupted twice: during its surgery, then while the rollback rebuilds
    the model it started from."""
    study = _study(data)
    study.score("magnitude")
    before = fingerprint(study, timings=False)
    from xprune_nb.study import prune_round as runner

    def failing_round(*a, **k):
        study.timeline.mark_dirty()
        for p in study.model.parameters():     # the surgery had begun in place
            p.data.mul_(0)
        raise KeyboardInterrupt("first")

    real_model_at, hits = Timeline.model_at, []

    def model_at(self, index):
        hits.append(index)
        if len(hits) == 1:
            raise KeyboardInterrupt("second")
        return real_model_at(self, index)

    monkeypatch.setattr(runner, "prune_round", failing_round)
    monkeypatch.setattr(Timeline, "model_at", model_at)
    with pytest.raises(KeyboardInterrupt, match="first"):
        study.prune(0.3)
    assert len(hits) == 2
    monkeypatch.undo()
    assert same(before, fingerprint(study, timings=False)) is None
    assert _consistent(study) is None
