"""Honest measurements and explanations of a :class:`~xprune_nb.pruning.dynamic.net.DynamicNet`.

MACs are counted per part with :class:`torch.utils.flop_counter.FlopCounterMode` (MACs = FLOPs
/ 2): trunk + branch once, each sliced path once; an example costs trunk + branch, plus its
path unless it exits early. Latency is measured at batch 1 on each example in turn, since a
dynamic model's cost depends on the input: the mean, median, 95th percentile and maximum over
examples are reported. Each example's time is the *minimum* of ``repeats`` runs: on a shared
machine, load only ever adds time, so the minimum estimates the example's own cost and the
spread across examples shows what depends on the input (exit or not, which path) rather than
what the machine's neighbours did. Comparisons with the dense model time both in alternation,
so load changes hit both alike. On a heavily shared machine even that favours the shorter
model (a longer run is more likely to be preempted in every try), so ``clock="cpu"`` measures
the thread's CPU time instead (``time.thread_time``; with one torch thread, the compute
itself), which preemption does not inflate.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from ...data.batch import batch_size, take
from ...models.mechanisms.model_tools import call_model, eval_mode, logits_of
from .net import DynamicNet
from .split import run_tail

__all__ = ["path_macs", "dynamic_metrics", "dense_metrics", "compare_dense", "path_of",
           "path_channels"]


def _params(model: nn.Module) -> int:
    """Parameters stored (a dynamic net stores every sliced path, so it can hold more than the
    dense model it came from)."""
    return sum(p.numel() for p in model.parameters())


def _macs(fn: Callable[[], object]) -> int:
    # counted as the study counts a static model's MACs (attention fast paths off, the CPU
    # attention kernel counted), so dense and dynamic figures compare
    from ...measure.metrics import macs_of

    return macs_of(fn)


def path_macs(net: DynamicNet, example: torch.Tensor) -> dict:
    """MACs of one example through each part: ``{"trunk": trunk + branch, "paths": [...]}``.

    Examples
    --------
    >>> # path_macs(net, X[:1]) -> {'trunk': 30720, 'paths': [41216, 40960]}
    """
    x = take(example, slice(0, 1))
    with torch.no_grad(), eval_mode(net):
        trunk = _macs(lambda: net.route(x))   # trunk, branch and routing
        values = net.trunk(x)
        paths = [_macs(lambda p=p: run_tail(p, values)) for p in net.paths]
    return {"trunk": trunk, "paths": paths}


_CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}


def _latencies(models: list[Callable], X: torch.Tensor, samples: int, repeats: int,
               clock: str = "wall") -> list[list[float]]:
    """Per model, per example: the fastest of ``repeats`` batch-1 runs (ms), the models timed
    in alternation."""
    if clock not in _CLOCKS:
        from ...core.errors import ConfigError

        raise ConfigError.unknown_name("dynamic_metrics", "clock", _CLOCKS, clock)
    now = _CLOCKS[clock]
    times: list[list[float]] = [[] for _ in models]
    xs = [take(X, slice(i, i + 1)) for i in range(min(samples, batch_size(X)))]
    with torch.inference_mode():
        for f in models:  # warm-up
            for x in xs[:3]:
                f(x)
        for x in xs:
            runs: list[list[float]] = [[] for _ in models]
            for _ in range(repeats):
                for j, f in enumerate(models):
                    start = now()
                    f(x)
                    runs[j].append(1000.0 * (now() - start))
            for j in range(len(models)):
                times[j].append(min(runs[j]))
    return times


def _summary(ms: list[float]) -> dict:
    t = torch.tensor(ms, dtype=torch.float64)
    return {"latency_b1_mean_ms": float(t.mean()), "latency_b1_p50_ms": float(t.median()),
            "latency_b1_p95_ms": float(torch.quantile(t, 0.95)),
            "latency_b1_max_ms": float(t.max())}


def _batch_throughput(f: Callable, X: torch.Tensor, batch: int, repeats: int,
                      clock: str = "wall") -> float:
    now = _CLOCKS[clock]
    x = take(X, slice(0, batch))
    if batch_size(x) < batch:   # repeat the rows up to a full batch
        x = take(x, [i % batch_size(x) for i in range(batch)])
    with torch.inference_mode():
        f(x)
        times = []
        for _ in range(repeats):
            start = now()
            f(x)
            times.append(now() - start)
    return batch / statistics.median(times)


def _route_all(net: DynamicNet, X: torch.Tensor, batch: int = 256):
    preds, exits, paths = [], [], []
    with torch.no_grad(), eval_mode(net):
        for i in range(0, batch_size(X), batch):
            x = take(X, slice(i, i + batch))
            _, _, exited, path = net.route(x)
            preds.append(net(x).argmax(1))
            exits.append(exited)
            paths.append(path)
    return torch.cat(preds), torch.cat(exits), torch.cat(paths)


def dynamic_metrics(net: DynamicNet, X: torch.Tensor, y: torch.Tensor,
                    forward: Callable | None = None, *, latency: bool = True,
                    samples: int = 100, repeats: int = 3, clock: str = "wall") -> dict:
    """Accuracy, MACs (mean per example, longest path), early exits and batch-1 latency.

    Parameters
    ----------
    net : DynamicNet
    X, y : torch.Tensor
        Evaluation data (e.g. the test split).
    forward : callable, optional
        ``forward(model, x) -> logits`` (default: ``net(x)``).
    latency : bool
        Measure batch-1 latency on the first ``samples`` examples of ``X`` (each the fastest
        of ``repeats`` runs).
    clock : {"wall", "cpu"}
        Wall time, or the thread's CPU time (immune to preemption on a shared machine).

    Returns
    -------
    dict
        ``accuracy``, ``macs_mean``, ``macs_longest``, ``macs_trunk``, ``exit_share``,
        ``path_share`` (share of examples per path), ``paths``, ``params`` (stored: trunk,
        branch and every path), and when measured
        ``latency_b1_mean_ms``, ``latency_b1_p50_ms``, ``latency_b1_p95_ms``,
        ``latency_b1_max_ms``.

    Examples
    --------
    >>> # dynamic_metrics(net, data.test.X, data.test.y)["macs_mean"]
    """
    forward = forward or (lambda m, x: logits_of(call_model(m, x)))
    preds, exited, path = _route_all(net, X)
    macs = path_macs(net, take(X, slice(0, 1)))
    per_path = torch.tensor(macs["paths"], dtype=torch.float64)
    taken = path[~exited]
    mean = macs["trunk"] + float(per_path[taken].sum()) / max(batch_size(X), 1)
    share = [float((taken == p).sum()) / max(batch_size(X), 1) for p in range(net.num_paths)]
    out = {"accuracy": float((preds == y).float().mean()), "macs_mean": mean,
           "macs_longest": macs["trunk"] + int(per_path.max()), "macs_trunk": macs["trunk"],
           "exit_share": float(exited.float().mean()), "path_share": share,
           "paths": net.num_paths, "params": _params(net)}
    if latency:
        with eval_mode(net):
            out.update(_summary(_latencies([lambda x: forward(net, x)], X, samples,
                                           repeats, clock)[0]))
    return out


def dense_metrics(model: nn.Module, X: torch.Tensor, y: torch.Tensor,
                  forward: Callable | None = None, *, latency: bool = True,
                  samples: int = 100, repeats: int = 3, clock: str = "wall") -> dict:
    """The same measurements for a static model (no exits, one path)."""
    forward = forward or (lambda m, x: logits_of(call_model(m, x)))
    with torch.no_grad(), eval_mode(model):
        acc = float(torch.cat([forward(model, take(X, slice(i, i + 256))).argmax(1)
                               for i in range(0, batch_size(X), 256)]).eq(y).float().mean())
        macs = _macs(lambda: forward(model, take(X, slice(0, 1))))
    out = {"accuracy": acc, "macs_mean": float(macs), "macs_longest": macs, "macs_trunk": 0,
           "exit_share": 0.0, "path_share": [1.0], "paths": 1, "params": _params(model)}
    if latency:
        with eval_mode(model):
            out.update(_summary(_latencies([lambda x: forward(model, x)], X, samples,
                                           repeats, clock)[0]))
    return out


def compare_dense(net: DynamicNet, model: nn.Module, X: torch.Tensor, y: torch.Tensor,
                  forward: Callable | None = None, *, samples: int = 100, repeats: int = 3,
                  batch: int = 64, clock: str = "wall"):
    """One row each for the dense ``model`` and ``net``: accuracy, MACs, early exits, batch-1
    latency (timed in alternation, example by example, on ``clock``) and batch-``batch``
    throughput (examples per second, median of 10 runs).

    Returns a pandas DataFrame indexed by ``"dense"`` and ``"dynamic"``, with ``*_ratio``
    columns (dynamic / dense) for MACs and latency.
    """
    import pandas as pd

    forward = forward or (lambda m, x: logits_of(call_model(m, x)))
    rows = {"dense": dense_metrics(model, X, y, forward, latency=False),
            "dynamic": dynamic_metrics(net, X, y, forward, latency=False)}
    with eval_mode(model), eval_mode(net):
        fs = [lambda x: forward(model, x), lambda x: forward(net, x)]
        for name, ms in zip(rows, _latencies(fs, X, samples, repeats, clock), strict=True):
            rows[name].update(_summary(ms))
        for name, f in zip(rows, fs, strict=True):
            rows[name][f"throughput_b{batch}"] = _batch_throughput(f, X, batch, 10, clock)
    frame = pd.DataFrame.from_dict(rows, orient="index").drop(columns=["path_share"])
    for col in ("macs_mean", "macs_longest", "latency_b1_mean_ms", "latency_b1_p50_ms",
                "latency_b1_p95_ms"):
        frame[col + "_ratio"] = frame[col] / frame.loc["dense", col]
    return frame


def path_of(net: DynamicNet, x: torch.Tensor):
    """Which way each input went: a pandas DataFrame, one row per input, with ``exited``,
    ``branch_class`` and ``branch_confidence`` (top-1 of the branch), ``subset`` (its top-k
    classes), ``path`` (-1 when it exited), ``path_classes`` (the classes the path's channels
    were chosen for) and ``prediction``.

    Examples
    --------
    >>> # path_of(net, data.test.X[:3])
    """
    import pandas as pd

    with torch.no_grad(), eval_mode(net):
        _, logits, exited, path = net.route(x)
        probs = torch.softmax(logits.float(), 1)
        subset = logits.topk(net.k, 1).indices
        pred = net(x).argmax(1)
    rows = []
    for i in range(batch_size(x)):
        p = -1 if bool(exited[i]) else int(path[i])
        rows.append({"exited": bool(exited[i]), "branch_class": int(probs[i].argmax()),
                     "branch_confidence": float(probs[i].max()),
                     "subset": tuple(sorted(int(c) for c in subset[i])), "path": p,
                     "path_classes": tuple(net.plan["paths"][p]["classes"]) if p >= 0 else (),
                     "prediction": int(pred[i])})
    return pd.DataFrame(rows)


def path_channels(net: DynamicNet, path: int):
    """Why path ``path`` keeps the channels it keeps: one row per (group, channel) after the
    branch point, with ``kept``, ``score`` (the class-wise relevance weighted by the path's
    class weights: what the choice ranked by) and one ``class_<c>`` column per class of the
    path (that class's normalised relevance of the channel).

    Examples
    --------
    >>> # path_channels(net, 0).query("kept").groupby("group").size()
    """
    import pandas as pd

    plan = net.plan
    if not isinstance(path, int) or not 0 <= path < net.num_paths:
        from ...core.errors import ConfigError

        raise ConfigError.bad_value("path_channels", "path",
                                    f"a path index in [0, {net.num_paths - 1}]", path)
    entry = plan["paths"][path]
    w = torch.tensor(entry["weights"], dtype=torch.float64)
    rows = []
    for group, rel in plan["relevance"].items():
        r = torch.tensor(rel, dtype=torch.float64)
        score = w @ r
        kept = set(entry["kept"][group])
        for ch in range(r.shape[1]):
            row = {"group": group, "channel": ch, "kept": ch in kept, "score": float(score[ch])}
            row.update({f"class_{c}": float(r[c, ch]) for c in entry["classes"]})
            rows.append(row)
    return pd.DataFrame(rows)
