"""Answer forms: each reader returns the answer in a plain form or raises :class:`AnswerError`
with what was expected and what was given, in words a student can act on."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping

from .feedback import AnswerError, describe


class Unanswered(AnswerError):
    """The answer is still ``None`` (the student has not filled it in)."""

    def __init__(self, name: str, expected: str) -> None:
        super().__init__(f"You have not answered yet: `{name}` is None. Set it to {expected}.",
                         code="unanswered")


def study(value, name: str = "study"):
    """The student's :class:`~xprune_nb.Study`."""
    import torch

    from ...study import Study

    if isinstance(value, Study):
        return value
    if value is None:
        raise Unanswered(name, "your `xp.Study`")
    if isinstance(value, torch.nn.Module):
        raise AnswerError(f"Expected your study (an `xp.Study`), got {describe(value)}. Pass "
                          "the study itself (`study`), not `study.model` or a model.")
    raise AnswerError(f"Expected your study (an `xp.Study`) for `{name}`, got "
                      f"{describe(value)}.")


def number(value, name: str, expected: str = "a number") -> float:
    """A finite real number (ints, floats, NumPy scalars and 0-d tensors are fine)."""
    import torch

    if value is None:
        raise Unanswered(name, expected)
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        extra = ""
        if isinstance(value, str):
            try:
                float(value)
                extra = " Write the number without quotes."
            except ValueError:
                pass
        raise AnswerError(f"`{name}` should be {expected}, got {describe(value)}.{extra}")
    value = float(value)
    if not math.isfinite(value):
        raise AnswerError(f"`{name}` should be {expected}, got {value}.")
    return value


def name(value, param: str, expected: str = "a name (text in quotes)") -> str:
    """A non-empty string."""
    if value is None:
        raise Unanswered(param, expected)
    if not isinstance(value, str) or not value.strip():
        raise AnswerError(f"`{param}` should be {expected}, got {describe(value)}.")
    return value.strip()


def step_index(study_, value, param: str = "step") -> int:
    """A history step given as a :class:`~xprune_nb.Step` or an index (negative counts from
    the end)."""
    from ...core.history import Step

    n = len(study_.history)
    if isinstance(value, Step):
        value = value.index
    if value is None:
        raise Unanswered(param, "the prune step (the `Step` that `study.prune` returned, or "
                         "its index)")
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise AnswerError(f"`{param}` should be a step of your study (a `Step` or its index), "
                          f"got {describe(value)}.")
    if not -n <= int(value) < n:
        raise AnswerError(f"`{param}` = {int(value)} is not a step of your study: it has "
                          f"steps 0 to {n - 1}.", code="unknown_step")
    return int(value) % n


def unit(value, param: str) -> tuple[str, int]:
    """A ``(layer, unit)`` pair."""
    if value is None:
        raise Unanswered(param, "a pair `(layer name, unit index)`, e.g. `(\"conv1\", 3)`")
    if (not isinstance(value, (tuple, list)) or len(value) != 2
            or not isinstance(value[0], str) or isinstance(value[1], bool)
            or not isinstance(value[1], numbers.Integral)):
        raise AnswerError(f"`{param}` should be a pair `(layer name, unit index)`, e.g. "
                          f"`(\"conv1\", 3)`; got {describe(value)}.")
    return value[0], int(value[1])


def numbers_by_name(value, param: str, expected: str) -> dict[str, float]:
    """A dict from names to numbers."""
    if value is None:
        raise Unanswered(param, expected)
    if not isinstance(value, Mapping) or not value:
        raise AnswerError(f"`{param}` should be {expected}, got {describe(value)}.")
    out = {}
    for key, v in value.items():
        if not isinstance(key, str):
            raise AnswerError(f"`{param}` should be {expected}; its key {describe(key)} is not "
                              "a name in quotes.")
        out[key] = number(v, f"{param}[{key!r}]")
    return out
