"""Why an ONNX export failed, in the user's terms: the layer whose code was running, where in
its ``forward``, the exporter's first line of reason, and what to rewrite; and the exporter's
own logging kept out of the notebook.

Examples
--------
>>> from torch import nn
>>> try:
...     raise ValueError("data-dependent branch")
... except ValueError as exc:
...     print(_root_cause(exc))
data-dependent branch
"""

from __future__ import annotations

import contextlib
import logging
import warnings

from torch import nn

from ..core.errors import ModelError

_CALL = "export_onnx"


@contextlib.contextmanager
def _quiet():
    """The exporter logs and prints traced graphs, warnings about optional operator libraries
    (torchvision) and deprecations: noise around the one message that matters, which is
    raised as an error. Its output is kept from the user's notebook."""
    import io

    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(logging.NOTSET)


def _failing_layer(exc: BaseException, root: nn.Module) -> tuple[str | None, str | None]:
    """The deepest submodule of ``root`` whose code was running when ``exc`` was raised, and
    the ``file:line`` of its ``forward`` there, read from the tracebacks of the exception
    chain (``torch.export`` runs the model's Python code, so its frames are real)."""
    names = {id(m): n for n, m in root.named_modules()}   # the model itself is ""
    best: tuple[int, str, str | None] | None = None
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        tb = exc.__traceback__
        while tb is not None:
            code = tb.tb_frame.f_code
            first = code.co_varnames[0] if code.co_argcount else None
            obj = tb.tb_frame.f_locals.get(first) if first else None
            if obj is not None and id(obj) in names:
                name = names[id(obj)]
                where = (f"{code.co_filename}:{tb.tb_lineno}" if not code.co_name.startswith("_")
                         else None)
                depth = name.count(".") if name else -1
                if best is None or depth > best[0] or (depth == best[0] and name == best[1]):
                    best = (depth, name, where or (best[2] if best and best[1] == name else None))
            tb = tb.tb_next
        exc = exc.__cause__ or exc.__context__
    if best is None:
        return None, None
    return best[1], best[2]


def _root_cause(exc: BaseException) -> BaseException:
    seen = set()
    while (exc.__cause__ or exc.__context__) is not None and id(exc) not in seen:
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return exc


def _export_error(exc: Exception, wrapper: nn.Module) -> ModelError:
    """The package's error for a failed export: the layer whose code was running (``wrapper``
    holds the user's model as ``.model``), where, and what to do about it."""
    name, where = _failing_layer(exc, wrapper.model)
    cause = _root_cause(exc)
    # the first line says what failed; the rest is the exporter's debugging advice
    lines = [ln.strip() for ln in str(cause).splitlines() if ln.strip()]
    reason = (lines[0] if lines else type(cause).__name__)[:300]
    layer = (f"in layer {name!r} ({type(wrapper.model.get_submodule(name)).__name__})"
             if name else "in the model's own forward()")   # name "" (or None: not found)
    return ModelError(
        f"{_CALL}: the model cannot be exported to ONNX; tracing fails {layer}"
        + (f" at {where}" if where else "") + f": {type(cause).__name__}: {reason}. "
        "torch.export cannot follow Python control flow on tensor values (an `if` or loop "
        "that reads a tensor) or calls it does not know; rewrite that part with tensor "
        "operations (torch.where, masking) or export the layers around it.")
