"""What a check says to a student: a :class:`Feedback` (passed or not, and why, in plain words)
and a :class:`Hint`, both shown as HTML in a notebook and as plain text anywhere else.

A check never raises at a student: :func:`student_check` turns an answer of the wrong form
(:class:`AnswerError`) and any unexpected failure into a not-passed :class:`Feedback` that says
what was expected.
"""

from __future__ import annotations

import functools
import html
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["Feedback", "Hint", "AnswerError", "student_check", "describe", "join_names"]

_CODE = re.compile(r"`([^`]+)`")
_EMPHASIS = re.compile(r"(?<![\w*])\*([^*\s][^*]*?)\*(?![\w*])")


def _inline(text: str) -> str:
    """Escape ``text`` for HTML, then show `backticked` parts as code and *starred* ones as
    emphasis."""
    return _EMPHASIS.sub(r"<em>\1</em>", _CODE.sub(r"<code>\1</code>",
                                                   html.escape(text, quote=True)))


@dataclass(frozen=True)
class Feedback:
    """The verdict of a check.

    Attributes
    ----------
    exercise : str
        Which exercise (``"ex1"`` ...).
    passed : bool
    title : str
        One line: the exercise and the verdict.
    messages : tuple of str
        What is right or wrong, and what to look at; `backticks` mark code.
    code : str
        A short machine-readable reason (``"ok"``, ``"not_pruned"``, ``"wrong_type"`` ...),
        for teachers and tests.

    Examples
    --------
    >>> fb = Feedback("ex1", False, "Exercise 1: not yet", ("Retrain with `study.retrain()`.",),
    ...               "no_retrain")
    >>> fb.passed, 'data-passed="false"' in fb._repr_html_()
    (False, True)
    >>> print(fb)
    [not yet] Exercise 1: not yet
      - Retrain with `study.retrain()`.
    """

    exercise: str
    passed: bool
    title: str
    messages: tuple[str, ...] = ()
    code: str = "ok"

    def __str__(self) -> str:
        mark = "[passed]" if self.passed else "[not yet]"
        return "\n".join([f"{mark} {self.title}"] + [f"  - {m}" for m in self.messages])

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        passed = "true" if self.passed else "false"
        colour = "#2e7d32" if self.passed else "#c62828"
        icon = "&#10004;" if self.passed else "&#10008;"
        items = "".join(f"<li>{_inline(m)}</li>" for m in self.messages)
        return (
            f'<div class="xprune-feedback" data-passed="{passed}" '
            f'data-exercise="{html.escape(self.exercise, quote=True)}" '
            f'data-code="{html.escape(self.code, quote=True)}" '
            f'style="border-left:4px solid {colour};padding:4px 10px;margin:4px 0">'
            f'<strong style="color:{colour}">{icon} {_inline(self.title)}</strong>'
            + (f'<ul style="margin:4px 0">{items}</ul>' if items else "")
            + "</div>"
        )

    def assert_passed(self) -> None:
        """Raise ``AssertionError`` with the feedback text unless passed (autograder cells)."""
        if not self.passed:
            raise AssertionError(str(self))


@dataclass(frozen=True)
class Hint:
    """One hint (or a note about the hints), shown as HTML with class ``xprune-hint``."""

    exercise: str
    level: int
    text: str
    of: int = 0

    def __str__(self) -> str:
        if self.level:
            return f"Hint {self.level} of {self.of} for {self.exercise}: {self.text}"
        return self.text

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        head = (f"Hint {self.level} of {self.of} ({html.escape(self.exercise)})"
                if self.level else "Hints")
        return (f'<div class="xprune-hint" data-exercise="{html.escape(self.exercise, quote=True)}"'
                f' data-level="{self.level}" style="border-left:4px solid #1565c0;'
                f'padding:4px 10px;margin:4px 0"><strong>{head}</strong>: '
                f"{_inline(self.text)}</div>")


class AnswerError(Exception):
    """An answer of the wrong form; :func:`student_check` turns it into feedback."""

    def __init__(self, message: str, code: str = "wrong_type") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def describe(value) -> str:
    """A short, safe description of any value ("a str 'abc'", "a model (DigitsCNN)")."""
    import torch

    if value is None:
        return "None"
    if isinstance(value, torch.nn.Module):
        return f"a model ({type(value).__name__})"
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    kind = type(value).__name__
    article = "an" if kind[:1].lower() in "aeiou" else "a"
    return f"{article} {kind} {text}"


def student_check(exercise: str, title: str) -> Callable:
    """Decorate a check ``fn(...) -> (passed, messages, code)`` so that it returns a
    :class:`Feedback` and never raises at a student."""

    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def check(*args, **kwargs) -> Feedback:
            try:
                passed, messages, code = fn(*args, **kwargs)
            except AnswerError as exc:
                return Feedback(exercise, False, f"{title}: please check the form of your "
                                "answer", (exc.message,), exc.code)
            except Exception as exc:  # noqa: BLE001 - a student sees a message, not a traceback
                detail = " ".join(str(exc).split())[:300] or type(exc).__name__
                return Feedback(exercise, False, f"{title}: the check could not run",
                                (f"It stopped with {type(exc).__name__}: {detail}",
                                 "Run the cells above it again from the top, then check again; "
                                 "if it persists, ask your teacher."), "check_error")
            verdict = "passed" if passed else "not yet"
            return Feedback(exercise, bool(passed), f"{title}: {verdict}", tuple(messages),
                            code)

        return check

    return wrap


def join_names(names: Sequence) -> str:
    """``a, b and c`` with each name quoted."""
    quoted = [f"'{n}'" for n in names]
    if len(quoted) < 2:
        return "".join(quoted)
    return ", ".join(quoted[:-1]) + " and " + quoted[-1]

