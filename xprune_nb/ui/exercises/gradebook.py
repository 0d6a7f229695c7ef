"""The teacher's gradebook: one CSV row per check a student runs in a check box.

Where: the path in the ``XPRUNE_GRADEBOOK`` environment variable (``xprune-nb app`` sets it:
by default ``xprune_gradebook.csv`` next to the served notebook, or ``--gradebook PATH``), or
the ``gradebook=`` path given to :class:`~xprune_nb.ui.exercises.CheckBox`. Without either,
nothing is recorded.

Who: the JupyterHub user (``JUPYTERHUB_USER``) when the notebook runs on a JupyterHub;
otherwise the name the student types once into the check box.

Columns: ``time`` (UTC, ISO 8601), ``student``, ``identified_by`` (``jupyterhub`` or ``name``),
``exercise``, ``passed`` (``true``/``false``), ``code`` (the reason, as in docs/classroom.md),
``title``. Several kernels (one per visitor) append to the same file: each row is written under
an exclusive lock, whole.
"""

from __future__ import annotations

import csv
import io
import os
from datetime import datetime, timezone
from pathlib import Path

__all__ = ["ENV", "FIELDS", "gradebook_path", "hub_user", "record", "read"]

ENV = "XPRUNE_GRADEBOOK"
FIELDS = ("time", "student", "identified_by", "exercise", "passed", "code", "title")


def gradebook_path(path: str | os.PathLike | None = None) -> Path | None:
    """The gradebook to write: ``path``, else ``$XPRUNE_GRADEBOOK``, else None (no recording)."""
    chosen = path if path is not None else os.environ.get(ENV) or None
    return Path(chosen) if chosen else None


def hub_user() -> str | None:
    """The JupyterHub user running this kernel, if any."""
    return os.environ.get("JUPYTERHUB_USER") or None


def record(path: str | os.PathLike, feedback, student: str, identified_by: str) -> None:
    """Append one row for ``feedback`` (a check's :class:`Feedback`) by ``student``."""
    from ...core.atomic import check_target

    path = check_target(path, call="exercises.record")   # a folder, device or pipe: refused
    path.parent.mkdir(parents=True, exist_ok=True)
    row = io.StringIO()
    csv.writer(row).writerow([datetime.now(timezone.utc).isoformat(timespec="seconds"),
                              student, identified_by, feedback.exercise,
                              "true" if feedback.passed else "false", feedback.code,
                              feedback.title])
    with open(path, "a+", encoding="utf-8", newline="") as fh:
        try:
            import fcntl  # POSIX: one writer at a time; elsewhere a row is one small write

            fcntl.flock(fh, fcntl.LOCK_EX)
        except ImportError:
            pass
        fh.seek(0, os.SEEK_END)
        if fh.tell() == 0:
            fh.write(",".join(FIELDS) + "\n")
        fh.write(row.getvalue())
        fh.flush()


def read(path: str | os.PathLike):
    """The gradebook as a DataFrame (for the teacher): one row per check run.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from xprune_nb.ui.exercises.feedback import Feedback
    >>> book = pathlib.Path(tempfile.mkdtemp()) / "gradebook.csv"
    >>> record(book, Feedback("ex5", True, "Exercise 5: passed", (), "ok"), "Ada", "name")
    >>> read(book)[["student", "exercise", "passed"]].values.tolist()
    [['Ada', 'ex5', True]]
    """
    import pandas as pd

    return pd.read_csv(path, dtype={"student": str}, true_values=["true"],
                       false_values=["false"])
