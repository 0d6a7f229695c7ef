"""The opening check of a model on the data: does it run, how many logits, which layers run
and which produce the logits, and (optionally) its MACs per example, all in one pass."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

from ...core.errors import DataError, ModelError
from .model_tools import eval_mode, prunable_layers

__all__ = ["check_fits", "find_output_layers", "executed_layers"]


def _hook_layers(model: nn.Module, order: list) -> list:
    """Forward hooks that append ``(name, output)`` of every Conv/Linear layer that runs."""
    return [m.register_forward_hook(lambda mod, inp, out, name=name: order.append((name, out)))
            for name, m in prunable_layers(model).items()]


def _output_layers(order: list[tuple[str, torch.Tensor]], out: torch.Tensor) -> list[str]:
    direct = [name for name, t in order if t is out]
    if direct:
        return direct[-1:]
    width = out.shape[-1] if out.dim() > 1 else 1
    candidates = [name for name, t in order if isinstance(t, torch.Tensor) and t.dim() >= 2
                  and t.shape[1] == width]
    return candidates[-1:] if candidates else []


def find_output_layers(model: nn.Module, example: torch.Tensor,
                       forward: Callable[[nn.Module, torch.Tensor], torch.Tensor]) -> list[str]:
    """Names of the layers that produce the model's logits (never pruned unless asked).

    The output layer is the last Conv/Linear layer run whose output width equals the number of
    logits; wrapped models that post-process the logits are handled the same way.
    """
    order: list[tuple[str, torch.Tensor]] = []
    handles = _hook_layers(model, order)
    try:
        with torch.no_grad(), eval_mode(model):
            out = forward(model, example)
    finally:
        for h in handles:
            h.remove()
    return _output_layers(order, out)


def check_fits(model: nn.Module, example: torch.Tensor, num_classes: int,
               forward: Callable[[nn.Module, torch.Tensor], torch.Tensor], call: str,
               trace: dict | None = None,
               count_macs: Callable[[Callable[[], object]], int] | None = None) -> int:
    """Run the model once on ``example``; return its number of logits or raise a DataError.

    With a ``trace`` dict, the same pass also fills ``trace["output_layers"]`` (see
    :func:`find_output_layers`), ``trace["executed"]`` (see :func:`executed_layers`) and
    ``trace["ran"]`` (every module whose forward ran, e.g. attention, which finding heads
    needs): a study of a big model runs it once, not four times. With ``count_macs`` as well
    (:func:`xprune_nb.measure.metrics.macs_of`), the pass runs under the MAC counter and
    ``trace["macs"]`` is the model's MACs per example (the batch's count over its rows), or
    ``None`` when the counter cannot run the model or the count is not the same per row.
    """
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    order: list[tuple[str, torch.Tensor]] = []
    ran: set[str] = set()
    modules = dict(model.named_modules())
    # TorchScript modules take no hooks: with one inside, which modules ran stays unknown
    hookable = {n: m for n, m in modules.items() if not isinstance(m, torch.jit.ScriptModule)}
    handles = _hook_layers(model, order) + [m.register_forward_hook(
        lambda *a, name=name: ran.add(name)) for name, m in hookable.items()
    ] if trace is not None else []
    try:
        with torch.no_grad(), eval_mode(model):
            out = _counted_pass(model, example, forward, count_macs, trace, order, ran)
    except ModelError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure here means the data does not fit
        low = sorted({str(p.dtype).replace("torch.", "") for p in model.parameters()
                      if p.dtype in (torch.float16, torch.bfloat16)})
        if low and isinstance(exc, RuntimeError) and "dtype" in str(exc):
            # the inputs are float32 (the data layer's float type): the model's dtype, not
            # the input shape, is what does not fit
            raise ModelError(
                f"{call}(model=...): the model's parameters are {', '.join(low)}, the inputs "
                "float32; xprune_nb scores, retrains and measures in float32: call "
                "model.float() first (and convert the pruned model back afterwards)."
            ) from exc
        raise DataError(
            f"{call}: the model cannot run on inputs of shape {_shape_of(example)} "
            f"(plus a batch dimension): {type(exc).__name__}: {exc}"
        ) from exc
    finally:
        for h in handles:
            h.remove()
        changed = _restore_buffers(model, buffers)
    if changed:
        # evaluation would then change the model: every metric, snapshot and comparison of
        # the study would depend on how often it ran the model
        raise ModelError(
            f"{call}(model=...): the model's forward changes its buffer(s) {changed} even in "
            "eval mode, so evaluating it changes the model. Keep running state out of "
            "forward() (or only update it when self.training is True)."
        )
    if not isinstance(out, torch.Tensor):
        raise ModelError(
            f"{call}(output_fn=...): the model's logits must be a tensor, got "
            f"{type(out).__name__}; pass an output_fn that returns the (batch, classes) logits."
        )
    if out.dim() != 2 or out.shape[0] != _rows_of(example):
        raise ModelError(
            f"{call}: expected logits of shape (batch, classes), got {tuple(out.shape)}."
        )
    if out.shape[1] < num_classes:
        raise DataError(
            f"{call}: the data has {num_classes} classes but the model outputs only "
            f"{out.shape[1]} logits."
        )
    if trace is not None:
        trace["output_layers"] = _output_layers(order, out)
        trace["executed"] = {name for name, _ in order}
        trace["ran"] = ran if len(hookable) == len(modules) else None
    return int(out.shape[1])


def _counted_pass(model, example, forward, count_macs, trace, order: list, ran: set):
    """The opening pass, under ``count_macs`` when given (``trace["macs"]``, see
    :func:`check_fits`): the MACs of the original then cost no pass of their own."""
    if count_macs is None or trace is None:
        return forward(model, example)
    got: dict = {}
    try:
        macs = count_macs(lambda: got.update(out=forward(model, example)))
    except Exception:  # noqa: BLE001 - the counter's failure or the model's: run it plainly
        order.clear()
        ran.clear()
        trace["macs"] = None
        return forward(model, example)   # a model that does not fit raises here, as before
    rows = _rows_of(example)
    trace["macs"] = macs // rows if rows and macs % rows == 0 else None
    return got["out"]


def _rows_of(x) -> int:
    """Rows of a batch: a tensor's first dimension, or that of a mapping's first tensor."""
    if isinstance(x, Mapping):
        return next(int(v.shape[0]) for v in x.values() if isinstance(v, torch.Tensor))
    return int(x.shape[0])


def _shape_of(x):
    """One input's shape (no batch axis): a tuple, or ``{name: shape}`` for named inputs."""
    if isinstance(x, Mapping):
        return {str(k): tuple(v.shape[1:]) for k, v in x.items() if isinstance(v, torch.Tensor)}
    return tuple(x.shape[1:])


def _restore_buffers(model: nn.Module, saved: dict[str, torch.Tensor]) -> list[str]:
    """Put back every buffer that differs from ``saved``; the names of those that did."""
    changed = []
    for name, buf in model.named_buffers():
        old = saved.get(name)
        if old is None:
            continue
        if buf.shape != old.shape or not torch.equal(buf, old):
            changed.append(name)
            module_name, _, attr = name.rpartition(".")
            owner = model.get_submodule(module_name) if module_name else model
            with torch.no_grad():
                if buf.shape == old.shape:
                    buf.copy_(old)
                else:
                    setattr(owner, attr, old)
    return changed


def executed_layers(model: nn.Module, example: torch.Tensor, forward) -> set[str]:
    """Names of the Conv/Linear layers whose ``forward()`` actually runs (hooks on the others,
    e.g. ``nn.MultiheadAttention.out_proj`` read functionally, never fire)."""
    seen: set[str] = set()
    handles = [m.register_forward_hook(lambda *a, name=name: seen.add(name))
               for name, m in prunable_layers(model).items()]
    try:
        with torch.no_grad(), eval_mode(model):
            forward(model, example)
    finally:
        for h in handles:
            h.remove()
    return seen
