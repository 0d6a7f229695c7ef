"""Figures for the panel, rendered to PNG bytes for ``ipywidgets.Image``.

Images rather than ``Output`` widgets: work runs in a background thread, where capturing
``Output`` is unreliable, and PNG bytes are stored with the widget state, so a saved notebook
still shows the plots. Figures are built with :class:`matplotlib.figure.Figure`, not pyplot, so
nothing is registered with the notebook's inline backend (which would print the figure again
under the next cell) and drawing is safe off the main thread.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

__all__ = ["figure", "to_png", "plot_to_png", "prewarm"]


def figure(width: float = 6.0, height: float = 2.6, ncols: int = 1):
    """A detached figure and its axes (one, or a list of ``ncols``)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=80, layout="constrained")
    axes = fig.subplots(1, ncols)
    return fig, (list(axes) if ncols > 1 else axes)


def to_png(fig) -> bytes:
    """PNG bytes of a figure made by :func:`figure`."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi)
    return buf.getvalue()


def plot_to_png(plot: Callable[..., Any]) -> bytes:
    """Call a result's ``.plot()`` and return its figure as PNG bytes.

    Results' ``plot`` methods may return a figure, an axes or an array of axes, and may create
    their figure with pyplot; every pyplot figure opened during the call is closed afterwards.

    Examples
    --------
    >>> fig_png = plot_to_png(lambda: figure()[0])
    >>> fig_png[:4] == b"\\x89PNG"
    True
    """
    import matplotlib.pyplot as plt

    before = set(plt.get_fignums())
    try:
        out = plot()
        fig = _figure_of(out)
        if fig is None:
            new = sorted(set(plt.get_fignums()) - before)
            if not new:
                raise TypeError(f"plot() returned {type(out).__name__}, not a figure or axes")
            fig = plt.figure(new[-1])
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=min(float(fig.dpi), 80.0), bbox_inches="tight")
        return buf.getvalue()
    finally:
        for num in set(plt.get_fignums()) - before:
            plt.close(num)


def _figure_of(obj):
    if obj is None:
        return None
    if hasattr(obj, "savefig"):
        return obj
    if hasattr(obj, "get_figure"):
        return obj.get_figure()
    if hasattr(obj, "figure") and hasattr(obj.figure, "savefig"):
        return obj.figure
    try:  # an array or list of axes
        first = next(iter(getattr(obj, "flat", obj)))
    except (TypeError, StopIteration):
        return None
    return _figure_of(first)


def prewarm() -> None:
    """Import matplotlib and draw a tiny figure (about 0.7 s the first time: imports, font
    cache, Agg) so that the first click on a button does not pay for it."""
    fig, ax = figure(1.0, 1.0)
    ax.set_title("x")
    to_png(fig)
