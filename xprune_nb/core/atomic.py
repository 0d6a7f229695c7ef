"""Atomic file writes: the previous file survives any failure, including Ctrl-C.

Everything the package saves over a file a user may care about (studies, checkpoints, recipes
and their weights/data files, exported scripts, reports) goes through :func:`atomic_write`:
the new content is written to a temporary file in the same folder, flushed and fsynced, and
only then moved over the target with ``os.replace`` (atomic on POSIX and Windows). If
anything fails before that -- a full disk, a file-size limit, a bug in the payload, a
``KeyboardInterrupt`` -- the temporary file is removed and the old file is untouched.

Examples
--------
>>> import tempfile
>>> from pathlib import Path
>>> path = Path(tempfile.mkdtemp()) / "notes.txt"
>>> _ = write_text(path, "first", call="demo")
>>> try:
...     with atomic_write(path, call="demo") as f:
...         _ = f.write(b"half of the second")
...         raise KeyboardInterrupt
... except KeyboardInterrupt:
...     pass
>>> path.read_text(), sorted(p.name for p in path.parent.iterdir())
('first', ['notes.txt'])
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from .errors import ConfigError, StudyFileError

__all__ = ["atomic_write", "write_bytes", "write_text", "torch_save", "check_target", "as_path",
           "write_files", "move_into"]

_REASONS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
            errno.EFBIG: "the file-size limit was reached", errno.EROFS: "the disk is read-only",
            errno.EACCES: "permission denied", errno.EPERM: "permission denied"}


def _reason(exc: BaseException) -> str:
    code = getattr(exc, "errno", None)
    text = " ".join(str(exc).split())[:200] or type(exc).__name__
    return f"{_REASONS[code]} ({text})" if code in _REASONS else text


def as_path(path: object, *, call: str) -> Path:
    """``path`` as a Path; anything but a ``str`` or ``os.PathLike`` is a ConfigError.

    Examples
    --------
    >>> as_path(5, call="Study.save")
    Traceback (most recent call last):
    ...
    xprune_nb.core.errors.ConfigError: Study.save(path=...): expected a file path (str or ...
    """
    if isinstance(path, bytes) or not isinstance(path, (str, os.PathLike)) or path == "":
        raise ConfigError.bad_value(call, "path", "a file path (str or pathlib.Path)", path)
    return Path(path)


def check_target(path: str | Path, *, call: str) -> Path:
    """``path`` as a Path, refused unless it is (or can become) a regular file.

    Saving over a folder, a device (``/dev/full``), a pipe or a socket is refused before
    anything is written: replacing them with a file is never what was meant.

    Examples
    --------
    >>> check_target("/", call="demo")
    Traceback (most recent call last):
    ...
    xprune_nb.core.errors.StudyFileError: demo(path=...): '/' is a folder; give a file name ...
    """
    path = as_path(path, call=call)
    try:
        st = path.stat()
    except FileNotFoundError:
        return path
    except OSError as exc:
        raise StudyFileError(f"{call}(path=...): cannot write {str(path)!r}: "
                             f"{_reason(exc)}.") from exc
    if stat.S_ISDIR(st.st_mode):
        raise StudyFileError(f"{call}(path=...): {str(path)!r} is a folder; give a file name "
                             "inside it.")
    if not stat.S_ISREG(st.st_mode):
        raise StudyFileError(f"{call}(path=...): {str(path)!r} is not a regular file (a "
                             "device, pipe or socket); save to a file path.")
    return path


def _fsync_dir(folder: Path) -> None:
    # makes the rename itself durable; not possible on every platform / file system
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str | Path, *, call: str) -> Iterator[IO[bytes]]:
    """Open a temporary file next to ``path`` for binary writing; on a clean exit it
    replaces ``path``, on any exception it is removed and ``path`` is left as it was.

    ``OSError`` (and torch's writer errors, ``RuntimeError``) become :class:`StudyFileError`
    naming ``call`` and the file; anything else (``KeyboardInterrupt`` included) is re-raised
    as is, after the clean-up.
    """
    path = check_target(path, call=call)
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StudyFileError(f"{call}(path=...): cannot create the folder {str(folder)!r}: "
                             f"{_reason(exc)}.") from exc
    tmp = folder / f".{path.name[:200]}.{secrets.token_hex(4)}.tmp"
    try:
        # O_EXCL: never write through a file (or link) someone else put there
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
                     0o666)
    except OSError as exc:
        raise StudyFileError(f"{call}(path=...): cannot write into {str(folder)!r}: "
                             f"{_reason(exc)}.") from exc
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        if path.exists():  # keep the permissions of the file we replace
            os.chmod(tmp, stat.S_IMODE(path.stat().st_mode))
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, (OSError, RuntimeError)) and not isinstance(exc, StudyFileError):
            raise StudyFileError(
                f"{call}(path=...): could not write {str(path)!r}: {_reason(exc)}. The "
                "previous file (if any) is unchanged; free some space or choose another "
                "folder.") from exc
        raise
    _fsync_dir(folder)


def write_bytes(path: str | Path, data: bytes, *, call: str) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_write(path, call=call) as handle:
        handle.write(data)
    return Path(path)


def write_text(path: str | Path, text: str, *, call: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    return write_bytes(path, text.encode("utf-8"), call=call)


def write_files(files: dict[Path, bytes], *, call: str) -> list[Path]:
    """Write several files that belong together: all of them or none.

    Every target is checked first, then every new content is staged in a temporary file
    next to its target (flushed and fsynced); only when all are staged are they moved over
    their targets, one ``os.replace`` each. A failure before that (a full disk, a file-size
    limit, Ctrl-C) removes the staged files and leaves every previous file as it was. A
    target that is a symbolic link is replaced by the new file, never written through.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> folder = Path(tempfile.mkdtemp())
    >>> [p.name for p in write_files({folder / "a.txt": b"1", folder / "b.txt": b"2"},
    ...                             call="demo")]
    ['a.txt', 'b.txt']
    """
    paths = [check_target(p, call=call) for p in files]
    with contextlib.ExitStack() as stack:
        for path, data in zip(paths, files.values()):
            stack.enter_context(atomic_write(path, call=call)).write(data)
        # leaving the stack commits (renames) every staged file; an exception above
        # unwinds every one of them without committing any
    return paths


def move_into(staged: Path, path: str | Path, *, call: str) -> Path:
    """Move a finished file (written in a private staging folder on the same file system)
    over ``path`` with one ``os.replace``, after the same target check as every writer: a
    folder, a device or a pipe at ``path`` is refused, a symbolic link is replaced, never
    written through."""
    path = check_target(path, call=call)
    try:
        os.replace(staged, path)
    except OSError as exc:
        raise StudyFileError(f"{call}(path=...): could not write {str(path)!r}: "
                             f"{_reason(exc)}.") from exc
    return path


def torch_save(obj: Any, path: str | Path, *, call: str) -> Path:
    """``torch.save(obj, path)``, atomically (see :func:`atomic_write`)."""
    import torch

    with atomic_write(path, call=call) as handle:
        torch.save(obj, handle)
    return Path(path)
