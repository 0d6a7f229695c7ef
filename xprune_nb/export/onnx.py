"""ONNX export of a pruned model, checked against the model with onnxruntime.

The model is copied, its weight masks are baked in and (by default) every BatchNorm that
directly follows a Conv or Linear layer is folded into it (:mod:`xprune_nb.export.fold`). The
copy is exported with PyTorch's ``torch.export``-based exporter (``torch.onnx.export(...,
dynamo=True)``, the default since PyTorch 2.9; the TorchScript-based one is deprecated, and it
silently bakes in whichever branch of an ``if`` on tensor values the example took, where
``torch.export`` refuses), with a dynamic batch dimension. Before the file is written,
onnxruntime runs it on the example and on a batch of another size, and its outputs must match
the eager model's (masks and BatchNorm as they are) within ``atol``. The target is checked
first (a folder, a device or a pipe is refused with ``StudyFileError``) and the file is
written through the package's atomic writer, so a reader never sees half a file and a full
disk or a file-size limit leaves the previous file as it was.

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

import inspect
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from ..core.atomic import check_target, write_bytes
from ..core.errors import ConfigError, MissingDependencyError, ModelError, StudyFileError
from ..models.mechanisms.model_tools import eval_mode, logits_of
from .onnx_errors import _export_error, _quiet

__all__ = ["export_onnx", "onnx_session", "run_onnx", "input_names"]

_CALL = "export_onnx"


def _require(package: str, feature: str):
    import importlib

    try:
        return importlib.import_module(package)
    except ImportError as exc:
        raise MissingDependencyError.for_package(package, feature, "deploy") from exc


class _Logits(nn.Module):
    """The model followed by its output function, so the ONNX graph returns logits. With
    ``names`` the inputs are handed over as keywords (a dict / ``BatchEncoding`` example)."""

    def __init__(self, model: nn.Module, output_fn: Callable | None,
                 names: Sequence[str] | None = None):
        super().__init__()
        self.model = model
        self.output_fn = output_fn
        self.names = list(names) if names is not None else None

    def forward(self, *inputs):
        out = (self.model(**dict(zip(self.names, inputs, strict=True))) if self.names
               else self.model(*inputs))
        return self.output_fn(out) if self.output_fn is not None else logits_of(out)


def input_names(model: nn.Module, example) -> list[str]:
    """The ONNX input names: the model's ``forward`` parameter names, as Optimum does.

    A dict example keeps its keys, in the order of the forward's parameters; a tensor takes
    the name of the forward's first parameter (``"input"`` when it has none, e.g. ``*args``).

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> input_names(nn.Linear(2, 2), torch.zeros(1, 2))
    ['input']
    """
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        params = {}
    plain = [n for n, p in params.items()
             if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if not isinstance(example, Mapping):
        return plain[:1] or ["input"]
    keys = [str(k) for k in example]
    takes_any = any(p.kind == p.VAR_KEYWORD for p in params.values())
    unknown = [k for k in keys if k not in plain]
    if unknown and not takes_any:
        raise ConfigError.bad_value(_CALL, "example", f"a dict whose keys are parameters of "
                                    f"{type(model).__name__}.forward ({plain[:8]})", keys)
    return sorted(keys, key=lambda k: plain.index(k) if k in plain else len(plain))


def _is_tokens(t: torch.Tensor) -> bool:
    """Token-like input (ids, masks, type ids): integer or bool with a sequence axis."""
    return t.dim() >= 2 and (not t.is_floating_point() and not t.is_complex())


def _max_length(model: nn.Module) -> int | None:
    config = getattr(model, "config", None)
    value = getattr(config, "max_position_embeddings", None) if config is not None else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


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


def run_onnx(session, x) -> torch.Tensor:
    """The first output of an onnxruntime ``session`` on ``x`` (a tensor, or a dict of
    tensors fed by name), as a tensor."""
    names = [i.name for i in session.get_inputs()]
    if isinstance(x, Mapping):
        missing = [n for n in names if n not in x]
        if missing:
            raise ConfigError.bad_value("run_onnx", "x", f"a dict with the inputs {names}",
                                        list(x))
        feed = {n: x[n].detach().cpu().numpy() for n in names}
    else:
        feed = {names[0]: x.detach().cpu().numpy()}
    return torch.from_numpy(session.run(None, feed)[0])


def export_onnx(model: nn.Module, example: torch.Tensor, path: str | Path, *,
                output_fn: Callable | None = None, fold_bn: bool = True, check: bool = True,
                atol: float = 1e-4, dynamic_batch: bool = True,
                dynamic_sequence: bool | None = None, opset: int | None = None) -> Path:
    """Write ``model`` as an ONNX file whose outputs are checked with onnxruntime.

    Parameters
    ----------
    model : nn.Module
        The (pruned, possibly masked) model; never modified.
    example : torch.Tensor or dict
        A batch of inputs (e.g. ``study.data.train.X[:2]``), or a dict / ``BatchEncoding`` of
        them (``input_ids``, ``attention_mask``, ...), used to trace the model and to check
        the file. The ONNX inputs are named as the model's ``forward`` names its parameters
        (:func:`input_names`); the output is ``logits``.
    path : str or Path
        Where to write the ``.onnx`` file (folders are created).
    output_fn : callable, optional
        Turns the model's output into logits (default: a tensor as is, ``.logits``,
        ``["logits"]``; a tuple is refused: pass ``output_fn``). The ONNX graph has one output.
    fold_bn : bool
        Fold BatchNorm into the layer before it (:func:`~xprune_nb.export.fold.fold_batchnorm`).
        Masks are always baked in.
    check : bool
        Run the file with onnxruntime and compare with the eager model before writing it.
    atol : float
        Largest absolute difference allowed between onnxruntime's and the model's outputs.
    dynamic_batch : bool
        Export the batch dimension as dynamic (any batch size runs).
    dynamic_sequence : bool or None
        Export axis 1 of token inputs (integer ``(batch, length)`` tensors: ids, attention
        masks, token type ids) as a dynamic ``sequence`` axis, bounded by the config's
        ``max_position_embeddings`` when the model has one. ``None`` (auto): on for token
        inputs, falling back to a fixed length for a model that only runs at one length. The
        check then also runs one token shorter and two longer (padded with id 0 and mask 0
        when there is an ``attention_mask``).
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
    tensors = list(example.values()) if isinstance(example, Mapping) else [example]
    if not tensors or not all(isinstance(t, torch.Tensor) and t.dim() >= 1 and len(t) >= 1
                              and len(t) == len(tensors[0]) for t in tensors):
        raise ConfigError.bad_value(_CALL, "example", "a tensor holding a batch of inputs, or "
                                    "a dict of such tensors (input_ids, attention_mask, ...)",
                                    example)
    if dynamic_sequence not in (None, True, False):
        raise ConfigError.bad_value(_CALL, "dynamic_sequence", "None (auto), True or False",
                                    dynamic_sequence)
    path = check_target(path, call=_CALL)   # a folder, a device or a pipe: refused first
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
    _require("onnx", "ONNX export")
    _require("onnxscript", "ONNX export")
    if check:
        _require("onnxruntime", "Checking an ONNX export")

    names = input_names(model, example)
    keyed = isinstance(example, Mapping)
    example = ({n: example[n].detach().cpu() for n in names} if keyed
               else example.detach().cpu())
    if any(t.device.type != "cpu" for t in [*model.parameters(), *model.buffers()]):
        model = _copy(model).cpu()   # exported and checked on the CPU, like onnxruntime runs
    from .fold import bake_masks, fold_batchnorm

    # a dict example is not a tensor fold_batchnorm can trace with; without one it keeps the
    # Linear + BatchNorm1d pairs it cannot prove foldable (Conv pairs still fold)
    deploy = (fold_batchnorm(model, None if keyed else example) if fold_bn
              else bake_masks(_copy(model)).eval())
    wrapper = _Logits(deploy, output_fn, names if keyed else None).eval()
    inputs = [example[n] for n in names] if keyed else [example]
    # torch.export specialises dimensions of size 1: trace with at least two examples
    if dynamic_batch and len(inputs[0]) < 2:
        inputs = [torch.cat([t] * 2) for t in inputs]
    tokens = all(_is_tokens(t) and t.shape[1] >= 2 for t in inputs)
    sequence = tokens if dynamic_sequence is None else dynamic_sequence
    if sequence and not tokens:
        raise ConfigError.bad_value(_CALL, "dynamic_sequence", "False for inputs that are not "
                                    "token ids (integer (batch, length) tensors, length >= 2)",
                                    sequence)
    batch, length = torch.export.Dim("batch"), torch.export.Dim("sequence",
                                                                max=_max_length(model))
    tries = [sequence, False] if sequence and dynamic_sequence is None else [sequence]
    for seq in tries:
        axes = {**({0: batch} if dynamic_batch else {}), **({1: length} if seq else {})}
        shapes = (tuple(dict(axes) for _ in inputs),) if axes else None
        try:
            with _quiet(), torch.no_grad():
                program = torch.onnx.export(wrapper, tuple(inputs), dynamo=True,
                                            dynamic_shapes=shapes, input_names=names,
                                            output_names=["logits"], opset_version=opset,
                                            verbose=False)
            break
        except Exception as exc:  # noqa: BLE001 - the exporter raises many types
            if seq is not tries[-1]:
                continue   # auto: a model tied to one length still exports at that length
            raise _export_error(exc, wrapper) from exc
    data = program.model_proto.SerializeToString()
    if check:
        _check(model, output_fn, data, example, atol, dynamic_batch, seq, _max_length(model))
    return write_bytes(path, data, call=_CALL)


