"""Reading tensor files (studies, checkpoints, weights, data) without running code.

``torch.load(weights_only=True)`` refuses anything but tensors and plain containers, so reading
never executes code from a file; here every way such a read can fail becomes a
:class:`~xprune_nb.core.errors.StudyFileError` that says what is wrong and what to do, and loaded
weights are checked to be finite.

Examples
--------
>>> import tempfile, torch
>>> path = tempfile.mkdtemp() + "/w.pt"
>>> torch.save({"w": torch.ones(2)}, path)
>>> read_torch_file(path, call="demo", kind="weights file")["w"].tolist()
[1.0, 1.0]
>>> check_finite_state({"w": torch.tensor([float("nan")])}, path=path, call="demo",
...                    where="the weights")
Traceback (most recent call last):
...
xprune_nb.core.errors.StudyFileError: demo: '...w.pt' holds NaN or infinite weights ...
"""

from __future__ import annotations

from pathlib import Path

import torch

from .atomic import as_path
from .errors import StudyFileError

__all__ = ["WHAT_TO_DO", "read_torch_file", "check_finite_state"]

WHAT_TO_DO = "re-save it from the notebook that made it, or use an earlier copy"


def check_finite_state(state: dict, *, path: Path, call: str, where: str) -> None:
    """Raise :class:`StudyFileError` if a floating tensor of ``state`` holds NaN or inf."""
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise StudyFileError(f"{call}: {str(path)!r} is damaged: {where} holds "
                                 f"{type(value).__name__} for {key!r} instead of a tensor; "
                                 f"{WHAT_TO_DO}.")
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise StudyFileError(
                f"{call}: {str(path)!r} holds NaN or infinite weights ({key!r} in {where}); "
                "the file is damaged or was written from a diverged model, so its recorded "
                f"metrics cannot be trusted. {WHAT_TO_DO[0].upper() + WHAT_TO_DO[1:]}.")


def read_torch_file(path: str | Path, *, call: str, kind: str) -> object:
    """``torch.load(path, weights_only=True)`` with every failure as a StudyFileError.

    ``weights_only=True`` cannot run code, so any exception it raises means the file is
    damaged or is something else (a text file, a pickle, a truncated copy).
    """
    path = as_path(path, call=call)
    if path.is_dir():
        raise StudyFileError(f"{call}(path=...): {str(path)!r} is a folder; give the path of "
                             f"a {kind} file.")
    if not path.exists():
        raise StudyFileError(f"{call}(path=...): no such file {str(path)!r}.")
    if not path.is_file():
        raise StudyFileError(f"{call}(path=...): {str(path)!r} is not a regular file (a "
                             f"device, pipe or socket); give the path of a {kind} file.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - see the docstring
        raise StudyFileError(
            f"{call}(path=...): {str(path)!r} is not a readable {kind}: it is damaged "
            "(truncated or overwritten), not such a file at all, or it holds objects other "
            "than tensors and plain data, which are refused "
            f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]}); {WHAT_TO_DO}."
        ) from exc
