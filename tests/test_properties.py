"""Property-based tests (hypothesis): random sequences of score / prune / retrain / undo / goto /
save / load / recipe replay on a tiny model, with the study's invariants checked after every
call:

- the current model is exactly the model of the current step (``model_at(current)``);
- parameter counts of the current model match the history's metrics;
- every step's parent is an earlier step, and ``current`` is a valid index;
- a save / load round trip gives an identical study;
- the recipe replays (``Study.from_recipe(study.recipe())``) to the same weights.

A second machine (issue 17) runs a background thread that calls ``save``, ``score``, ``prune``
and ``auto_prune`` at random while the first thread runs its own calls. Checked with the
background paused: every saved file loads (and is a consistent study), no call interleaves
inside another (each successful call held the study's lock once, under its own name, from its
first change to its last), and ``model == model_at(current)``.
"""

from __future__ import annotations

import contextlib
import random
import tempfile
import threading
import time
import warnings
from pathlib import Path

import pytest
import torch
from _bad_input_cases import fingerprint, same
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import xprune_nb as xp
from xprune_nb.core.errors import NotScoredError, PruneError, StudyBusyError

_DATA = {}


def moons():
    if "moons" not in _DATA:
        _DATA["moons"] = xp.datasets.load("moons")
    return _DATA["moons"]


