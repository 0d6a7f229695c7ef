"""The record of a study: its history, weights, scores and current model, changed in transactions.

:class:`Timeline` owns the history (a tree of :class:`~xprune_nb.core.history.Step`), the weights of
every step (:class:`~xprune_nb.record.snapshots.SnapshotStore`), the scores computed at each step,
and the current model. Every mutating call of a :class:`~xprune_nb.Study` runs inside
:meth:`Timeline.transaction`: it holds the study's lock (a second mutating call from another
thread is refused at once, never waited for, since waiting on the kernel's thread can deadlock)
and, on any exception including ``KeyboardInterrupt``, puts the history, the current step, the
scores and the model back exactly as they were. New steps enter through :meth:`commit` only.

A call made of rounds that each stand on their own (``auto_prune``) holds the lock for its whole
run with :meth:`Timeline.hold` and opens one transaction per round inside it: a kept round stays,
the round in progress is undone as a whole. Reading the whole record at once (``Study.save``)
holds the lock too, so it never sees half a change.

:func:`~xprune_nb.pruning.rebuild.rebuild` replays recorded structural changes
(``Step.structure``) on a fresh copy of the original model; it lives with the unit kinds that
replay them, and checkpoints, distributed ranks and ``model_at`` all use it.
"""

from __future__ import annotations

import contextlib
import copy
import threading
from collections.abc import Iterator

import torch
from torch import nn

from ..core.errors import ConfigError, StudyBusyError
from ..core.history import History, Step
from ..pruning.rebuild import STEP_REPLAYERS, rebuild, structure_entry
from .snapshots import SnapshotStore

__all__ = ["Timeline", "rebuild", "structure_entry", "STEP_REPLAYERS"]


def _versions(model: nn.Module) -> dict[str, tuple[torch.Tensor, int]]:
    """Each tensor of ``model``'s state and its version counter (every in-place change bumps
    it): compared with :func:`_unchanged`, an O(tensors) proof that nothing changed since."""
    return {k: (v, v._version) for k, v in model.state_dict(keep_vars=True).items()}


def _unchanged(model: nn.Module, taken: dict | None) -> bool:
    now = model.state_dict(keep_vars=True)
    return taken is not None and now.keys() == taken.keys() and all(
        v is taken[k][0] and v._version == taken[k][1] for k, v in now.items())


def _same_state(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(
        sa[k].shape == sb[k].shape and sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k])
        for k in sa)


