"""A *Check* button and a *Hint* button for exercises done without code (a panel served as an
app with ``xprune-nb app``). ipywidgets is imported only here."""

from __future__ import annotations

from collections.abc import Callable

from .feedback import Feedback
from .hints import HINTS, hint

__all__ = ["CheckBox"]


class CheckBox:
    """A row of buttons that run ``check(*args)`` and show its feedback, and reveal the
    exercise's hints one at a time.

    CSS classes: ``xprune-check`` (the box), ``xprune-check-button``, ``xprune-hint-button``,
    ``xprune-check-output`` (where the ``xprune-feedback`` / ``xprune-hint`` HTML appears).

    Parameters
    ----------
    check : callable
        A check of :mod:`xprune_nb.exercises` (returns a :class:`Feedback`).
    *args
        Its arguments (e.g. the study that a panel changes).
    hints : str, optional
        The exercise whose hints the *Hint* button shows (no button without it).
    label : str

    Examples
    --------
    >>> import xprune_nb as xp
    >>> from xprune_nb.exercises import CheckBox, check_ex1
    >>> study = xp.Study(xp.zoo.load("digits_cnn"), xp.datasets.load("digits"))
    >>> box = CheckBox(check_ex1, study, hints="ex5")
    >>> box.check().passed
    False
    """

    def __init__(self, check: Callable[..., Feedback], *args, hints: str | None = None,
                 label: str = "Check my answer") -> None:
        import ipywidgets as W

        self._check, self._args = check, args
        self._hints, self._shown = hints, 0
        self.output = W.HTML()
        self.output.add_class("xprune-check-output")
        self.check_button = W.Button(description=label, button_style="success",
                                     icon="check")
        self.check_button.add_class("xprune-check-button")
        self.check_button.on_click(lambda _: self.check())
        buttons = [self.check_button]
        if hints is not None:
            self.hint_button = W.Button(description="Hint", icon="lightbulb-o")
            self.hint_button.add_class("xprune-hint-button")
            self.hint_button.on_click(lambda _: self.next_hint())
            buttons.append(self.hint_button)
        self.widget = W.VBox([W.HBox(buttons), self.output])
        self.widget.add_class("xprune-check")

    def check(self) -> Feedback:
        """Run the check and show its feedback (it never raises)."""
        feedback = self._check(*self._args)
        self.output.value = feedback._repr_html_()
        return feedback

    def next_hint(self):
        """Show the next hint (the last one stays once all are shown)."""
        self._shown = min(self._shown + 1, len(HINTS.get(self._hints, ())) or 1)
        shown = hint(self._hints, self._shown)
        self.output.value = shown._repr_html_()
        return shown

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)