def state_of(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def param_counts(model) -> tuple[int, int]:
    """(total, non-zero) parameters, counted here independently of xprune_nb.measure.metrics: a
    masked
    weight counts its dense size, and its non-zeros after the mask."""
    total = nonzero = 0
    for mod in model.modules():
        for name, p in mod.named_parameters(recurse=False):
            total += p.numel()
            if name.endswith("_orig"):
                p = p * getattr(mod, name[: -len("_orig")] + "_mask")
            nonzero += int((p != 0).sum())
    return total, nonzero


CRITERIA = st.sampled_from([("magnitude", "channel"), ("taylor", "channel"),
                            ("random", "channel"), ("magnitude", "weight")])


class StudyMachine(RuleBasedStateMachine):
    """A user clicking through a study in any order."""

    @initialize()
    def start(self):
        torch.manual_seed(0)
        self.tmp = Path(tempfile.mkdtemp(prefix="xprune_props_"))
        self.study = xp.Study(xp.zoo.load("toy_mlp"), moons(), seed=0)

    # ------------------------------------------------------------------ actions
    @rule(crit=CRITERIA)
    def score(self, crit):
        criterion, granularity = crit
        scores = self.study.score(criterion, granularity=granularity, samples=64)
        assert scores.step == self.study.current

    @precondition(lambda self: self.study.scores_at(self.study.current) is not None)
    @rule(amount=st.floats(0.1, 0.5), steps=st.integers(1, 2))
    def prune(self, amount, steps):
        before = len(self.study.history)
        parent = self.study.current
        try:
            step = self.study.prune(amount, steps=steps)
        except xp.PruneError:
            # refused (e.g. a group would be emptied): the study must be exactly as it was
            assert len(self.study.history) == before and self.study.current == parent
            return
        assert step.kind == "prune" and self.study.current == step.index
        assert len(self.study.history) == before + steps
        first = self.study.history[before]
        assert first.parent == parent

    @rule(seed=st.none() | st.integers(0, 5))
    def retrain(self, seed):
        parent = self.study.current
        step = self.study.retrain(epochs=1, batch_size=128, seed=seed, progress=False)
        assert step.kind == "retrain" and step.parent == parent

    @precondition(lambda self: self.study.current != 0)
    @rule()
    def undo(self):
        parent = self.study.step.parent
        self.study.undo()
        assert self.study.current == parent

    @rule(data=st.data())
    def goto(self, data):
        n = len(self.study.history)
        index = data.draw(st.integers(-n, n - 1))
        self.study.goto(index)
        assert self.study.current == index % n

    @rule()
    def save_and_load(self):
        path = self.study.save(self.tmp / "study.xprune")
        loaded = xp.Study.load(path)
        diff = same(fingerprint(self.study), fingerprint(loaded))
        assert diff is None, f"save/load changed the study: {diff}"
        self.study = loaded   # carry on with the loaded study: it must behave the same

    @rule()
    def replay_recipe(self):
        again = xp.Study.from_recipe(self.study.recipe(), progress=False)
        diff = same(state_of(self.study.model), state_of(again.model))
        assert diff is None, f"the recipe replays to other weights: {diff}"

    # ------------------------------------------------------------------ invariants
    @invariant()
    def model_is_model_at_current(self):
        diff = same(state_of(self.study.model), state_of(self.study.model_at(self.study.current)))
        assert diff is None, f"study.model differs from model_at(current): {diff}"

    @invariant()
    def params_match_history(self):
        metrics = self.study.step.metrics
        total, nonzero = param_counts(self.study.model)
        assert metrics["params"] == total
        assert metrics["nonzero_params"] == nonzero

    @invariant()
    def history_is_a_tree(self):
        history = self.study.history
        assert 0 <= self.study.current < len(history)
        assert history[0].parent is None
        for i, step in enumerate(history):
            assert step.index == i
            if i:
                assert step.parent is not None and 0 <= step.parent < i

    def teardown(self):
        # every step, not only the current one: its model's size is the one recorded
        for step in self.study.history:
            total, _ = param_counts(self.study.model_at(step.index))
            assert total == step.metrics["params"], f"step {step.index}"


StudyMachine.TestCase.settings = settings(
    max_examples=12, stateful_step_count=8, deadline=None, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
TestStudyMachine = StudyMachine.TestCase


@pytest.mark.parametrize("amounts", [[0.3, 0.3], [0.5, 0.2, 0.2]])
def test_prune_undo_redo_is_exact(amounts):
    """Pruning, undoing and pruning again with the same scores gives the same weights."""
    study = xp.Study(xp.zoo.load("toy_mlp"), moons(), seed=0)
    study.score("magnitude")
    states = []
    for amount in amounts:
        study.prune(amount)
        states.append(state_of(study.model))
        study.score("magnitude")
    for _ in amounts:
        study.undo()
    assert study.current == 0
    study.prune(amounts[0])
    assert same(states[0], state_of(study.model)) is None


def test_every_rule_runs_in_a_fixed_sequence():
    """The same rules and invariants, in one fixed order, so each one surely runs."""
    m = StudyMachine()
    m.start()
    checks = [m.model_is_model_at_current, m.params_match_history, m.history_is_a_tree]
    actions = [lambda: m.score(("taylor", "channel")), lambda: m.prune(0.3, 2),
               lambda: m.retrain(None), lambda: m.save_and_load(), lambda: m.replay_recipe(),
               lambda: m.score(("magnitude", "weight")), lambda: m.prune(0.4, 1),
               lambda: m.replay_recipe(), m.undo, m.undo, lambda: m.retrain(3),
               lambda: m.save_and_load(), lambda: m.replay_recipe()]
    for action in actions:
        action()
        for check in checks:
            check()
    assert [s.kind for s in m.study.history].count("prune") == 3
    m.teardown()


# ------------------------------------------------------------------ two threads (issue 17)
#: refusals a call may meet when the other thread changed the study first: busy, or the step it
#: meant to prune from is no longer current (no scores there) or cannot lose more units
EXPECTED_REFUSALS = (StudyBusyError, NotScoredError, PruneError)


class _Recorder:
    """Instruments a study's lock: which top-level lock sessions each call of each thread
    opened. A call that held the lock once, under its own name, had nothing interleaved."""

    def __init__(self):
        self.local = threading.local()
        self.calls: list[tuple[str, list[str]]] = []
        self.guard = threading.Lock()

    def instrument(self, study) -> None:
        lock, local = study.timeline._lock, self.local
        real = lock.acquire

        def acquire(call):
            real(call)
            sessions = getattr(local, "sessions", None)
            if lock.depth == 1 and sessions is not None:
                sessions.append(call)

        lock.acquire = acquire

    def call(self, name: str, fn):
        """Run ``fn``; None if it was refused because of the other thread."""
        self.local.sessions = []
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")     # auto_prune short of its budget
                result = fn()
        except EXPECTED_REFUSALS:
            return None
        finally:
            sessions, self.local.sessions = self.local.sessions, None
        with self.guard:
            self.calls.append((name, sessions))
        return result


class _Background(threading.Thread):
    """Calls save, score, prune and auto_prune at random until stopped; ``paused()`` waits for
    the call in progress to end and holds the next one back."""

    def __init__(self, machine, seed: int):
        super().__init__(daemon=True)
        self.m, self.rng = machine, random.Random(seed)
        self.turn, self.done = threading.Lock(), threading.Event()
        self.error: BaseException | None = None
        self.saves = 0

    def run(self):
        # auto_prune is the long call (tenths of a second here): rarer, so the pauses stay short
        ops = [self.save] * 2 + [self.score] * 3 + [self.prune] * 3 + [self.auto_prune]
        try:
            while not self.done.is_set():
                with self.turn:
                    self.rng.choice(ops)()
                time.sleep(self.rng.uniform(0.0, 0.03))
        except BaseException as exc:   # noqa: BLE001 - reported by the machine's invariants
            self.error = exc

    @contextlib.contextmanager
    def paused(self):
        with self.turn:
            yield

    def save(self):
        if self.saves < 6:   # bounded: every file is loaded by an invariant
            path = self.m.tmp / f"background_{self.saves}.xprune"
            self.saves += 1
            if self.m.rec.call("Study.save", lambda: self.m.study.save(path)) is not None:
                self.m.saved.append(path)

    def score(self):
        crit = self.rng.choice(["magnitude", "taylor"])
        self.m.rec.call("Study.score", lambda: self.m.study.score(crit, samples=64))

    def prune(self):
        amount = self.rng.uniform(0.1, 0.3)
        self.m.rec.call("Study.prune", lambda: self.m.study.prune(amount))

    def auto_prune(self):
        self.m.rec.call("Study.auto_prune",
                        lambda: self.m.study.auto_prune(params=0.6, steps=1, samples=32))


class TwoThreadMachine(RuleBasedStateMachine):
    """A user clicking through a study while the panel works on it in the background."""

    @initialize(seed=st.integers(0, 2 ** 16))
    def start(self, seed):
        torch.manual_seed(0)
        self.tmp = Path(tempfile.mkdtemp(prefix="xprune_threads_"))
        self.study = xp.Study(xp.zoo.load("toy_mlp"), moons(), seed=0)
        self.rec, self.saved, self.loaded = _Recorder(), [], 0
        self.rec.instrument(self.study)
        self.bg = _Background(self, seed)
        self.bg.start()

    # ------------------------------------------------------------------ the first thread
    @rule(crit=CRITERIA)
    def score(self, crit):
        self.rec.call("Study.score", lambda: self.study.score(crit[0], granularity=crit[1],
                                                             samples=64))

    @rule(amount=st.floats(0.1, 0.4), steps=st.integers(1, 2))
    def prune(self, amount, steps):
        self.rec.call("Study.prune", lambda: self.study.prune(amount, steps=steps))

    @rule()
    def retrain(self):
        self.rec.call("Study.retrain", lambda: self.study.retrain(epochs=1, batch_size=128,
                                                                  progress=False))

    @rule(data=st.data())
    def goto(self, data):
        index = data.draw(st.integers(0, len(self.study.history) - 1))
        self.rec.call("Study.goto", lambda: self.study.goto(index))

    @rule()
    def auto_prune(self):
        self.rec.call("Study.auto_prune",
                      lambda: self.study.auto_prune(params=0.6, steps=1, samples=32))

    @rule()
    def save(self):
        path = self.tmp / f"main_{len(self.saved)}.xprune"
        if self.rec.call("Study.save", lambda: self.study.save(path)) is not None:
            self.saved.append(path)

    # ------------------------------------------------------------------ invariants
    @invariant()
    def checked_with_the_background_paused(self):
        with self.bg.paused():
            assert self.bg.error is None, f"the background thread failed: {self.bg.error!r}"
            assert self.study.busy_with is None
            diff = same(state_of(self.study.model),
                        state_of(self.study.model_at(self.study.current)))
            assert diff is None, f"study.model differs from model_at(current): {diff}"
            history = self.study.history
            assert all(s.index == i and (i == 0 or 0 <= s.parent < i)
                       for i, s in enumerate(history))
            for name, sessions in self.rec.calls:
                assert sessions == [name], (
                    f"{name} held the study's lock as {sessions}: another thread's call "
                    "could run inside it")
            for path in self.saved[self.loaded:]:
                loaded = xp.Study.load(path)     # a save that reported success must load
                diff = same(state_of(loaded.model),
                            state_of(loaded.model_at(loaded.current)))
                assert diff is None, f"{path.name} loads inconsistent: {diff}"
            self.loaded = len(self.saved)

    def teardown(self):
        self.bg.done.set()
        self.bg.join(60)
        assert not self.bg.is_alive()


TwoThreadMachine.TestCase.settings = settings(
    max_examples=2, stateful_step_count=6, deadline=None, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
TestTwoThreadMachine = TwoThreadMachine.TestCase
