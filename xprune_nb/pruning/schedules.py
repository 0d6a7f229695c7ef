"""Iterative pruning schedules: how much to remove at each of ``steps`` steps."""

from __future__ import annotations

from ..core.errors import ConfigError

__all__ = ["step_fractions", "SCHEDULES"]

SCHEDULES = ("linear", "geometric")


def step_fractions(amount: float, steps: int, schedule: str = "linear",
                   call: str = "Study.prune") -> list[float]:
    """Per-step fractions (of the units alive at that step) that reach ``amount`` in total.

    ``linear`` removes the same number of units at every step (the cumulative fraction grows
    linearly); ``geometric`` removes the same fraction of what is left at every step (Zhu &
    Gupta's gradual pruning and the lottery-ticket papers use this).

    Examples
    --------
    >>> [round(f, 4) for f in step_fractions(0.5, 2, "linear")]
    [0.25, 0.3333]
    >>> [round(f, 4) for f in step_fractions(0.75, 2, "geometric")]
    [0.5, 0.5]
    """
    if schedule not in SCHEDULES:
        raise ConfigError.unknown_name(call, "schedule", SCHEDULES, schedule)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError.bad_value(call, "steps", "a positive integer", steps)
    if steps == 1:
        return [amount]
    if schedule == "geometric":
        per = 1.0 - (1.0 - amount) ** (1.0 / steps)
        return [per] * steps
    fractions = []
    for i in range(steps):
        done_before = amount * i / steps
        done_after = amount * (i + 1) / steps
        fractions.append((done_after - done_before) / (1.0 - done_before))
    return fractions
