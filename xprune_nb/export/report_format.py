"""One number format for the whole report, and the record of which terms a report shows.

Every number in a report goes through :func:`fmt` (or :func:`num`, which also tags it with its
name and raw value for machines): shares as percentages with one decimal, accuracy changes in
percentage points, counts with thousands separators, everything else with four significant
digits, and a missing number as "n/a: reason" — never "nan", never a Python repr.

Examples
--------
>>> fmt(0.98329, "accuracy"), fmt(-0.917, "accuracy_change"), fmt(13802, "params")
('98.3 %', '-91.7 pp', '13,802')
>>> fmt(0.61234, "saliency_rank_correlation"), fmt(float("nan"), reason="not measured")
('0.6123', 'n/a: not measured')
"""

from __future__ import annotations

import html
import math
import re

__all__ = ["fmt", "num", "is_share", "Terms"]

#: numbers that are shares of something (shown as percentages)
_SHARES = {"accuracy", "val_accuracy", "accuracy_before", "accuracy_after", "agreement",
           "sparsity", "exit_share", "changed_fraction", "fraction_pruned", "units_removed_share",
           "saliency_topk_iou"}
#: differences of shares (shown in percentage points)
_POINTS = {"accuracy_change", "change", "accuracy_drop"}


def _base(name: str | None) -> str:
    return re.sub(r"\[.*\]$", "", name or "")


def is_share(name: str | None) -> bool:
    """True for a number shown as a percentage (``accuracy``, ``accuracy[cat]``, ...)."""
    return _base(name) in _SHARES


def fmt(value, name: str | None = None, *, reason: str | None = None) -> str:
    """``value`` as the report shows it (see the module docstring); ``name`` picks the unit."""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        try:
            value = value.item()   # numpy / torch scalars format like Python numbers
        except (ValueError, TypeError):
            pass
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return f"n/a: {reason}" if reason else "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    base = _base(name)
    if isinstance(value, (int, float)):
        if base in _POINTS:
            return f"{100 * value:+.1f} pp"
        if base in _SHARES:
            return f"{100 * value:.1f} %"
        if base.endswith("_ms"):
            return f"{value:.3g} ms"
        if base == "size_bytes":
            return f"{int(value):,} bytes"
        if isinstance(value, int) or (float(value).is_integer() and abs(value) >= 1000):
            return f"{int(value):,}"
        return f"{value:.4g}"
    return str(value)


def num(value, name: str, *, reason: str | None = None) -> str:
    """The formatted number as HTML, tagged ``class="xprune-num" data-name data-value`` so a
    reader's tools (and the tests) can check it against the study's own values."""
    raw = "" if value is None else repr(float(value)) if isinstance(value, (int, float)) \
        or hasattr(value, "item") else html.escape(str(value))
    return (f"<span class='xprune-num' data-name='{html.escape(name)}' data-value='{raw}'>"
            f"{html.escape(fmt(value, name, reason=reason))}</span>")


class Terms:
    """The glossary terms a report uses (so its glossary lists only those)."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def use(self, *names: str) -> None:
        for name in names:
            name = _base(name)
            if name and name not in self.names:
                self.names.append(name)