class _Lock:
    """Re-entrant for its owner thread, refused (not waited on) for every other thread."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self.owner: int | None = None
        self.depth = 0
        self.task = ""

    def acquire(self, call: str) -> None:
        me = threading.get_ident()
        with self._guard:
            if self.owner not in (None, me):
                raise StudyBusyError(
                    f"{call}: the study is busy with {self.task} (running in another thread, "
                    "e.g. from the panel); wait until it finishes or stop it, then try again. "
                    "Reading the study (history, evaluate, explanations) stays possible.")
            self.owner = me
            self.depth += 1
            if self.depth == 1:
                self.task = call

    def release(self) -> None:
        with self._guard:
            self.depth -= 1
            if self.depth == 0:
                self.owner, self.task = None, ""

    @property
    def busy_with(self) -> str | None:
        return self.task or None


class Timeline:
    """History, snapshots, scores and the current model of one study.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> t = Timeline(nn.Linear(2, 2), torch.zeros(2, 2))
    >>> t.commit(Step(0, "original", None), nn.Linear(2, 2))
    >>> len(t.history), t.current
    (1, 0)
    """

    def __init__(self, original: nn.Module, example: torch.Tensor, *, max_snapshots: int = 8,
                 snapshot_dir=None, forward=None) -> None:
        self.original = original
        self.example = example
        self.forward = forward
        self.history = History()
        self.history.current = 0
        self.snapshots = SnapshotStore(max_snapshots, snapshot_dir)
        #: the last scores computed at each step, and every scores per "criterion/granularity"
        self.scores: dict[int, object] = {}
        self.all_scores: dict[int, dict[str, object]] = {}
        self.model: nn.Module = copy.deepcopy(original)
        self._copied = _versions(self.model)   # the copy equals the original as taken here
        self._lock = _Lock()
        self._dirty = False
        self._tx_depth = 0     # transactions open in the lock's owner thread

    # ------------------------------------------------------------------ reading
    @property
    def current(self) -> int:
        return self.history.current

    @property
    def step(self) -> Step:
        return self.history[self.current]

    @property
    def busy_with(self) -> str | None:
        """The mutating call in progress, if any."""
        return self._lock.busy_with

    def index(self, index: object, call: str, param: str = "step") -> int:
        """``index`` as a valid step index (negative counts from the end)."""
        n = len(self.history)
        if isinstance(index, bool) or not isinstance(index, int) or not -n <= index < n:
            raise ConfigError.bad_value(call, param, f"a step index in [{-n}, {n - 1}]", index)
        return index % n

    def model_at(self, index: int) -> nn.Module:
        """A fresh copy of the model exactly as it was after step ``index``."""
        from ..models.mechanisms.masks import refresh_masked_weights

        step = self.history[index]
        model = rebuild(copy.deepcopy(self.original), step.structure, step.masked, self.example,
                        self.forward)
        model.load_state_dict(self.snapshots.get(index))
        refresh_masked_weights(model)
        self._mark(model, step)
        return model.eval()

    def is_original(self, index: int) -> bool:
        """Whether step ``index``'s model is ``original`` itself (step 0 of a study whose first
        snapshot is the original's own tensors): a reader can use it without a rebuilt copy."""
        return index == 0 and self.snapshots.shares(0) and not self.history[0].masked

    def reading_model(self, index: int) -> nn.Module:
        """The model of step ``index`` for a caller that only reads it (measurement,
        explanations): the live current model unless another thread is changing it, the
        original itself for an untouched step 0, else a copy rebuilt from the history."""
        if index == self.current and self._lock.owner in (None, threading.get_ident()):
            return self.model
        if self.is_original(index):
            return self.original   # never changed: the study works on copies
        return self.model_at(index)

    def _mark(self, model: nn.Module, step: Step) -> None:
        """A pruned Hugging Face model's own ``save_pretrained`` writes a folder that loads
        right (:func:`xprune_nb.record.io.pretrained.mark_pruned`)."""
        from .io.pretrained import mark_pruned

        mark_pruned(model, self.original, step.structure, step.masked, self.example)

    def is_ancestor(self, a: int, b: int) -> bool:
        """True when step ``a`` is on the path from the original model to step ``b``."""
        while b is not None:
            if a == b:
                return True
            b = self.history[b].parent
        return False

    def path(self, index: int | None = None) -> list[Step]:
        """The steps from the original model to ``index`` (default: the current step)."""
        i = self.current if index is None else index
        out = []
        while i is not None:
            out.append(self.history[i])
            i = self.history[i].parent
        return out[::-1]

    # ------------------------------------------------------------------ changing
    def mark_dirty(self) -> None:
        """The current model is about to be changed in place: a rollback must rebuild it."""
        self._dirty = True

    @contextlib.contextmanager
    def hold(self, call: str) -> Iterator[None]:
        """Hold the study's lock for ``call`` without a rollback of its own.

        Other threads' changing calls (and saves) are refused with ``StudyBusyError`` until it
        ends, and ``busy_with`` names ``call`` throughout. A :meth:`transaction` opened inside
        is a full transaction (it rolls back to its own start), unless a transaction encloses
        the hold: then the outermost transaction decides, as for any nested call.
        """
        self._lock.acquire(call)
        try:
            yield
        finally:
            self._lock.release()

    @contextlib.contextmanager
    def transaction(self, call: str) -> Iterator[None]:
        """Hold the lock; on any exception (``KeyboardInterrupt`` too) restore the state."""
        self._lock.acquire(call)
        if self._tx_depth:           # nested in a transaction of the same thread: the outer
            try:                     # one rolls back everything
                yield
            finally:
                self._lock.release()
            return
        saved = (len(self.history), self.current, dict(self.scores),
                 {k: dict(v) for k, v in self.all_scores.items()}, self.model)
        self._dirty = False
        self._tx_depth = 1
        try:
            yield
        except BaseException:
            self._rollback(saved)
            raise
        finally:
            self._tx_depth = 0
            self._dirty = False
            self._lock.release()

    def _rollback(self, saved) -> None:
        """Restore ``saved``; a second Ctrl-C while restoring must not leave half of it (the
        study on a step that was being undone), so the restore is repeated until it is done.
        Every part of it is idempotent."""
        while True:
            try:
                self._restore(saved)
                return
            except KeyboardInterrupt:
                continue

    def _restore(self, saved) -> None:
        length, current, scores, all_scores, model = saved
        for step in self.history[length:]:
            self.snapshots.drop(step.index)
        del self.history[length:]
        self.history.current = current
        self.scores, self.all_scores = scores, all_scores
        # a step that changed the model in place is undone by rebuilding the exact model
        self.model = self.model_at(current) if self._dirty else model

    def commit(self, step: Step, model: nn.Module) -> None:
        """Record ``step`` with ``model`` as its result and make it current."""
        if step.index != len(self.history):
            raise RuntimeError(f"step index {step.index} != history length {len(self.history)}")
        # step 0 untouched since the copy (no tensor replaced or changed in place) needs no
        # compare, a sweep over every weight; otherwise the values decide
        copied, self._copied = getattr(self, "_copied", None), None   # until the first commit
        if step.index == 0 and (model is self.model and _unchanged(model, copied)
                                or _same_state(model, self.original)):
            # the untouched original's own tensors: no copy of a big model's weights
            self.snapshots.put(0, self.original.state_dict(), shared=True)
        else:
            self.snapshots.put(step.index, model.state_dict())
        self.history.append(step)
        self.history.current = step.index
        self.model = model
        self._mark(model, step)
        # _dirty stays set: a later failure in the same transaction (a nested retrain, the next
        # round) must rebuild the model that was changed in place

    def go(self, index: int) -> Step:
        """Make step ``index`` current, restoring its exact model."""
        model = self.model_at(index)
        self.history.current = index
        self.model = model
        return self.history[index]

    def record_scores(self, scores) -> None:
        self.scores[self.current] = scores
        self.all_scores.setdefault(self.current, {})[
            f"{scores.criterion}/{scores.granularity}"] = scores

    def adopt(self, history: History, model: nn.Module) -> None:
        """Take over another rank's record: its history and the current step's model (other
        ranks keep the current step's weights only; ``goto`` to older steps is for rank 0)."""
        self._copied = None   # no step 0 of this copy to commit: pin none of its tensors
        for step in self.history:
            self.snapshots.drop(step.index)
        self.history = history
        self.model = model
        self.snapshots.put(history.current, model.state_dict())

    def replace(self, history: History, states: list[dict], scores: dict, current: int) -> None:
        """Take over a whole record (loading a study file, or a broadcast from another rank)."""
        self._copied = None   # no step 0 of this copy to commit: pin none of its tensors
        for step in self.history:
            self.snapshots.drop(step.index)
        self.history = history
        for step, state in zip(history, states, strict=True):
            self.snapshots.put(step.index, state)
        self.scores = dict(scores)
        self.all_scores = {i: {f"{s.criterion}/{s.granularity}": s} for i, s in scores.items()}
        self.history.current = 0
        self.go(current)
