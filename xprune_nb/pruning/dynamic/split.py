"""Cut a classifier in two at a named module, and slice the second part down to kept channels.

Dynamic pruning runs a model as *trunk* (everything up to and including the module ``at``), a
small branch classifier on the trunk's output, and one of several *sliced tails*: copies of the
rest of the network whose convolutions and linear layers really have fewer channels.

The cut is made with :mod:`torch.fx`: the model is traced with ``at`` kept as one opaque call,
the graph is split right after that call, and every value computed before the cut and used after
it (the ``at`` output first, then e.g. a residual block's input feeding its shortcut) becomes an
output of the trunk and an input of the tail. Tails are sliced with torch-pruning's dependency
graph, so coupled channels (residual additions, concatenations, BatchNorm) stay consistent.

Examples
--------
>>> import torch
>>> from xprune_nb.models import DigitsCNN
>>> trunk, tail = split_at(DigitsCNN(), "pool1", "Study.dynamic")
>>> x = torch.zeros(2, 1, 8, 8)
>>> tail(*trunk(x)).shape
torch.Size([2, 10])
"""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Sequence

import torch
from torch import fx, nn

from ...core.errors import ConfigError, ModelError
from ...models.mechanisms.model_tools import PRUNABLE_TYPES, eval_mode, logits_of

__all__ = ["split_at", "branch_points", "tail_groups", "slice_tail", "run_tail"]


class _Tracer(fx.Tracer):
    """The default tracer, except that the module named ``leaf`` is one opaque call."""

    def __init__(self, leaf: str | None) -> None:
        super().__init__()
        self.leaf = leaf

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return qualname == self.leaf or super().is_leaf_module(m, qualname)


def _trace(model: nn.Module, leaf: str | None, call: str) -> fx.Graph:
    try:
        return _Tracer(leaf).trace(model)
    except Exception as exc:  # noqa: BLE001 - any tracing failure means: cannot split here
        where = f" at {leaf!r}" if leaf else ""
        raise ModelError(
            f"{call}(at=...): the model cannot be split{where} because torch.fx cannot trace "
            f"its forward ({type(exc).__name__}: {' '.join(str(exc).split())[:200]}). Dynamic "
            "pruning needs a forward without data-dependent Python control flow; wrap the "
            "untraceable part in its own module and pass a module before it as `at`."
        ) from exc


def branch_points(model: nn.Module, call: str = "Study.dynamic") -> list[str]:
    """Module names that can be passed as ``at``: modules called exactly once in ``forward``,
    in the order they run (containers included, e.g. a whole residual block).

    Examples
    --------
    >>> from xprune_nb.models import DigitsResNet
    >>> branch_points(DigitsResNet())[:3]
    ['stem', 'stem.0', 'stem.1']
    """
    names = [n for n, _ in model.named_modules() if n]
    # Trace once with the default leaves; a container counts as a branch point when every leaf
    # call inside it happens exactly once (so the container itself runs once).
    graph = _trace(model, None, call)
    calls = [n.target for n in graph.nodes if n.op == "call_module"]
    first: dict[str, int] = {}
    counts: dict[str, list[int]] = {}
    for i, target in enumerate(calls):
        parts = target.split(".")
        for j in range(1, len(parts) + 1):
            prefix = ".".join(parts[:j])
            first.setdefault(prefix, i)
            counts.setdefault(prefix, []).append(calls.count(target))
    order = {n: i for i, n in enumerate(names)}
    points = [n for n in names if n in first and max(counts[n]) == 1]
    return sorted(points, key=lambda n: (first[n], order[n]))


def split_at(model: nn.Module, at: str, call: str = "Study.dynamic"
             ) -> tuple[fx.GraphModule, fx.GraphModule]:
    """(trunk, tail) of ``model`` cut right after the module ``at``.

    ``trunk(x)`` returns a tuple of the values that cross the cut, the output of ``at`` first;
    ``tail(*values)`` returns what ``model(x)`` returns. Both share ``model``'s modules.

    Raises
    ------
    ConfigError
        ``at`` is not the name of a module of ``model``.
    ModelError
        ``model`` cannot be traced, ``at`` is not called exactly once, its output is not used
        later, or a non-tensor value (e.g. a size) crosses the cut.
    """
    modules = dict(model.named_modules())
    if not isinstance(at, str) or at not in modules or not at:
        raise ConfigError.unknown_name(call, "at", branch_points(model, call), at)
    graph = _trace(model, at, call)
    nodes = list(graph.nodes)
    hits = [i for i, n in enumerate(nodes) if n.op == "call_module" and n.target == at]
    if len(hits) != 1:
        raise ModelError(
            f"{call}(at=...): module {at!r} is called {len(hits)} times in forward; the branch "
            "point must be a module that runs exactly once (see branch_points(model))."
        )
    cut = hits[0]
    head, rest = nodes[: cut + 1], nodes[cut + 1:]
    rest_set = set(rest)
    crossing = [n for n in head if n.op != "get_attr" and any(u in rest_set for u in n.users)]
    at_node = nodes[cut]
    if at_node not in crossing:
        raise ConfigError.bad_value(call, "at", "a module whose output the rest of the model "
                                    "uses", at)
    crossing.remove(at_node)
    crossing.insert(0, at_node)

    trunk_graph, env = fx.Graph(), {}
    for n in head:
        env[n] = trunk_graph.node_copy(n, lambda a: env[a])
    trunk_graph.output(tuple(env[c] for c in crossing))

    tail_graph, tenv = fx.Graph(), {}
    for i, c in enumerate(crossing):
        tenv[c] = tail_graph.placeholder(f"cut{i}")

    def arg(a: fx.Node) -> fx.Node:
        if a not in tenv and a.op == "get_attr":  # parameters used on both sides: no crossing
            tenv[a] = tail_graph.node_copy(a)
        return tenv[a]

    for n in rest:
        tenv[n] = tail_graph.node_copy(n, arg)
    trunk, tail = fx.GraphModule(model, trunk_graph), fx.GraphModule(model, tail_graph)
    trunk.eval()
    tail.eval()
    return trunk, tail


