"""Runs the panel's actions one at a time, in a background thread when asked.

A button's work runs in a worker thread so the kernel stays free to process the next click:
*Stop* can then set the stop signal while retraining runs, and a second click on an action
while one is running is refused with a message instead of being queued. Every outcome ends in
the status line: success, stop, or the error in plain words (never only in the log).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ...core.errors import StoppedError, XPruneError
from ...measure.training import StopSignal

__all__ = ["Task", "Runner"]

log = logging.getLogger("xprune_nb.ui.widgets")

#: Minimum seconds between two progress updates sent to the browser (each is a comm message).
PROGRESS_INTERVAL = 0.1


@dataclass
class Task:
    """One running action: what it is, its stop signal and its progress reporter."""

    action: str
    label: str
    report: Callable[[int, int, str], None]
    stop: StopSignal = field(default_factory=StopSignal)
    started: float = field(default_factory=time.perf_counter)
    _last: float = 0.0

    def progress(self, done: int, total: int, text: str = "") -> None:
        """Report ``done`` of ``total``; raises :class:`StoppedError` once Stop was pressed.

        It matches the ``progress(done, total)`` hook of ``Study.score``, where raising
        ``StoppedError`` stops scoring and leaves the study unchanged.
        """
        if self.stop.requested:
            raise StoppedError(f"{self.label}: stopped by the user.")
        self.update(done, total, text)

    def update(self, done: int, total: int, text: str = "") -> None:
        """Report progress, at most every ``PROGRESS_INTERVAL`` seconds (and at the end)."""
        now = time.perf_counter()
        if done >= total or now - self._last >= PROGRESS_INTERVAL:
            self._last = now
            self.report(done, total, text)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started


class Runner:
    """Runs one task at a time and reports its outcome.

    Parameters
    ----------
    status : callable
        ``status(level, text)`` with level ``"busy"``, ``"ok"``, ``"warn"`` or ``"error"``.
    progress : callable
        ``progress(done, total, text)``; ``total == 0`` hides the bar.
    """

    def __init__(self, status: Callable[[str, str], None],
                 progress: Callable[[int, int, str], None]) -> None:
        self._status = status
        self._progress = progress
        self._lock = threading.Lock()
        self._task: Task | None = None
        self._thread: threading.Thread | None = None
        self.last_error: BaseException | None = None

    @property
    def busy(self) -> bool:
        return self._task is not None

    @property
    def task(self) -> Task | None:
        return self._task

    def run(self, action: str, label: str, work: Callable[[Task], Any],
            done: Callable[[Any], str], *, block: bool = True,
            after: Callable[[], None] | None = None) -> Any:
        """Run ``work(task)``, then ``done(result)`` (returns the status text, or a pair
        ``(level, text)`` when the outcome deserves a warning), then ``after()``.

        With ``block=False`` the work runs in a worker thread and ``None`` is returned at once;
        :meth:`wait` joins it. While a task runs, any other request is refused with a message.
        """
        with self._lock:
            running = self._task
            if running is None:
                task = self._task = Task(action, label, self._progress)
        if running is not None:
            self._status("warn", f"Busy: {running.label} is still running "
                                 f"({running.elapsed:.0f} s so far), so {action} was not started. "
                                 "Wait for it to finish or press Stop.")
            return None
        self._status("busy", f"{label}…")
        if block:
            return self._execute(task, work, done, after)
        self._thread = threading.Thread(target=self._execute, args=(task, work, done, after),
                                        name=f"xprune-{action}", daemon=True)
        self._thread.start()
        return None

    def _execute(self, task: Task, work, done, after) -> Any:
        result = None
        level, text = "ok", ""
        try:
            result = work(task)
            text = done(result)
            if isinstance(text, tuple):     # (level, text): e.g. a budget that was not met
                level, text = text
            self.last_error = None
        except StoppedError as exc:
            self.last_error = exc
            level, text = "warn", f"{task.label} was stopped by you; the study is unchanged."
        except XPruneError as exc:
            self.last_error, result = exc, None
            level, text = "error", f"{task.action.capitalize()} failed: {exc}"
        except Exception as exc:  # noqa: BLE001 - shown in the panel, traceback in the log
            self.last_error, result = exc, None
            log.exception("xprune_nb panel: %s failed", task.action)
            level, text = "error", (f"{task.action.capitalize()} failed with an unexpected "
                                    f"{type(exc).__name__}: {exc} (traceback in the log of "
                                    "logger 'xprune_nb.ui.widgets').")
        try:
            if after is not None:
                after()
        except Exception as exc:  # noqa: BLE001
            log.exception("xprune_nb panel: refreshing the view failed")
            self.last_error = exc
            level, text = "error", (f"{text} Then refreshing the panel failed: "
                                    f"{type(exc).__name__}: {exc}.")
        self._progress(0, 0, "")
        # the outcome is shown before the panel takes new work, so a refusal or the next
        # task's "running" message can never be overwritten by this one's outcome
        self._status(level, text)
        with self._lock:
            self._task = None
        return result

    def stop(self) -> bool:
        """Ask the running task to stop between batches; False when nothing runs."""
        task = self._task
        if task is None:
            self._status("warn", "Nothing is running, so there is nothing to stop.")
            return False
        task.stop.set()
        self._status("busy", f"Stopping {task.label} after the current batch…")
        return True

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the worker thread; True when nothing is running any more."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return not self.busy
