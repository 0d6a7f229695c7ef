"""Cut a model at a named module with forward hooks: dynamic pruning for token models (inputs as
a dict / ``BatchEncoding``) and for any model ``torch.fx`` cannot trace (Hugging Face
``transformers`` models, whose forwards take ``**kwargs``).

The *trunk* runs the model itself and stops right after the branch point ``at`` (a hook raises
once ``at`` has returned), keeping what the rest of the model will need: the output of ``at``,
the outputs of the modules that finished before it (e.g. the embeddings and the earlier layers
of an encoder: the *stand-ins*), and the inputs. A *path* is a copy of the whole model whose
later channel groups are sliced (torch-pruning, as for static pruning) and whose stand-in
modules are replaced by :class:`Cached` modules that return what the trunk computed, so running
the path's forward computes only the layers after the cut, plus the forward's cheap glue code
(e.g. the attention mask's expansion), recomputed from the inputs. Padding stays masked in the
path because the mask travels with the inputs.

Examples
--------
>>> import torch
>>> from xprune_nb.models import DigitsResNet
>>> cut = HookCut(DigitsResNet().eval(), "layer1", torch.zeros(2, 1, 8, 8), call="doc")
>>> values = cut.trunk(torch.zeros(3, 1, 8, 8))
>>> cut.path({}, {})(*values).shape
torch.Size([3, 10])
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn
from torch.utils import _pytree as pytree

from ...core.errors import ConfigError, ModelError
from ...data.batch import batch_size, is_mapping, take
from ...models.mechanisms.model_tools import call_model, eval_mode

__all__ = ["HookCut", "HookTrunk", "HookPath", "Cached", "hook_points", "auto_hook_point"]


class _Cut(Exception):
    """Raised by the hook on the branch point: the trunk ends here."""


class Cached(nn.Module):
    """Stands in for a module the trunk already ran: returns the trunk's value for it.

    Attributes it does not have are read from the trunk's own module (``original``, not a
    submodule: no weights are copied): a forward may look at them, e.g. a Hugging Face ViT
    reads its patch embedding's weight dtype."""

    def __init__(self, original: nn.Module | None = None) -> None:
        super().__init__()
        self.value = None
        self.__dict__["_original"] = original

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            original = self.__dict__.get("_original")
            if original is None:
                raise
            return getattr(original, name)

    def forward(self, *args, **kwargs):
        return self.value


class _Never(nn.Module):
    """Replaces the trunk's copy of a module after the cut: the trunk never reaches it."""

    def forward(self, *args, **kwargs):
        raise ModelError("dynamic pruning: a layer after the branch point ran in the trunk.")


def _record(model: nn.Module, example) -> tuple[dict, dict, dict[str, float]]:
    """Per module: call starts, call ends (a shared event counter) and FLOPs done by its end."""
    from torch.utils.flop_counter import FlopCounterMode

    starts: dict[str, list[int]] = {}
    ends: dict[str, list[int]] = {}
    done: dict[str, float] = {}
    tick = [0]
    counter = FlopCounterMode(display=False)
    handles = []

    def pre(name):
        def hook(_m, _args):
            starts.setdefault(name, []).append(tick[0])
            tick[0] += 1
        return hook

    def post(name):
        def hook(_m, _args, _out):
            ends.setdefault(name, []).append(tick[0])
            tick[0] += 1
            done[name] = float(counter.get_total_flops())
        return hook

    for name, m in model.named_modules():
        if name:
            handles += [m.register_forward_pre_hook(pre(name)),
                        m.register_forward_hook(post(name))]
    try:
        with torch.no_grad(), eval_mode(model), counter:
            call_model(model, example)
    finally:
        for h in handles:
            h.remove()
    total = max(float(counter.get_total_flops()), 1.0)
    return starts, ends, {k: v / total for k, v in done.items()}


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [""] + [".".join(parts[:i]) for i in range(1, len(parts))]


