"""Exceptions raised by xprune_nb.

Every error names the call and the parameter, says what is allowed and what was given, so that
the message alone tells the user what to change. All of them derive from :class:`XPruneError`.

Examples
--------
>>> from xprune_nb.core.errors import ConfigError, XPruneError
>>> err = ConfigError.bad_value("Study.prune", "amount", "a number in [0, 1)", 1.5)
>>> str(err)
'Study.prune(amount=...): expected a number in [0, 1), got 1.5.'
>>> isinstance(err, XPruneError) and isinstance(err, ValueError)
True
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "XPruneError",
    "ConfigError",
    "DataError",
    "ModelError",
    "PruneError",
    "NotScoredError",
    "StudyFileError",
    "StoppedError",
    "MissingDependencyError",
    "StudyBusyError",
]


def _show(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class XPruneError(Exception):
    """Base class of every error xprune_nb raises on purpose."""


class ConfigError(XPruneError, ValueError):
    """A parameter of a public call is invalid (unknown name, out of range, wrong type)."""

    @classmethod
    def bad_value(cls, call: str, param: str, allowed: str, got: object) -> ConfigError:
        """Build the standard message: which call and parameter, what is allowed, what was given."""
        return cls(f"{call}({param}=...): expected {allowed}, got {_show(got)}.")

    @classmethod
    def unknown_name(
        cls, call: str, param: str, valid: Iterable[str], got: object
    ) -> ConfigError:
        """Standard message for an unknown name: lists every valid name."""
        names = ", ".join(repr(v) for v in sorted(valid))
        return cls(f"{call}({param}=...): unknown name {_show(got)}; valid names are {names}.")


class DataError(XPruneError, ValueError):
    """Data is empty, malformed, or does not fit the model."""


class ModelError(XPruneError, ValueError):
    """The model cannot be used as given (nothing prunable, NaN weights, wrong output...)."""


class PruneError(XPruneError, ValueError):
    """A pruning request cannot be carried out without breaking the model."""


class NotScoredError(XPruneError, RuntimeError):
    """An operation needs scores that have not been computed (call ``Study.score`` first)."""


class StudyFileError(XPruneError, OSError):
    """A study or checkpoint file is missing, corrupt, or not an xprune_nb file."""


class StoppedError(XPruneError, RuntimeError):
    """Long work was stopped by the user before it finished."""


class MissingDependencyError(XPruneError, ImportError):
    """An optional dependency is not installed; the message says how to install it."""

    @classmethod
    def for_package(cls, package: str, feature: str, extra: str) -> MissingDependencyError:
        return cls(
            f"{feature} needs the optional package {package!r}, which is not installed. "
            f"Install it with: pip install 'xprune_nb[{extra}]'"
        )


class StudyBusyError(XPruneError, RuntimeError):
    """Another call is changing the study (e.g. a retrain started from the panel); a second
    mutating call is refused at once rather than waiting (waiting on the kernel's thread can
    deadlock)."""
