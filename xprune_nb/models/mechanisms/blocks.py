"""Whole-block removal: residual blocks and transformer layers replaced by an identity.

A *block* is a composite module (two or more layers with parameters) that is an entry of an
``nn.ModuleList`` / ``nn.Sequential`` (``TransformerEncoder.layers``, Hugging Face
``encoder.layer`` lists, ViT ``blocks``) or a direct child of the model (the ``layer1``,
``layer2``... of a ResNet). It can go when its output has the shape of its input: it is then
replaced by :class:`SkippedBlock`, which returns its input in the block's output convention, and
the model gets shallower (the layers of an ``nn.TransformerEncoder``, which reads its first
layer's attention settings in every forward, are deleted from its list instead, so the later
layers move up). Blocks that change the shape (a downsampling stage), that run more than
once or never, are reported with the reason.

Plans are plain data (a list of module names), so a recorded plan replays on a fresh copy of the
original model.

Examples
--------
>>> import torch
>>> from xprune_nb.models import DigitsViT
>>> model, x = DigitsViT(depth=3), torch.zeros(2, 1, 8, 8)
>>> blocks, skipped = find_blocks(model, x, lambda m, t: m(t))
>>> [b.name for b in blocks]
['blocks.0', 'blocks.1', 'blocks.2']
>>> remove_blocks(model, ["blocks.1"], blocks=blocks)
['blocks.1']
>>> type(model.blocks[1]).__name__, model(x).shape
('SkippedBlock', torch.Size([2, 10]))
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ...core.errors import PruneError
from .model_tools import eval_mode

__all__ = ["Block", "SkippedBlock", "find_blocks", "remove_blocks", "block_magnitude",
           "skip_drop", "block_gates"]


@dataclass(frozen=True)
class Block:
    """One removable block.

    Attributes
    ----------
    name : str
        Module name (what a plan lists).
    params : int
        Parameters the removal takes away.
    input_key : int or str
        Where the block reads the tensor it passes on: a positional index or a keyword name.
    returns : int
        0 when the block returns a tensor, else the length of the tuple it returns (the tensor
        first; :class:`SkippedBlock` fills the rest with ``None``).
    """

    name: str
    params: int
    input_key: int | str = 0
    returns: int = 0


class SkippedBlock(nn.Module):
    """What a removed block becomes: returns its input, in the block's output convention.

    Parameters
    ----------
    input_key : int or str, default 0
        Positional index or keyword of the tensor to pass on.
    returns : int, default 0
        0 to return the tensor, ``n`` to return ``(tensor, None, ...)`` of length ``n``
        (Hugging Face layers that return tuples).
    block : str, default ""
        Class name of the block it replaces (shown in ``repr``).

    Examples
    --------
    >>> import torch
    >>> SkippedBlock()(torch.ones(2))
    tensor([1., 1.])
    >>> SkippedBlock(returns=2)(torch.ones(1))
    (tensor([1.]), None)
    """

    def __init__(self, input_key: int | str = 0, returns: int = 0, block: str = "") -> None:
        super().__init__()
        self.input_key, self.returns, self.block = input_key, returns, block

    def extra_repr(self) -> str:
        return f"was={self.block}" if self.block else ""

    def forward(self, *args, **kwargs):
        x = args[self.input_key] if isinstance(self.input_key, int) else kwargs[self.input_key]
        return (x,) + (None,) * (self.returns - 1) if self.returns else x


def _first_tensor(value):
    if torch.is_tensor(value):
        return value
    if isinstance(value, (tuple, list)) and value and torch.is_tensor(value[0]):
        return value[0]
    return getattr(value, "last_hidden_state", None)


def _parameterised_layers(module: nn.Module) -> int:
    return sum(1 for m in module.modules() if any(True for _ in m.parameters(recurse=False)))


def _candidates(model: nn.Module) -> list[str]:
    names = []
    for name, module in model.named_modules():
        if isinstance(module, (SkippedBlock, nn.ModuleList, nn.ModuleDict)) or not name:
            continue   # containers have no forward of their own
        parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
        chained = isinstance(parent, (nn.ModuleList, nn.Sequential)) or parent is model
        if chained and _parameterised_layers(module) >= 2:
            names.append(name)
    return names


def find_blocks(model: nn.Module, example, forward: Callable
                ) -> tuple[list[Block], dict[str, str]]:
    """The blocks of ``model`` that can be replaced by an identity, and the others with why.

    One forward pass on ``example`` records each candidate's input and output shapes.

    Parameters
    ----------
    model : nn.Module
    example : tensor
        An input batch.
    forward : callable
        ``forward(model, example)`` runs the model.

    Returns
    -------
    blocks : list of Block
        In module order; nested candidates inside a removable block are listed too.
    skipped : dict
        Module name -> why it cannot be removed.
    """
    names = _candidates(model)
    seen: dict[str, list] = {n: [] for n in names}
    handles = []

    def hook(name):
        def record(_module, args, kwargs, output):
            if args and torch.is_tensor(args[0]):
                key, x = 0, args[0]
            else:
                key, x = next(((k, v) for k, v in kwargs.items() if torch.is_tensor(v)),
                              (None, None))
            out = _first_tensor(output)
            returns = len(output) if isinstance(output, tuple) else 0
            seen[name].append((key, None if x is None else x.shape,
                               None if out is None else out.shape, returns,
                               torch.is_tensor(output) or isinstance(output, tuple)))
        return record

    modules = dict(model.named_modules())
    for name in names:
        handles.append(modules[name].register_forward_hook(hook(name), with_kwargs=True))
    try:
        with torch.no_grad(), eval_mode(model):
            forward(model, example)
    finally:
        for handle in handles:
            handle.remove()
    blocks, skipped = [], {}
    for name in names:
        calls = seen[name]
        if not calls:
            skipped[name] = "never runs in the model's forward"
            continue
        if len(calls) > 1:
            skipped[name] = f"runs {len(calls)} times per forward (shared weights)"
            continue
        key, shape_in, shape_out, returns, plain = calls[0]
        if key is None or shape_out is None:
            skipped[name] = "its input or output is not a tensor"
        elif shape_in != shape_out:
            skipped[name] = (f"changes the shape: input {tuple(shape_in)} -> output "
                             f"{tuple(shape_out)}")
        elif not plain:
            skipped[name] = "returns an output object an identity cannot reproduce"
        else:
            params = sum(p.numel() for p in modules[name].parameters())
            blocks.append(Block(name, params, key, returns))
    return blocks, skipped


def _check_names(blocks: Sequence[Block], skipped: Mapping[str, str], names, call: str
                 ) -> list[Block]:
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise PruneError(f"{call}(names=...): expected a list of block names, got {names!r}")
    by_name = {b.name: b for b in blocks}
    chosen = []
    for name in names:
        if name not in by_name:
            why = skipped.get(name, "not a block of this model (see find_blocks)")
            raise PruneError(f"{call}(names=...): cannot remove {name!r}: {why}")
        chosen.append(by_name[name])
    picked = {b.name for b in chosen}
    for b in chosen:   # a block inside another removed block goes with it
        if any(b.name.startswith(other + ".") for other in picked):
            raise PruneError(f"{call}(names=...): {b.name!r} lies inside another block of "
                             "the plan; name only the outer one")
    return chosen


def remove_blocks(model: nn.Module, names: Sequence[str], example=None,
                  forward: Callable | None = None, *,
                  blocks: Sequence[Block] | None = None) -> list[str]:
    """Replace, in place, the blocks ``names`` by :class:`SkippedBlock` identities.

    Either give ``example`` and ``forward`` (to find the blocks) or the ``blocks`` found
    earlier by :func:`find_blocks` on this model. Every name is checked before anything changes.

    Returns
    -------
    list of str
        The plan as applied (plain data; it replays on a fresh copy of the original model).

    Raises
    ------
    PruneError
        A name that is not a removable block (with the reason), or nested names.
    """
    if blocks is None:
        if example is None or forward is None:
            raise PruneError("remove_blocks(blocks=...): give the blocks found by find_blocks, "
                             "or example and forward to find them")
        blocks, skipped = find_blocks(model, example, forward)
    else:
        skipped = {}
    chosen = _check_names(blocks, skipped, names, "remove_blocks")
    deleted = _encoder_deletions(model, chosen)
    for block in chosen:
        if block.name in deleted:
            continue
        parent_name, _, attr = block.name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        old = getattr(parent, attr) if not attr.isdigit() else parent[int(attr)]
        new = SkippedBlock(block.input_key, block.returns, type(old).__name__)
        if attr.isdigit():
            parent[int(attr)] = new
        else:
            setattr(parent, attr, new)
    return [b.name for b in chosen]


def _encoder_deletions(model: nn.Module, chosen: Sequence[Block]) -> set[str]:
    """Delete the chosen layers of each ``nn.TransformerEncoder`` (it reads
    ``layers[0].self_attn`` in every forward, so an identity cannot stand in for its layers).

    Indices refer to the model before the call: they are deleted from the last one down.
    """
    encoders = {name: m for name, m in model.named_modules()
                if isinstance(m, nn.TransformerEncoder)}
    plan: dict[str, list[int]] = {}
    for block in chosen:
        parent, _, index = block.name.rpartition(".")
        owner, _, attr = parent.rpartition(".")
        if attr == "layers" and owner in encoders:
            plan.setdefault(owner, []).append(int(index))
    for owner, indices in plan.items():
        if len(indices) >= len(encoders[owner].layers):
            where = f"{owner}.layers" if owner else "layers"
            raise PruneError(f"remove_blocks(names=...): would remove every layer of "
                             f"{where!r}; keep at least one")
    for owner, indices in plan.items():
        encoder = encoders[owner]
        for index in sorted(indices, reverse=True):
            del encoder.layers[index]
        encoder.num_layers = len(encoder.layers)
    prefix = {owner: f"{owner}.layers." if owner else "layers." for owner in plan}
    return {prefix[o] + str(i) for o, idx in plan.items() for i in idx}


def block_magnitude(model: nn.Module, blocks: Sequence[Block]) -> dict[str, float]:
    """Root-mean-square of each block's parameters (size-independent weight magnitude).

    Examples
    --------
    >>> from torch import nn
    >>> block_magnitude(nn.Sequential(nn.Linear(2, 2)), [Block("0", 6)])["0"] > 0
    True
    """
    out = {}
    for block in blocks:
        params = [p.detach().double().flatten() for p in
                  model.get_submodule(block.name).parameters()]
        flat = torch.cat(params) if params else torch.zeros(1, dtype=torch.float64)
        out[block.name] = float(flat.pow(2).mean().sqrt())
    return out


@contextlib.contextmanager
def _skipped(model: nn.Module, block: Block) -> Iterator[None]:
    """Skip a block for a while: a hook hands its input on (the module stays in place)."""
    def passthrough(_module, args, kwargs, output):
        x = args[block.input_key] if isinstance(block.input_key, int) else \
            kwargs[block.input_key]
        return (x,) + tuple(output[1:]) if isinstance(output, tuple) else x

    handle = model.get_submodule(block.name).register_forward_hook(passthrough,
                                                                   with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def skip_drop(model: nn.Module, blocks: Sequence[Block], inputs: torch.Tensor,
              targets: torch.Tensor, forward: Callable, batch_size: int = 256
              ) -> dict[str, float]:
    """Accuracy drop on ``(inputs, targets)`` when each block alone is skipped.

    The model is restored after each trial. A positive value means the block helps.
    """
    def accuracy() -> float:
        correct = 0
        with torch.no_grad(), eval_mode(model):
            for start in range(0, len(inputs), batch_size):
                logits = forward(model, inputs[start:start + batch_size])
                correct += int((logits.argmax(1) == targets[start:start + batch_size]).sum())
        return correct / max(len(inputs), 1)

    base = accuracy()
    out = {}
    for block in blocks:
        with _skipped(model, block):
            out[block.name] = base - accuracy()
    return out


@contextlib.contextmanager
def block_gates(model: nn.Module, blocks: Sequence[Block],
                values: Mapping[str, float] | None = None) -> Iterator[dict[str, torch.Tensor]]:
    """Interpolate each block between itself and its skip: ``y = x + g * (block(x) - x)``.

    Yields ``{name: gate}`` (scalar tensors that require grad, 1 unless ``values`` says). At
    g = 1 the model is unchanged, at g = 0 the block is skipped, so after ``backward`` the
    gate's gradient is the first-order (Taylor) estimate of what skipping the block changes
    (for a residual block ``x + f(x)``, g gates exactly the residual branch ``f``).
    """
    values = values or {}
    gates, handles = {}, []
    modules = dict(model.named_modules())
    try:
        for block in blocks:
            gate = torch.tensor(float(values.get(block.name, 1.0)), requires_grad=True)
            gates[block.name] = gate

            def hook(_module, args, kwargs, output, block=block, gate=gate):
                x = args[block.input_key] if isinstance(block.input_key, int) \
                    else kwargs[block.input_key]
                y = output[0] if isinstance(output, tuple) else output
                mixed = x + gate.to(y.dtype) * (y - x)
                return (mixed, *output[1:]) if isinstance(output, tuple) else mixed

            handles.append(modules[block.name].register_forward_hook(hook, with_kwargs=True))
        yield gates
    finally:
        for handle in handles:
            handle.remove()


def copy_without(model: nn.Module, names: Sequence[str], blocks: Sequence[Block]) -> nn.Module:
    """A copy of ``model`` with ``names`` removed (the original is untouched)."""
    trial = copy.deepcopy(model)
    remove_blocks(trial, names, blocks=blocks)
    return trial
