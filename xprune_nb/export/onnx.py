"""ONNX export of a pruned model, checked against the model with onnxruntime.

The model is copied, its weight masks are baked in and (by default) every BatchNorm that
directly follows a Conv or Linear layer is folded into it (:mod:`xprune_nb.export.fold`). The
copy is exported with PyTorch's ``torch.export``-based exporter (``torch.onnx.export(...,
dynamo=True)``, the default since PyTorch 2.9; the TorchScript-based one is deprecated, and it
silently bakes in whichever branch of an ``if`` on tensor values the example took, where
``torch.export`` refuses), with a dynamic batch dimension. Before the file is written,
onnxruntime runs it on the example and on a batch of another size, and its outputs must match
the eager model's (masks and BatchNorm as they are) within ``atol``. The file is written to a
temporary name in the same folder and then renamed, so a reader never sees half a file.

onnx, onnxscript and onnxruntime are the optional extra ``xprune_nb[deploy]``.

Examples
--------
>>> import tempfile, torch, xprune_nb as xp
>>> model = xp.zoo.load("digits_cnn")
>>> path = export_onnx(model, torch.zeros(2, 1, 8, 8), tempfile.mkdtemp() + "/cnn.onnx")
>>> session = onnx_session(path)
>>> run_onnx(session, torch.zeros(5, 1, 8, 8)).shape
torch.Size([5, 10])
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from .._model import eval_mode, logits_of
from ..errors import ConfigError, MissingDependencyError, ModelError, StudyFileError

__all__ = ["export_onnx", "onnx_session", "run_onnx"]

_CALL = "export_onnx"


def _require(package: str, feature: str):
    import importlib

    try:
        return importlib.import_module(package)
    except ImportError as exc:
        raise MissingDependencyError.for_package(package, feature, "deploy") from exc


class _Logits(nn.Module):
    """The model followed by its output function, so the ONNX graph returns logits."""

    def __init__(self, model: nn.Module, output_fn: Callable | None):
        super().__init__()
        self.model = model
        self.output_fn = output_fn

    def forward(self, x):
        out = self.model(x)
        return self.output_fn(out) if self.output_fn is not None else logits_of(out)


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


def _export_error(exc: Exception, wrapper: _Logits) -> ModelError:
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


def onnx_session(path: str | Path | bytes, *, threads: int | None = None):
    """An ``onnxruntime.InferenceSession`` on the CPU for an ONNX file (or its bytes).

    ``threads`` is the number of intra-op threads (default: ``torch.get_num_threads()``, so
    both runtimes are compared on the same number of cores).
    """
    ort = _require("onnxruntime", "Running an ONNX model")
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads or torch.get_num_threads())
    options.inter_op_num_threads = 1
    source = path if isinstance(path, bytes) else str(path)
    try:
        return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise StudyFileError(f"onnx_session(path=...): cannot load {str(path)[:200]!r} as an "
                             f"ONNX model: {' '.join(str(exc).split())[:300]}") from exc


def run_onnx(session, x: torch.Tensor) -> torch.Tensor:
    """The first output of an onnxruntime ``session`` on ``x``, as a tensor."""
    name = session.get_inputs()[0].name
    return torch.from_numpy(session.run(None, {name: x.detach().cpu().numpy()})[0])


def export_onnx(model: nn.Module, example: torch.Tensor, path: str | Path, *,
                output_fn: Callable | None = None, fold_bn: bool = True, check: bool = True,
                atol: float = 1e-4, dynamic_batch: bool = True,
                opset: int | None = None) -> Path:
    """Write ``model`` as an ONNX file whose outputs are checked with onnxruntime.

    Parameters
    ----------
    model : nn.Module
        The (pruned, possibly masked) model; never modified.
    example : torch.Tensor
        A batch of inputs (e.g. ``study.data.train.X[:2]``), used to trace the model and to
        check the file.
    path : str or Path
        Where to write the ``.onnx`` file (folders are created).
    output_fn : callable, optional
        Turns the model's output into logits (default: a tensor as is, ``.logits``,
        ``["logits"]`` or the first item of a tuple). The ONNX graph has one output.
    fold_bn : bool
        Fold BatchNorm into the layer before it (:func:`~xprune_nb.export.fold.fold_batchnorm`).
        Masks are always baked in.
    check : bool
        Run the file with onnxruntime and compare with the eager model before writing it.
    atol : float
        Largest absolute difference allowed between onnxruntime's and the model's outputs.
    dynamic_batch : bool
        Export the batch dimension as dynamic (any batch size runs).
    opset : int, optional
        ONNX opset version (default: the exporter's).

    Returns
    -------
    Path
        The file written.

    Raises
    ------
    MissingDependencyError
        onnx, onnxscript or (with ``check``) onnxruntime is not installed.
    ModelError
        The model cannot be traced (the message names the layer and the line), or
        onnxruntime's outputs differ from the model's by more than ``atol``. Nothing is
        written.

    Examples
    --------
    >>> import tempfile, torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
    ...                     nn.Linear(4 * 4 * 4, 3)).eval()
    >>> export_onnx(net, torch.randn(2, 1, 6, 6), tempfile.mkdtemp() + "/net.onnx").suffix
    '.onnx'
    """
    if not isinstance(model, nn.Module):
        raise ConfigError.bad_value(_CALL, "model", "a torch.nn.Module", model)
    if not isinstance(example, torch.Tensor) or example.dim() < 1 or len(example) < 1:
        raise ConfigError.bad_value(_CALL, "example", "a tensor holding a batch of inputs",
                                    example)
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise ConfigError.bad_value(_CALL, "path", "a file path", path)
    if output_fn is not None and not callable(output_fn):
        raise ConfigError.bad_value(_CALL, "output_fn", "a callable or None", output_fn)
    for param, value in (("fold_bn", fold_bn), ("check", check),
                         ("dynamic_batch", dynamic_batch)):
        if not isinstance(value, bool):
            raise ConfigError.bad_value(_CALL, param, "True or False", value)
    if isinstance(atol, bool) or not isinstance(atol, (int, float)) or not atol > 0:
        raise ConfigError.bad_value(_CALL, "atol", "a positive number", atol)
    if opset is not None and (isinstance(opset, bool) or not isinstance(opset, int)
                              or opset < 7):
        raise ConfigError.bad_value(_CALL, "opset", "an ONNX opset version >= 7 or None", opset)
    path = Path(path)
    _require("onnx", "ONNX export")
    _require("onnxscript", "ONNX export")
    if check:
        _require("onnxruntime", "Checking an ONNX export")

    example = example.detach().cpu()
    if any(t.device.type != "cpu" for t in [*model.parameters(), *model.buffers()]):
        model = _copy(model).cpu()   # exported and checked on the CPU, like onnxruntime runs
    from .fold import bake_masks, fold_batchnorm

    deploy = (fold_batchnorm(model, example) if fold_bn
              else bake_masks(_copy(model)).eval())
    wrapper = _Logits(deploy, output_fn).eval()
    # torch.export specialises dimensions of size 1: trace with at least two examples
    trace_x = example if len(example) > 1 or not dynamic_batch else torch.cat([example] * 2)
    shapes = ({0: torch.export.Dim("batch")},) if dynamic_batch else None
    try:
        with _quiet(), torch.no_grad():
            program = torch.onnx.export(wrapper, (trace_x,), dynamo=True, dynamic_shapes=shapes,
                                        input_names=["input"], output_names=["output"],
                                        opset_version=opset, verbose=False)
    except Exception as exc:  # noqa: BLE001 - the exporter raises many types; name the layer
        raise _export_error(exc, wrapper) from exc
    data = program.model_proto.SerializeToString()
    if check:
        _check(model, output_fn, data, example, atol, dynamic_batch)
    return _write_atomically(path, data)


def _copy(model: nn.Module) -> nn.Module:
    from .._model import copy_model  # deepcopy refuses a masked layer's computed weight

    return copy_model(model)


def _check(model: nn.Module, output_fn, data: bytes, example: torch.Tensor, atol: float,
           dynamic_batch: bool) -> None:
    session = onnx_session(data)
    inputs = [example]
    if dynamic_batch:   # another batch size than the one traced: the batch axis really is free
        inputs.append(torch.cat([example] * 3)[: len(example) + 1])
    for x in inputs:
        with torch.no_grad(), eval_mode(model):
            out = model(x)
            want = output_fn(out) if output_fn is not None else logits_of(out)
        got = run_onnx(session, x)
        if got.shape != want.shape:
            raise ModelError(f"{_CALL}: onnxruntime returns shape {tuple(got.shape)} on a batch "
                             f"of {len(x)}, the model {tuple(want.shape)}; nothing written.")
        diff = float((got.to(want.dtype) - want).abs().max())
        if not diff <= atol:
            raise ModelError(f"{_CALL}: onnxruntime's outputs differ from the model's by "
                             f"{diff:.3g} on a batch of {len(x)} (atol={atol}); nothing "
                             "written. Try fold_bn=False, or a larger atol for low precision.")


def _write_atomically(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path