def check_crossing(values: Sequence, batch: int, at: str, call: str) -> None:
    """Every value crossing the cut must be a tensor with the batch as its first dimension,
    since examples are regrouped by path along it."""
    for v in values:
        if not isinstance(v, torch.Tensor) or v.dim() == 0 or v.shape[0] != batch:
            what = type(v).__name__ if not isinstance(v, torch.Tensor) else tuple(v.shape)
            raise ModelError(
                f"{call}(at=...): at {at!r} the forward carries {what} across the cut, not a "
                "batch of tensors; choose a branch point where only feature maps cross."
            )


def run_tail(tail: nn.Module, values: Sequence[torch.Tensor]) -> torch.Tensor:
    """Logits of a tail on the crossing values."""
    return logits_of(tail(*values))


def _tail_graph(tail: nn.Module, values: tuple[torch.Tensor, ...]):
    import torch_pruning as tp

    # detached: torch-pruning follows autograd history, which must stop at the cut
    values = tuple(v.detach() for v in values)
    with eval_mode(tail):
        return tp.DependencyGraph().build_dependency(
            tail, example_inputs=values, forward_fn=lambda m, xs: m(*xs),
            output_transform=logits_of, verbose=False)


def _runs(tail: nn.Module, values: tuple[torch.Tensor, ...], shape: torch.Size) -> bool:
    # a GraphModule prints the failing line to stderr before raising: expected in a trial
    try:
        with torch.no_grad(), eval_mode(tail), contextlib.redirect_stderr(io.StringIO()):
            return run_tail(tail, values).shape == shape
    except Exception:  # noqa: BLE001 - a failure means the slice broke the tail
        return False


def _try_slice(tail: nn.Module, values, plan: dict[str, list[int]], shape) -> bool:
    from ..groups import apply_channel_plan

    trial = copy.deepcopy(tail)
    try:
        apply_channel_plan(trial, values, plan, graph=_tail_graph(trial, values))
    except Exception:  # noqa: BLE001 - torch-pruning refuses: not sliceable
        return False
    return _runs(trial, values, shape)


def tail_groups(tail: nn.Module, values: tuple[torch.Tensor, ...], ignored: Sequence[str]):
    """Channel groups of ``tail`` that can be sliced (each losing channels leaves a tail that
    runs): groups coupled to a crossing value (e.g. a residual add with the trunk's output)
    cannot shrink, since the trunk keeps all its channels."""
    from ..groups import channel_groups

    with torch.no_grad():
        shape = run_tail(tail, values).shape
    graph = _tail_graph(tail, values)
    candidates = [g for g in channel_groups(tail, graph, ignored) if g.size >= 2
                  and isinstance(dict(tail.named_modules())[g.key], PRUNABLE_TYPES)]
    if candidates and _try_slice(tail, values, {g.key: [0] for g in candidates}, shape):
        return candidates
    return [g for g in candidates if _try_slice(tail, values, {g.key: [0]}, shape)]


def slice_tail(tail: nn.Module, values: tuple[torch.Tensor, ...],
               kept: dict[str, Sequence[int]], sizes: dict[str, int]) -> nn.Module:
    """A copy of ``tail`` in which group ``key`` keeps only channels ``kept[key]`` (indices of
    the dense tail); groups not in ``kept`` stay whole."""
    from ..groups import apply_channel_plan

    sliced = copy.deepcopy(tail)
    plan = {}
    for key, idx in kept.items():
        keep = set(int(i) for i in idx)
        plan[key] = [i for i in range(sizes[key]) if i not in keep]
    if any(plan.values()):
        apply_channel_plan(sliced, values, plan, graph=_tail_graph(sliced, values))
    return sliced.eval()