def _plan_cut(model: nn.Module, at: str, starts: dict, ends: dict, call: str
              ) -> tuple[list[str], list[str]]:
    """(stand-ins, tail): the modules the trunk finished (children of ``at``'s ancestors that
    ended by ``at``'s end, ``at`` first) and those after the cut."""
    if len(starts.get(at, [])) != 1:
        raise ModelError(f"{call}(at=...): module {at!r} runs {len(starts.get(at, []))} times "
                         "in forward; the branch point must run exactly once (see "
                         "hook_points(model, example)).")
    cut = ends[at][0]
    stubs, tail = [at], []
    modules = dict(model.named_modules())
    for parent in _ancestors(at):
        for child, _ in modules[parent].named_children():
            name = f"{parent}.{child}" if parent else child
            if name == at or at.startswith(name + "."):
                continue
            if name in starts and max(ends[name]) <= cut:
                stubs.append(name)
            elif name in starts:
                tail.append(name)
    for s in stubs:
        later = [n for n, st in starts.items() if (n == s or n.startswith(s + "."))
                 and max(st) > cut]
        if later:
            raise ModelError(f"{call}(at=...): {later[0]!r} runs both before and after "
                             f"{at!r}, so the model cannot be cut there; choose another "
                             "branch point (hook_points(model, example)).")
    return stubs, tail


def hook_points(model: nn.Module, example, call: str = "Study.dynamic") -> list[str]:
    """Modules that can be the branch point of a hook cut: run exactly once, in run order.

    Examples
    --------
    >>> import torch
    >>> from xprune_nb.models import DigitsCNN
    >>> hook_points(DigitsCNN(), torch.zeros(1, 1, 8, 8))[:3]
    ['conv1', 'bn1', 'relu1']
    """
    starts, ends, _ = _record(model, example)
    return sorted((n for n, s in starts.items() if len(s) == 1), key=lambda n: ends[n][0])


def auto_hook_point(model: nn.Module, example, fraction: float,
                    call: str = "Study.dynamic") -> list[str]:
    """Candidate branch points, best first: the blocks of ``nn.ModuleList`` / ``nn.Sequential``
    stages (an encoder's layers) and top-level modules, by how close the share of the dense
    FLOPs done by their end is to ``fraction``."""
    starts, ends, done = _record(model, example)
    modules = dict(model.named_modules())
    once = [n for n, s in starts.items() if len(s) == 1]
    stage = {n for n, m in modules.items() if isinstance(m, (nn.ModuleList, nn.Sequential))}
    blocks = [n for n in once if "." not in n or n.rsplit(".", 1)[0] in stage]
    inside = [n for n in blocks if 0 < done.get(n, 0) < 1]
    return sorted(inside, key=lambda n: (abs(done[n] - fraction), -ends[n][0]))


def _rows_flags(leaves_a: list, leaves_b: list, n_a: int, n_b: int) -> list[bool]:
    return [isinstance(a, torch.Tensor) and a.dim() > 0 and a.shape[0] == n_a
            and isinstance(b, torch.Tensor) and b.dim() > 0 and b.shape[0] == n_b
            for a, b in zip(leaves_a, leaves_b)]


class HookTrunk(nn.Module):
    """Runs ``model`` up to the end of ``at``; returns the per-example tensors crossing the cut
    (``at``'s first output first). Tensors shared by the batch (e.g. position tables) and
    non-tensor values are kept for the paths of the same call."""

    def __init__(self, model: nn.Module, at: str, stubs: Sequence[str]) -> None:
        super().__init__()
        self.model, self.at, self.stubs = model, at, list(stubs)
        self.batched: list[bool] = []
        self.input_names: list[str] | None = None
        self.mask_index: int | None = None
        self._spec = None
        self._shared: list = []

    def capture(self, x):
        modules = dict(self.model.named_modules())
        outs: dict[str, object] = {}

        def keep(name):
            def hook(_m, _args, out):
                outs[name] = out
                if name == self.at:
                    raise _Cut
            return hook

        handles = [modules[n].register_forward_hook(keep(n)) for n in self.stubs]
        try:
            call_model(self.model, x)
        except _Cut:
            pass
        finally:
            for h in handles:
                h.remove()
        if self.at not in outs:
            raise ModelError(f"dynamic pruning: the branch point {self.at!r} did not run.")
        names = [str(k) for k in x] if is_mapping(x) else None
        inputs = [x[k] for k in x] if is_mapping(x) else [x]
        return pytree.tree_flatten((outs[self.at], [outs[s] for s in self.stubs[1:]], inputs)
                                   ), names

    def calibrate(self, example, call: str) -> None:
        """Which crossing tensors are per example (their first dimension follows the batch)."""
        a, b = take(example, [0, 0]), take(example, [0, 0, 0])
        (la, spec), names = self.capture(a)
        (lb, _), _ = self.capture(b)
        self.batched, self.input_names = _rows_flags(la, lb, 2, 3), names
        first = pytree.tree_flatten(pytree.tree_unflatten(la, spec)[0])[0]
        if not first or not self.batched[0] or not first[0].is_floating_point():
            raise ModelError(f"{call}(at=...): the output of {self.at!r} is not a batch of "
                             "features; choose a branch point that returns hidden states or "
                             "feature maps.")
        self.mask_index = None
        if names is not None and "attention_mask" in names:
            pos = len(la) - len(names) + names.index("attention_mask")
            if self.batched[pos]:
                self.mask_index = sum(self.batched[:pos])

    def forward(self, x) -> tuple[torch.Tensor, ...]:
        (leaves, spec), _ = self.capture(x)
        self._spec = spec
        self._shared = [v for v, b in zip(leaves, self.batched) if not b]
        return tuple(v for v, b in zip(leaves, self.batched) if b)


