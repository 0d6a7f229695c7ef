"""Measure a model: accuracy and loss, size, MACs, latency and sparsity."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import DataError
from ..data import Split, StudyData, batches
from ..data.batch import batch_size, take
from ..data.groups import group_summary, per_group_accuracy
from ..models.mechanisms.device import model_device, to_device
from ..models.mechanisms.model_tools import eval_mode
from .weights import (
    count_params,
    layer_sparsity,
    param_stats,
    size_bytes,
    size_metrics,
    weight_sparsity,
)

__all__ = ["Metrics", "count_params", "count_macs", "macs_of", "measure_latency", "layer_sparsity",
           "param_stats", "evaluate_model", "size_metrics"]


def count_macs(model: nn.Module, example: torch.Tensor, forward) -> int:
    """Multiply-accumulates of one forward pass on ``example`` (FLOPs / 2, dense).

    Counted with :class:`torch.utils.flop_counter.FlopCounterMode`; masked weights still count
    because dense kernels multiply the zeros too. Attention counts in full: the q/k/v and output
    projections, and the QK^T and AV products, whatever path the attention takes. The fused fast
    paths of ``nn.MultiheadAttention`` / ``nn.TransformerEncoderLayer`` are invisible to the
    counter, so they are switched off while counting (the math is the same), and the CPU kernel
    of ``F.scaled_dot_product_attention``, which the counter has no formula for, gets the
    formula of the other attention kernels.

    Examples
    --------
    >>> from torch import nn
    >>> mha = nn.MultiheadAttention(16, 4, batch_first=True)
    >>> x = torch.zeros(1, 10, 16)
    >>> count_macs(mha, x, lambda m, x: m(x, x, x, need_weights=False)[0])
    13440

    That is 4 projections of 10 tokens (4 * 10 * 16 * 16) plus QK^T and AV (2 * 10 * 10 * 16).
    """
    with eval_mode(model):
        return macs_of(lambda: forward(model, example))


def macs_of(fn) -> int:
    """Multiply-accumulates of whatever ``fn()`` computes, counted as :func:`count_macs`
    counts them (fused attention fast paths off, the CPU attention kernel and LSTM layers
    given their formulas), under ``torch.no_grad()``.

    Examples
    --------
    >>> from torch import nn
    >>> macs_of(lambda: nn.Linear(4, 2)(torch.zeros(3, 4)))
    24
    """
    from torch.utils import flop_counter

    def attention_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
        return flop_counter.sdpa_flop_count(query, key, value)   # QK^T and AV (shapes here)

    def rnn_layer_flops(input, w_ih, w_hh, *args, out_shape=None, **kwargs) -> int:
        # the CPU LSTM kernel (one layer, one direction): every step multiplies the input by
        # w_ih and the hidden state by w_hh (shapes here, not tensors)
        steps = math.prod(input) // input[-1]          # time x batch
        return 2 * steps * (math.prod(w_ih) + math.prod(w_hh))

    custom = {}
    cpu_sdpa = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if cpu_sdpa is not None:
        custom[cpu_sdpa] = attention_flops
    rnn_layer = getattr(torch.ops.aten, "mkldnn_rnn_layer", None)
    if rnn_layer is not None:   # otherwise invisible to the counter: an LSTM would count 0
        custom[rnn_layer] = rnn_layer_flops
    counter = flop_counter.FlopCounterMode(display=False, custom_mapping=custom)
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad(), counter:
            fn()
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    return int(counter.get_total_flops() // 2)


def measure_latency(model: nn.Module, example: torch.Tensor, forward, *, repeats: int = 20,
                    warmup: int = 3, budget_s: float | None = 2.0) -> float:
    """Median wall time of one forward pass on ``example`` in milliseconds (after warm-up).

    At most ``repeats`` timed passes, and no new one once ``budget_s`` seconds have gone by
    (warm-up included; at least one warm-up and three timed passes run): a big model is timed
    in seconds, not minutes. ``budget_s=None`` always runs every repeat. On CUDA the device is
    synchronised around each pass, so the time is that of the kernels, not of their launch.

    Examples
    --------
    >>> from torch import nn
    >>> ms = measure_latency(nn.Linear(4, 2), torch.zeros(1, 4), lambda m, x: m(x), repeats=5)
    >>> ms > 0
    True
    """
    times = []
    first = example if isinstance(example, torch.Tensor) else next(   # named inputs too
        (v for v in example.values() if isinstance(v, torch.Tensor)), torch.zeros(0))
    sync = torch.cuda.synchronize if first.device.type == "cuda" else (lambda: None)
    begin = time.perf_counter()

    def spent() -> bool:
        return budget_s is not None and time.perf_counter() - begin > budget_s

    with torch.inference_mode(), eval_mode(model):
        for _ in range(warmup):
            forward(model, example)
            if spent():
                break
        sync()
        for _ in range(repeats):
            start = time.perf_counter()
            forward(model, example)
            sync()
            times.append(time.perf_counter() - start)
            if len(times) >= 3 and spent():
                break
    return 1000.0 * statistics.median(times)


def _out_of_range(exc: IndexError, x, name: str) -> DataError:
    """The package's error for an IndexError raised by the model on a batch of a split: with
    token ids it is almost always an id at or past the vocabulary size (an embedding lookup)."""
    ids = x.get("input_ids") if isinstance(x, dict) or hasattr(x, "keys") else x
    hint = ""
    if torch.is_tensor(ids) and not ids.is_floating_point() and ids.numel():
        hint = (f" Its largest token id is {int(ids.max())} (smallest {int(ids.min())}); "
                "every id must be below the model's vocabulary size.")
    return DataError(f"Study({name}=...): the model raised IndexError ({exc}) on a batch of "
                     f"the {name} split.{hint}")


def evaluate_split(model: nn.Module, split: Split, forward, batch_size: int = 512,
                   return_predictions: bool = False, progress=None, name: str = "test"):
    """(accuracy, mean cross-entropy loss) of ``model`` on ``split``, in eval mode; with
    ``return_predictions`` also the predicted class and the label of every example. A user's
    loader or dataset is measured on its bounded sample (``eval_samples``), or read batch by
    batch when every example is asked for. ``progress()`` is called after each batch."""
    correct, total_loss, preds, labels, n = 0, 0.0, [], [], 0
    with torch.no_grad(), eval_mode(model):
        for x, y in batches(split, batch_size):
            try:
                logits = forward(model, x)
            except IndexError as exc:   # e.g. a token id past the vocabulary in one split only
                raise _out_of_range(exc, x, name) from exc
            total_loss += float(F.cross_entropy(logits, y, reduction="sum"))
            pred = logits.argmax(1)
            correct += int((pred == y).sum())
            preds.append(pred)
            labels.append(y)
            n += len(y)
            if progress is not None:
                progress()
    n = max(n, 1)
    if return_predictions:
        return correct / n, total_loss / n, torch.cat(preds), torch.cat(labels)
    return correct / n, total_loss / n

@dataclass
class Metrics:
    """Measurements of one model. Readable as attributes or as ``m["accuracy"]``.

    ``accuracy``/``loss`` are on the test split, ``val_accuracy``/``val_loss`` on validation;
    ``latency_ms`` maps batch size to the median forward time in milliseconds (empty when not
    measured); ``sparsity`` is the fraction of zero weights in Conv/Linear/... weight tensors.
    With sensitive groups (``Study(groups=...)``), ``per_group_accuracy`` maps each group name
    to its test accuracy (Fairlearn's ``MetricFrame.by_group``), ``val_per_group_accuracy`` the
    same on validation, and :meth:`as_dict` adds ``worst_group_accuracy`` (``group_min``) and
    ``group_accuracy_gap`` (best minus worst, ``difference(method="between_groups")``), and their
    ``val_`` twins; all are empty / absent without groups.
    """

    accuracy: float
    loss: float
    val_accuracy: float
    val_loss: float
    params: int
    nonzero_params: int
    macs: int
    size_bytes: int
    sparsity: float
    latency_ms: dict[int, float] = field(default_factory=dict)
    per_class_accuracy: list[float] = field(default_factory=list)
    per_layer: dict[str, dict] = field(default_factory=dict)
    #: input-adaptive (dynamic) models: ``macs_longest`` (the longest path), ``exit_share``
    #: (early exits), ``paths``, and batch-1 latency ``latency_b1_mean_ms`` /
    #: ``latency_b1_p95_ms`` / ``latency_b1_max_ms``; ``macs`` is then the mean per example
    dynamic: dict = field(default_factory=dict)
    per_group_accuracy: dict[str, float] = field(default_factory=dict)
    val_per_group_accuracy: dict[str, float] = field(default_factory=dict)

    @property
    def worst_group_accuracy(self) -> float | None:
        """Test accuracy of the worst group (``MetricFrame.group_min()``); None without groups."""
        return group_summary(self.per_group_accuracy).get("worst_group_accuracy")

    @property
    def group_accuracy_gap(self) -> float | None:
        """Best minus worst group's test accuracy (``difference()``); None without groups."""
        return group_summary(self.per_group_accuracy).get("group_accuracy_gap")

    def __getitem__(self, key: str):
        if key in ("latency_b1_ms", "latency_b64_ms"):
            return self.latency_ms.get(int(key[len("latency_b"):-3]))
        try:
            return getattr(self, key)
        except AttributeError:
            raise KeyError(key) from None

    def keys(self) -> list[str]:
        return [k for k in asdict(self) if k not in (
            "per_layer", "per_class_accuracy", "per_group_accuracy", "val_per_group_accuracy")]

    def as_dict(self) -> dict:
        """Plain scalars (JSON-friendly)."""
        d = {k: getattr(self, k) for k in self.keys() if k not in ("latency_ms", "dynamic")}
        for bs, ms in self.latency_ms.items():
            d[f"latency_b{bs}_ms"] = ms
        d.update({k: v for k, v in self.dynamic.items() if isinstance(v, (int, float))})
        d.update(group_summary(self.per_group_accuracy))
        d.update({f"val_{k}": v for k, v in group_summary(self.val_per_group_accuracy).items()})
        return d

    def to_frame(self):
        """One row per metric."""
        import pandas as pd

        return pd.DataFrame({"value": self.as_dict()})

    def layers_frame(self):
        """One row per weight tensor: shape, params, non-zero, sparsity."""
        import pandas as pd

        return pd.DataFrame.from_dict(self.per_layer, orient="index")

    def _repr_html_(self) -> str:
        return "<b>Metrics</b>" + self.to_frame().to_html(float_format=lambda x: f"{x:.4g}")

    def __repr__(self) -> str:
        lat = ", ".join(f"b{k}={v:.3g}ms" for k, v in self.latency_ms.items())
        worst = group_summary(self.per_group_accuracy)
        groups = (f", worst group={worst['worst_group_accuracy']:.4f}, gap="
                  f"{worst['group_accuracy_gap']:.4f}") if worst else ""
        return (f"Metrics(accuracy={self.accuracy:.4f}, loss={self.loss:.4f}, "
                f"params={self.params}, nonzero={self.nonzero_params}, macs={self.macs}, "
                f"sparsity={self.sparsity:.3f}" + groups
                + (f", latency: {lat}" if lat else "") + ")")


def evaluate_model(model: nn.Module, data: StudyData, forward, *, latency: bool = False,
                   batch_sizes: tuple[int, ...] = (1, 64), repeats: int = 20,
                   macs: int | None = None, budget_s: float | None = 2.0,
                   progress=None, adaptive: Callable | None = None) -> Metrics:
    """Measure ``model`` on the study's data (test and validation splits).

    Latency is timed only with ``latency=True`` (each batch size within ``budget_s`` seconds,
    see :func:`measure_latency`); ``macs``, when known (a study counts them once per
    structure), is not counted again. ``progress(done, total)`` follows the progress protocol
    (one unit per evaluation batch and per latency batch size).
    """
    # the same examples given as validation and test (common with a user's own data) are
    # evaluated once; a user's loader or dataset is compared by what it is, never read for it
    val, test = data.val, data.test
    same = val is test or (
        isinstance(val, Split) and isinstance(test, Split) and val.X is test.X and val.y is test.y
    ) or (getattr(val, "source", 0) is getattr(test, "source", 1)
          and getattr(val, "limit", 0) == getattr(test, "limit", 1))
    n_batches = [math.ceil(len(s) / 512) for s in (data.test, data.val)]
    if same:
        n_batches[1] = 0
    units = sum(n_batches) + (len(batch_sizes) if latency else 0) + 1
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, units)

    acc, loss, preds, labels = evaluate_split(model, data.test, forward,
                                              return_predictions=True, progress=tick)
    names = getattr(data, "group_names", None)
    by_group = per_group_accuracy(preds, labels, getattr(data.test, "groups", None), names)
    if same:
        val_acc, val_loss, val_by_group = acc, loss, by_group
    else:
        val_acc, val_loss, val_preds, val_labels = evaluate_split(
            model, data.val, forward, return_predictions=True, progress=tick, name="val")
        val_by_group = per_group_accuracy(val_preds, val_labels,
                                          getattr(data.val, "groups", None), names)
    per_class = []
    for c in range(data.num_classes):
        sel = labels == c
        per_class.append(float((preds[sel] == c).float().mean()) if sel.any() else float("nan"))
    total, nonzero, layers = param_stats(model)   # one sweep over the weights, not two
    example = data.example(1)
    lat = {}
    if latency:
        for bs in batch_sizes:
            x = data.example(bs)
            if batch_size(x) < bs:   # repeat the rows up to the batch size (named inputs too)
                x = take(x, [i % batch_size(x) for i in range(bs)])
            # the input waits on the model's device, as in deployment: the copy isn't timed
            x = to_device(x, model_device(model))
            lat[bs] = measure_latency(model, x, forward, repeats=repeats, budget_s=budget_s)
            tick()
    dynamic = {}
    if macs is None:
        macs = count_macs(model, example, forward)
    if adaptive is not None:
        # input-adaptive: the MACs depend on the input; report the mean over the test split,
        # the longest path, the early exits and batch-1 latency (mean and worst case)
        found = adaptive(model, data.test.X, data.test.y, forward, latency=latency,
                                samples=min(64, len(data.test)))
        macs = int(round(found["macs_mean"]))
        dynamic = {k: v for k, v in found.items() if k in (
            "macs_longest", "exit_share", "paths", "latency_b1_mean_ms", "latency_b1_p95_ms",
            "latency_b1_max_ms")}
    tick()
    return Metrics(
        accuracy=acc, loss=loss, val_accuracy=val_acc, val_loss=val_loss,
        params=total, nonzero_params=nonzero, macs=macs,
        size_bytes=size_bytes(model), sparsity=weight_sparsity(layers), latency_ms=lat,
        per_class_accuracy=per_class, per_layer=layers, dynamic=dynamic,
        per_group_accuracy=by_group, val_per_group_accuracy=val_by_group,
    )
