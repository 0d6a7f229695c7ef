"""Numbers that are not there, shown the same way everywhere.

A number that cannot be computed is NaN in a table with its reason in a column next to it, and
shows as ``"n/a: reason"`` in every display; a number computed on first ask shows as
``"not measured yet"`` until then (``xprune_nb.measure.step.NOT_MEASURED``). It is never 0, never a
perfect score and never a bare NaN. :func:`shown` is the one formatter the comparisons' reprs,
the history, the panel strip and the explain tab use, :func:`missing_note` says how many rows
of a mean were left out, and :func:`finite_mean` is how every such mean is taken.

Examples
--------
>>> shown(0.71234), shown(float("nan"), "all-zero map"), shown(None)
('0.712', 'n/a: all-zero map', 'n/a')
>>> missing_note([0.5, float("nan")], ["", "after: all-zero map"])
'1 of 2 inputs n/a (after: all-zero map)'
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

__all__ = ["shown", "missing_note", "is_missing", "finite_mean"]


def is_missing(value) -> bool:
    """Whether ``value`` is no number: ``None``, NaN or infinite."""
    if value is None:
        return True
    try:
        return not math.isfinite(float(value))
    except (TypeError, ValueError):
        return True


def shown(value, reason: str | None = None, digits: int = 3) -> str:
    """``value`` with ``digits`` decimals, or ``"n/a: reason"`` when it is missing."""
    if is_missing(value):
        return f"n/a: {reason}" if reason else "n/a"
    return f"{float(value):.{digits}f}"


def missing_note(values: Sequence[float], reasons: Sequence[str]) -> str:
    """How many of ``values`` are missing, and why (the commonest reasons first); '' if none.

    A mean over the rows that have a value says so, instead of dropping the others silently.
    """
    gone = [r or "not computable" for v, r in zip(values, reasons) if is_missing(v)]
    if not gone:
        return ""
    why = "; ".join(r for r, _ in Counter(gone).most_common(3))
    return f"{len(gone)} of {len(values)} inputs n/a ({why})"


def finite_mean(values) -> float:
    """Mean of the finite entries of ``values``; NaN when there is none (then a reason must go
    with it). The one way every summary averages per-input numbers.

    Examples
    --------
    >>> finite_mean([1.0, float("nan"), 3.0]), finite_mean([float("nan")])
    (2.0, nan)
    """
    import numpy as np

    v = np.asarray(values, dtype=np.float64).ravel()
    ok = np.isfinite(v)
    return float(v[ok].mean()) if ok.any() else float("nan")
