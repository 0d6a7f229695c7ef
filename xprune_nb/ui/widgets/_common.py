"""Small helpers shared by the panel's sections: defaults read from the core's signatures,
parsing of free-text controls, and HTML snippets."""

from __future__ import annotations

import html
import inspect
import re
from collections.abc import Callable, Sequence
from typing import Any

from ...core.errors import ConfigError

__all__ = ["defaults_of", "parse_classes", "parse_layer_amounts", "parse_number",
           "parse_numbers", "frame_html", "note_html", "esc"]


def defaults_of(func: Callable) -> dict[str, Any]:
    """Default values of a function's keyword parameters.

    Controls start from the core's own defaults, so the panel never carries a second copy.

    Examples
    --------
    >>> defaults_of(lambda a, b=2, *, c="x": None)
    {'b': 2, 'c': 'x'}
    """
    return {name: p.default for name, p in inspect.signature(func).parameters.items()
            if p.default is not inspect.Parameter.empty}


def parse_classes(text: str, class_names: Sequence[str], call: str = "Panel.score"
                  ) -> list[int] | None:
    """Class indices from a text such as ``"3, 8"`` (or class names); empty means all classes.

    Examples
    --------
    >>> parse_classes("3, 8", [str(i) for i in range(10)])
    [3, 8]
    >>> parse_classes(" ", ["a", "b"]) is None
    True
    >>> parse_classes("b", ["a", "b"])
    [1]
    """
    tokens = [t for t in re.split(r"[,\s]+", text.strip()) if t]
    if not tokens:
        return None
    names = {str(n): i for i, n in enumerate(class_names)}
    out = []
    for tok in tokens:
        if tok.lstrip("-").isdigit():
            out.append(int(tok))
        elif tok in names:
            out.append(names[tok])
        else:
            raise ConfigError.bad_value(call, "classes",
                                        "class indices or names separated by commas, e.g. '3, 8'",
                                        text)
    return out


def parse_layer_amounts(text: str, call: str = "Panel.prune") -> dict[str, float]:
    """Per-layer fractions from a text such as ``"conv1=0.5, fc1=0.2"``.

    Only the syntax is checked here; the names and ranges are checked by ``Study.prune``, so the
    panel shows the same messages as the core.

    Examples
    --------
    >>> parse_layer_amounts("conv1=0.5, fc1 = 0.2")
    {'conv1': 0.5, 'fc1': 0.2}
    >>> parse_layer_amounts("")
    {}
    """
    out: dict[str, float] = {}
    for part in (p.strip() for p in re.split(r"[,;\n]+", text)):
        if not part:
            continue
        name, sep, value = (s.strip() for s in part.partition("="))
        try:
            if not sep or not name:
                raise ValueError(part)
            out[name] = float(value)
        except ValueError:
            raise ConfigError.bad_value(call, "layer overrides",
                                        "entries like 'conv1=0.5, fc1=0.2'", text) from None
    return out


def parse_number(text: str, call: str, param: str, *, integer: bool = False
                 ) -> float | int | None:
    """A number typed in a text box; empty means ``None`` (the core's "not set").

    Only the syntax is checked here; the core checks the range, so the panel shows the same
    messages as a script would get.

    Examples
    --------
    >>> parse_number(" 0.02 ", "Panel.auto_prune", "max_accuracy_drop")
    0.02
    >>> parse_number("", "Panel.auto_prune", "max_drift") is None
    True
    >>> parse_number("64", "Panel.dynamic", "samples", integer=True)
    64
    """
    text = text.strip()
    if not text:
        return None
    try:
        return int(text) if integer else float(text)
    except ValueError:
        what = "an integer" if integer else "a number"
        raise ConfigError.bad_value(call, param, f"{what}, or empty for none", text) from None


def parse_numbers(text: str, call: str, param: str, *, integer: bool = False) -> list:
    """Numbers separated by commas or spaces, e.g. ``"0.25, 0.5"``, sorted and unique.

    Examples
    --------
    >>> parse_numbers("0.5, 0.25 0.5", "Panel.sensitivity", "amounts")
    [0.25, 0.5]
    >>> parse_numbers("3,1", "Panel.dynamic_sweep", "k", integer=True)
    [1, 3]
    """
    tokens = [t for t in re.split(r"[,;\s]+", text.strip()) if t]
    values = [parse_number(t, call, param, integer=integer) for t in tokens]
    if not values:
        what = "integers" if integer else "numbers"
        raise ConfigError.bad_value(call, param, f"one or more {what} separated by commas",
                                    text)
    return sorted(set(values))


def esc(value: Any) -> str:
    return html.escape(str(value))


def frame_html(frame, *, float_format: str = "{:.4g}", index: bool = True,
               highlight_row: Any = None) -> str:
    """A pandas DataFrame as a compact HTML table (the row labelled ``highlight_row`` in bold)."""
    cols = list(frame.columns)
    head = "".join(f"<th>{esc(c)}</th>" for c in ([frame.index.name or ""] if index else [])
                   + cols)
    rows = []
    for label, row in frame.iterrows():
        cells = [f"<th>{esc(label)}</th>"] if index else []
        for c in cols:
            value = row[c]
            # text reads best left-aligned, numbers right-aligned (the table's default)
            align = ' style="text-align:left"' if isinstance(value, str) else ""
            cells.append(f"<td{align}>{esc(_fmt(value, float_format))}</td>")
        style = ' style="font-weight:bold;background:#eef5ff"' if label == highlight_row else ""
        rows.append(f"<tr{style}>{''.join(cells)}</tr>")
    return (f'<table class="xprune-table"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>")


def _fmt(value: Any, float_format: str) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else ""
    if isinstance(value, float):
        if value != value:  # NaN: an empty cell reads better than "nan"
            return ""
        if value.is_integer() and abs(value) >= 1000:
            return str(int(value))
        return float_format.format(value)
    return str(value)


def note_html(text: str, color: str = "#555") -> str:
    return f'<span style="color:{color};font-size:0.92em">{text}</span>'


#: CSS for the panel's tables, sent once with the panel.
TABLE_CSS = """<style>
.xprune-table {border-collapse:collapse;font-size:12px;margin:2px 0}
.xprune-table th,.xprune-table td {border-bottom:1px solid #ddd;padding:2px 8px;text-align:right}
.xprune-table thead th {border-bottom:1px solid #999}
.xprune-strip b {font-variant-numeric:tabular-nums}
</style>"""