def _copy(model: nn.Module) -> nn.Module:
    from ..models.mechanisms.model_tools import (
        copy_model,  # deepcopy refuses a masked layer's computed weight
    )

    return copy_model(model)


def _map(x, fn):
    return {k: fn(k, v) for k, v in x.items()} if isinstance(x, Mapping) else fn("", x)


def _lengths(example, longest: int | None) -> list:
    """The example at another sequence length: one token shorter, and two longer -- padded
    (id 0, mask 0) when there is an ``attention_mask``, else its first tokens repeated."""
    length = next(iter(example.values())).shape[1] if isinstance(example, Mapping) \
        else example.shape[1]
    out = [_map(example, lambda _k, t: t[:, :length - 1])]
    if longest is None or length + 2 <= longest:
        padded = isinstance(example, Mapping) and "attention_mask" in example

        def grow(key, t):
            if padded:
                return torch.cat([t, torch.zeros_like(t[:, :2])], dim=1)
            return torch.cat([t, t[:, :2]], dim=1)
        out.append(_map(example, grow))
    return out


def _check(model: nn.Module, output_fn, data: bytes, example, atol: float,
           dynamic_batch: bool, sequence: bool = False, longest: int | None = None) -> None:
    from ..record.io.pretrained import call_model

    session = onnx_session(data)
    inputs = [example]
    if dynamic_batch:   # another batch size than the one traced: the batch axis really is free
        inputs.append(_map(example, lambda _k, t: torch.cat([t] * 3)[: len(t) + 1]))
    if sequence:        # other lengths (and padding): the sequence axis really is free
        inputs += _lengths(example, longest)
    for x in inputs:
        with torch.no_grad(), eval_mode(model):
            out = call_model(model, x)
            want = output_fn(out) if output_fn is not None else logits_of(out)
        got = run_onnx(session, x)
        shape = tuple(next(iter(x.values())).shape if isinstance(x, Mapping) else x.shape)
        if got.shape != want.shape:
            raise ModelError(f"{_CALL}: onnxruntime returns shape {tuple(got.shape)} on inputs "
                             f"of shape {shape}, the model {tuple(want.shape)}; nothing written.")
        diff = float((got.to(want.dtype) - want).abs().max())
        if not diff <= atol:
            raise ModelError(f"{_CALL}: onnxruntime's outputs differ from the model's by "
                             f"{diff:.3g} on inputs of shape {shape} (atol={atol}); nothing "
                             "written. Try fold_bn=False, or a larger atol for low precision.")