class HookPath(nn.Module):
    """A sliced copy of the model whose stand-ins return the trunk's values: ``path(*values)``
    runs only the layers after the cut."""

    def __init__(self, model: nn.Module, trunk: HookTrunk) -> None:
        super().__init__()
        self.model = model
        self.__dict__["_trunk"] = trunk   # not a submodule: the net holds it once

    def forward(self, *values):
        t = self._trunk
        given, shared = iter(values), iter(t._shared)
        leaves = [next(given) if b else next(shared) for b in t.batched]
        at_out, stub_outs, inputs = pytree.tree_unflatten(leaves, t._spec)
        x = dict(zip(t.input_names, inputs)) if t.input_names is not None else inputs[0]
        modules = dict(self.model.named_modules())
        for name, value in zip(t.stubs, [at_out, *stub_outs]):
            modules[name].value = value
        try:
            return call_model(self.model, x)
        finally:
            for name in t.stubs:
                modules[name].value = None


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


class HookCut:
    """Everything dynamic pruning needs from a hook cut of ``model`` at ``at``: the trunk, the
    sliceable channel groups after the cut, and :meth:`path` to build a sliced path."""

    def __init__(self, model: nn.Module, at: str, example, *, forward: Callable | None = None,
                 ignored: Sequence[str] = (), call: str = "Study.dynamic") -> None:
        modules = dict(model.named_modules())
        if not isinstance(at, str) or not at or at not in modules:
            raise ConfigError.unknown_name(call, "at", hook_points(model, example, call), at)
        self.model, self.at, self.forward, self.call = model, at, forward, call
        self.example = take(example, [0, 0]) if batch_size(example) < 2 else example
        starts, ends, _ = _record(model, self.example)
        self.stubs, self.tail = _plan_cut(model, at, starts, ends, call)
        self.trunk = HookTrunk(model, at, self.stubs)
        self.trunk.calibrate(self.example, call)
        self.ignored = list(ignored)

    def in_tail(self, layer: str) -> bool:
        return any(layer == t or layer.startswith(t + ".") for t in self.tail)

    def groups(self) -> list:
        """Channel groups after the cut that can lose channels and still run."""
        from ..groups import safe_channel_groups

        others = [n for n, m in self.model.named_modules() if n and not self.in_tail(n)
                  and not any(c for c in m.children())]
        try:
            safe, _ = safe_channel_groups(self.model, self.example,
                                          ignored=self.ignored + others, forward=self.forward)
        except ModelError:
            return []
        return [g for g in safe if all(self.in_tail(n) for n in g.layers)]

    def path(self, kept: Mapping[str, Sequence[int]], sizes: Mapping[str, int]) -> HookPath:
        """A path keeping channels ``kept[group]`` of each sliced group (others whole)."""
        from ..groups import apply_channel_plan

        sliced = copy.deepcopy(self.model)
        plan = {}
        for key, idx in kept.items():
            keep = {int(i) for i in idx}
            plan[key] = [i for i in range(int(sizes[key])) if i not in keep]
        if any(plan.values()):
            apply_channel_plan(sliced, self.example, plan, forward=self.forward)
        for name in self.stubs:   # the trunk computes these: the path holds no copy of them
            _replace(sliced, name, Cached(self.model.get_submodule(name)))
        return HookPath(sliced.eval(), self.trunk)

    def strip(self) -> None:
        """Drop the layers after the cut from the trunk's model (it never reaches them)."""
        for name in self.tail:
            _replace(self.model, name, _Never())
