"""A *Check* button and a *Hint* button for exercises done without code (a panel served as an
app with ``xprune-nb app``), which also records each check in the teacher's gradebook.
ipywidgets is imported only here."""

from __future__ import annotations

from collections.abc import Callable

from . import gradebook as _gradebook
from .feedback import Feedback, Hint
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
        A check of :mod:`xprune_nb.ui.exercises` (returns a :class:`Feedback`).
    *args
        Its arguments (e.g. the study that a panel changes).
    hints : str, optional
        The exercise whose hints the *Hint* button shows (no button without it).
    label : str
    gradebook : path, optional
        Where each check's outcome is recorded (default: ``$XPRUNE_GRADEBOOK``, which
        ``xprune-nb app`` sets; neither: nothing is recorded). The student is the JupyterHub
        user, or else the name typed once into the box (CSS class ``xprune-student``).

    Examples
    --------
    >>> import xprune_nb as xp
    >>> from xprune_nb.ui.exercises import CheckBox, check_ex1
    >>> study = xp.Study(xp.zoo.load("digits_cnn"), xp.datasets.load("digits"))
    >>> box = CheckBox(check_ex1, study, hints="ex5")
    >>> box.check().passed
    False
    """

    def __init__(self, check: Callable[..., Feedback], *args, hints: str | None = None,
                 label: str = "Check my answer", gradebook=None) -> None:
        import ipywidgets as W

        self._check, self._args = check, args
        self.gradebook = _gradebook.gradebook_path(gradebook)
        self.student = _gradebook.hub_user()
        self.identified_by = "jupyterhub" if self.student else "name"
        self.name = W.Text(placeholder="your name", description="Your name",
                           layout=W.Layout(display="none" if self.student
                                           or self.gradebook is None else None))
        self.name.add_class("xprune-student")
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
        self.widget = W.VBox([self.name, W.HBox(buttons), self.output])
        self.widget.add_class("xprune-check")

    def check(self) -> Feedback | Hint:
        """Run the check, show its feedback and record it in the gradebook (never raises).
        With a gradebook and no student name yet, it asks for the name instead."""
        if self.gradebook is not None and not self.student:
            typed = " ".join(self.name.value.split())
            if not typed:
                note = Hint("name", 0, "Type your name in the box above first: your teacher's "
                            "gradebook records each check under it.")
                self.output.value = note._repr_html_()
                return note
            self.student = typed
            self.name.disabled = True    # asked once: the name stays for this session
        feedback = self._check(*self._args)
        self.output.value = feedback._repr_html_()
        if self.gradebook is not None:
            try:
                _gradebook.record(self.gradebook, feedback, self.student, self.identified_by)
            except OSError as exc:   # the student still gets the feedback
                self.output.value += Hint("gradebook", 0, "Your check could not be recorded "
                                          f"for your teacher ({exc.strerror or exc}); tell "
                                          "them.")._repr_html_()
        return feedback

    def next_hint(self):
        """Show the next hint (the last one stays once all are shown)."""
        self._shown = min(self._shown + 1, len(HINTS.get(self._hints, ())) or 1)
        shown = hint(self._hints, self._shown)
        self.output.value = shown._repr_html_()
        return shown

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)
