"""One progress/stop protocol for every long call: scoring, training, explaining.

Every long public call takes ``progress=True | False | callable`` and ``stop=`` (a
:class:`StopSignal`). ``True`` shows a tqdm bar (a widget in notebooks, text in a terminal),
``False`` shows nothing, and a callable is called as ``progress(done, total)`` after each unit
of work (a batch, a row, a layer). Work checks the stop signal at the same points: scoring and
explaining then raise :class:`~xprune_nb.core.errors.StoppedError` (the study is left as it was);
retraining stops between batches and records the weights of the last complete batch.

Examples
--------
>>> seen = []
>>> tick = make_progress(lambda done, total: seen.append((done, total)), "Study.score", "score")
>>> tick(1, 2); tick(2, 2); seen
[(1, 2), (2, 2)]
>>> make_progress(False, "Study.score", "score") is None
True
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from .errors import ConfigError, StoppedError

__all__ = ["StopSignal", "Progress", "make_progress", "ProgressSpec"]

ProgressSpec = bool | Callable[[int, int], object] | None


class StopSignal:
    """A thread-safe "please stop" flag, checked between units of work.

    Examples
    --------
    >>> stop = StopSignal()
    >>> stop.requested
    False
    >>> stop.set(); stop.requested
    True
    """

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def clear(self) -> None:
        self._event.clear()

    @property
    def requested(self) -> bool:
        return self._event.is_set()


class Progress:
    """``progress(done, total)``: reports, and raises StoppedError when a stop was asked for."""

    def __init__(self, report: Callable[[int, int], object] | None, call: str,
                 stop: StopSignal | None = None, bar_desc: str | None = None) -> None:
        self.report = report
        self.call = call
        self.stop = stop
        self.bar_desc = bar_desc
        self._bar = None

    def __call__(self, done: int, total: int) -> None:
        if self.bar_desc is not None:
            self._tick_bar(done, total)
        elif self.report is not None:
            self.report(done, total)
        if self.stop is not None and self.stop.requested:
            self.close()
            raise StoppedError(f"{self.call}: stopped by the user after {done} of {total}; "
                               "the study is unchanged.")

    def _tick_bar(self, done: int, total: int) -> None:
        from tqdm.auto import tqdm

        if self._bar is None:
            self._bar = tqdm(total=total, desc=self.bar_desc, leave=False)
        self._bar.n = done
        self._bar.refresh()
        if done >= total:
            self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def make_progress(progress: ProgressSpec, call: str, desc: str,
                  stop: StopSignal | None = None) -> Progress | None:
    """Turn a ``progress=`` argument (and ``stop=``) into the protocol's callable, or None."""
    if stop is not None and not isinstance(stop, StopSignal):
        raise ConfigError.bad_value(call, "stop", "a xprune_nb.StopSignal or None", stop)
    if progress is True:
        return Progress(None, call, stop, bar_desc=desc)
    if progress is False or progress is None:
        return Progress(None, call, stop) if stop is not None else None
    if callable(progress):
        return Progress(progress, call, stop)
    raise ConfigError.bad_value(call, "progress", "True, False or a callable(done, total)",
                                progress)
