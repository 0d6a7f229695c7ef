"""One table of parameter constraints, one message shape.

Every public entry point (``Study`` methods, recipes, the panel's preview, the command line)
validates its arguments against :data:`PARAMS`, so a value is judged the same way wherever it is
typed, and every refusal reads ``Call(param=...): expected <allowed>, got <value>.``
(scikit-learn's ``_param_validation`` is the model.)

Examples
--------
>>> from xprune_nb.core.params import validate
>>> validate("Study.prune", amount=0.3, scope="global")
>>> validate("Study.prune", amount=1.5)
Traceback (most recent call last):
...
xprune_nb.core.errors.ConfigError: Study.prune(amount=...): expected a number in [0, 1), got 1.5.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

from .errors import ConfigError

__all__ = ["Interval", "Options", "Constraint", "PARAMS", "validate", "check", "check_classes"]

#: seeds must fit torch's and numpy's 64-bit generators
SEED_RANGE = (-(2**63), 2**63 - 1)


class Constraint:
    """A rule a value must satisfy, with a plain description of what it allows."""

    def is_satisfied_by(self, value: Any) -> bool:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


@dataclass(frozen=True)
class Interval(Constraint):
    """A real or integer number in a range (never a bool, never NaN or infinite).

    ``closed`` is ``"both"``, ``"left"``, ``"right"`` or ``"neither"``; ``None`` bounds are open.
    """

    kind: type
    low: float | None
    high: float | None
    closed: str = "both"
    allow_none: bool = False

    def is_satisfied_by(self, value: Any) -> bool:
        if value is None:
            return self.allow_none
        if isinstance(value, bool) or not isinstance(value, self.kind):
            return False
        # an int is always finite (and math.isfinite(10**400) would overflow); ints and
        # floats compare exactly below, however large
        if not isinstance(value, Integral) and not math.isfinite(value):
            return False
        if self.low is not None:
            if value < self.low or (value == self.low and self.closed in ("right", "neither")):
                return False
        if self.high is not None:
            if value > self.high or (value == self.high and self.closed in ("left", "neither")):
                return False
        return True

    def describe(self) -> str:
        noun = "an integer" if self.kind is Integral else "a number"
        if self.low is not None and self.high is not None:
            left = "[" if self.closed in ("both", "left") else "("
            right = "]" if self.closed in ("both", "right") else ")"
            if self.kind is Integral and (self.low, self.high) == SEED_RANGE:
                text = f"{noun} that fits in 64 bits"
            else:
                text = f"{noun} in {left}{_num(self.low)}, {_num(self.high)}{right}"
        elif self.low == 1 and self.kind is Integral and self.closed in ("both", "left"):
            text = "a positive integer"
        elif self.low is not None:
            strict = self.closed in ("right", "neither")
            if self.low == 0:
                text = (f"a positive {noun.split()[-1]}" if strict
                        else f"a non-negative {noun.split()[-1]}")
            else:
                text = f"{noun} {'>' if strict else '>='} {_num(self.low)}"
        elif self.high is not None:
            text = f"{noun} {'<' if self.closed in ('left', 'neither') else '<='} {self.high}"
        else:
            text = f"a finite {noun.split()[-1]}"
        return text + (" or None" if self.allow_none else "")


@dataclass(frozen=True)
class Options(Constraint):
    """One of a few values (names, usually)."""

    values: tuple

    def is_satisfied_by(self, value: Any) -> bool:
        try:
            # 1 == True in Python: a bool matches only bool options, and a bool option only bools
            return any(value == v and isinstance(value, bool) == isinstance(v, bool)
                       for v in self.values)
        except TypeError:   # unhashable or uncomparable values are simply not options
            return False

    def describe(self) -> str:
        return "one of " + ", ".join(repr(v) for v in self.values)


@dataclass(frozen=True)
class Predicate(Constraint):
    """A check that is neither a range nor a set of names (e.g. "a callable")."""

    test: Callable[[Any], bool]
    text: str

    def is_satisfied_by(self, value: Any) -> bool:
        return bool(self.test(value))

    def describe(self) -> str:
        return self.text


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _names(values: Iterable) -> tuple:
    return tuple(values)


#: The constraints of every parameter users type, by name. A call may override one entry (e.g. a
#: different range) by passing a constraint to :func:`check`.
PARAMS: dict[str, Constraint] = {
    # pruning
    "amount": Interval(Real, 0, 1, "left"),
    "scope": Options(("global", "layer")),
    "normalize": Options(("mean", "l1", "l2", "max", None)),
    "steps": Interval(Integral, 1, None),
    "schedule": Options(("linear", "geometric")),
    # scoring
    "samples": Interval(Integral, 1, None, allow_none=True),
    "batch_size": Interval(Integral, 1, None),
    "prune_output": Options((True, False)),
    # retraining
    "epochs": Interval(Integral, 1, 1_000_000),
    "steps_per_epoch": Interval(Integral, 1, None, allow_none=True),
    "lr": Interval(Real, 0, None, "neither"),
    "weight_decay": Interval(Real, 0, None, "left"),
    "optimizer": Options(("adam", "adamw", "sgd")),
    # study
    "seed": Interval(Integral, *SEED_RANGE),
    "probe_size": Interval(Integral, 1, None),
    "max_snapshots": Interval(Integral, 1, None),
    "trust_source": Options((True, False)),
    "recalibrate": Options((True, False, None)),
    "recalibrate_samples": Interval(Integral, 2, None),
    "round_to": Interval(Integral, 1, None, allow_none=True),
    # budgets and constraints (fractions of the current model; drops in accuracy points / 1)
    "budget": Interval(Real, 0, 1, "neither"),
    "max_accuracy_drop": Interval(Real, 0, 1, "both", allow_none=True),
    "max_class_drop": Interval(Real, 0, 1, "both", allow_none=True),
    "max_group_drop": Interval(Real, 0, 1, "both", allow_none=True),
    "max_drift": Interval(Real, 0, 2, "both", allow_none=True),
    "max_grounding_drop": Interval(Real, 0, 1, "both", allow_none=True),
    # explanations
    "n": Interval(Integral, 1, None),
    # dynamic pruning
    "confidence": Interval(Real, 0, 1, "right"),
    "keep": Interval(Real, 0, 1, "right"),
}


def check(call: str, name: str, value: Any, constraint: Constraint | None = None) -> Any:
    """Check one value against its constraint; return it unchanged or raise ConfigError."""
    rule = constraint or PARAMS[name]
    if not rule.is_satisfied_by(value):
        if isinstance(rule, Options) and all(isinstance(v, str) or v is None
                                             for v in rule.values):
            raise ConfigError.unknown_name(call, name, [v for v in rule.values if v is not None],
                                           value)
        raise ConfigError.bad_value(call, name, rule.describe(), value)
    return value


def validate(call: str, **values: Any) -> None:
    """Check every keyword against :data:`PARAMS` (unknown names are a programming error)."""
    for name, value in values.items():
        check(call, name, value)


def check_classes(call: str, classes, num_classes: int,
                  class_names: Sequence[str] | None = None, *,
                  criterion: Any = None, param: str = "classes") -> list[int] | None:
    """``classes=``: one class or a non-empty list of them, each an index (a real int: ``0.7``
    or ``'1'`` would silently mean another class) or, when the study has ``class_names``, a
    class name (``"cultivar_C"``). Returns the indices.

    With ``criterion`` (a criterion class), a criterion that reads no data (``magnitude``,
    ``random``: the same scores whatever the classes) refuses ``classes=`` instead of ignoring it.

    Examples
    --------
    >>> check_classes("Study.score", ["b", 0], 3, ["a", "b", "c"])
    [1, 0]
    >>> check_classes("Study.score", "d", 3, ["a", "b", "c"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    xprune_nb.core.errors.ConfigError: Study.score(classes=...): unknown name 'd'; valid names are
    ...
    """
    if classes is None:
        return None
    names = [str(n) for n in class_names] if class_names is not None else []
    if isinstance(classes, (Integral, str)) and not isinstance(classes, bool):
        classes = [classes]
    allowed = f"class indices in [0, {num_classes})" + (
        " or class names" if names else "") + ", as one or a list"
    if not isinstance(classes, (list, tuple, range)) or not classes:
        raise ConfigError.bad_value(call, param, allowed, classes)
    out = []
    for c in classes:
        if isinstance(c, str):
            if c not in names:
                raise ConfigError.unknown_name(call, param, names or ["(no class names)"], c)
            out.append(names.index(c))
        elif isinstance(c, bool) or not isinstance(c, Integral) or not 0 <= c < num_classes:
            raise ConfigError.bad_value(call, param, allowed, classes)
        else:
            out.append(int(c))
    if criterion is not None and not getattr(criterion, "class_aware", False) and not getattr(
            criterion, "needs_data", True):
        raise ConfigError(
            f"{call}(classes=...): criterion {criterion.name!r} does not depend on classes (it "
            f"reads only the weights), so classes={_short(classes)} would be ignored. Leave "
            "classes out, or use a class-aware criterion (e.g. 'lrp', 'conductance', "
            "'xmask') or a data-driven one ('taylor', 'gradient', 'activation': scored on "
            "examples of those classes only).")
    return out


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
