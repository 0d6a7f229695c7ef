"""Dynamic (input-dependent) pruning, DyFiP-style: the model that picks its channels per input.

A :class:`DynamicNet` runs, for each input:

1. the *trunk*: the model's layers up to and including the branch point ``at``;
2. the *branch*: a small classifier on the trunk's output (pooling + one linear layer);
3. an *early exit* when the branch's top-1 probability is at least ``confidence``: the branch's
   logits are the answer (``confidence=1.0`` disables exits);
4. otherwise one of a few *sliced paths*: copies of the rest of the model whose later
   convolutions and linear layers keep only the channels that matter for the branch's top-``k``
   classes. Each top-``k`` subset maps to the path that keeps most of its class-wise relevance
   (``affinity``: one row per path, one column per class; a subset's score for a path is the sum
   of its classes' entries).

A batch is grouped by path; each group runs through its path and the logits are scattered back
into the batch order. The output is one row of logits (all classes) per input.

Reference: Sabih, Hannig, Teich. DyFiP: Explainable AI-based Dynamic Filter Pruning of
Convolutional Neural Networks. EuroMLSys 2022.

:func:`dynamic_plan` turns a net into plain data (lists, numbers, strings) and
:func:`rebuild_dynamic` rebuilds it on a fresh copy of the base model, so studies can save, undo
and replay a dynamic step.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ...core.errors import ConfigError
from ...models.mechanisms.model_tools import copy_model, eval_mode
from .split import check_crossing, run_tail, slice_tail, split_at

__all__ = ["DynamicNet", "Branch", "dynamic_plan", "rebuild_dynamic", "PLAN_VERSION"]

PLAN_VERSION = 1


class Branch(nn.Module):
    """The early classifier: adaptive average pooling to ``pool`` per spatial dimension, then
    one linear layer (features of shape (N, C, *spatial) or (N, C)). With ``tokens=True`` the
    features are (N, tokens, C) hidden states, averaged over the tokens the attention mask
    keeps (padding does not count), then the linear layer.

    Examples
    --------
    >>> import torch
    >>> Branch(16, 10, pool=2, spatial_dims=2)(torch.zeros(3, 16, 8, 8)).shape
    torch.Size([3, 10])
    >>> Branch(16, 2, spatial_dims=0, tokens=True)(torch.zeros(3, 5, 16),
    ...                                             mask=torch.ones(3, 5)).shape
    torch.Size([3, 2])
    """

    def __init__(self, channels: int, num_classes: int, pool: int = 1,
                 spatial_dims: int = 2, tokens: bool = False) -> None:
        super().__init__()
        self.channels, self.num_classes = int(channels), int(num_classes)
        self.tokens = bool(tokens)
        self.pool_size, self.spatial_dims = int(pool), 0 if tokens else int(spatial_dims)
        pools = {1: nn.AdaptiveAvgPool1d, 2: nn.AdaptiveAvgPool2d, 3: nn.AdaptiveAvgPool3d}
        self.pool = pools[self.spatial_dims](pool) if self.spatial_dims else None
        self.fc = nn.Linear(self.channels * self.pool_size ** self.spatial_dims, num_classes)

    def features(self, feat: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The linear layer's input: pooled, flattened features (masked token mean)."""
        if self.tokens:
            if mask is None:
                return feat.mean(1)
            m = mask.to(feat.dtype).unsqueeze(-1)
            return (feat * m).sum(1) / m.sum(1).clamp(min=1)
        if self.pool is not None:
            feat = self.pool(feat)
        return torch.flatten(feat, 1)

    def forward(self, feat: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.fc(self.features(feat, mask))

    def shape(self) -> dict:
        """Plain data that rebuilds this branch (with its state dict)."""
        return {"channels": self.channels, "num_classes": self.num_classes,
                "pool": self.pool_size, "spatial_dims": self.spatial_dims,
                "tokens": self.tokens}


def crossing_mask(trunk: nn.Module, values) -> torch.Tensor | None:
    """The attention mask among the values crossing the cut (None for a tensor model)."""
    index = getattr(trunk, "mask_index", None)
    return values[index] if index is not None else None


class DynamicNet(nn.Module):
    """Trunk, branch, early exit and sliced paths; see the module docstring.

    Parameters
    ----------
    trunk : nn.Module
        ``trunk(x)`` -> tuple of the values crossing the cut (the branch point's output first).
    branch : Branch
    paths : sequence of nn.Module
        ``paths[p](*values)`` -> the model's output, computed with path ``p``'s channels.
    affinity : torch.Tensor
        (paths, classes): how much of each class's relevance path ``p`` keeps.
    k : int
        Size of the predicted class subset that picks the path.
    confidence : float in (0, 1]
        Early-exit threshold on the branch's top-1 probability; 1.0 disables exits.
    plan : dict
        The plain-data description (see :func:`dynamic_plan`).

    Examples
    --------
    >>> import torch
    >>> from xprune_nb import zoo
    >>> from xprune_nb.pruning.dynamic.net import rebuild_dynamic
    >>> from xprune_nb.pruning.dynamic.build import build_dynamic
    >>> model = zoo.load("digits_cnn")
    >>> X, y = torch.randn(64, 1, 8, 8), torch.arange(64) % 10
    >>> scores = {"conv2": torch.rand(10, 32), "fc1": torch.rand(10, 64)}
    >>> net = build_dynamic(model, train_X=X, train_y=y, per_class_scores=scores, at="pool1",
    ...                     k=2, keep=0.5, epochs=1)
    >>> net(X[:5]).shape
    torch.Size([5, 10])
    """

    def __init__(self, trunk: nn.Module, branch: Branch, paths: Sequence[nn.Module],
                 affinity: torch.Tensor, *, k: int, confidence: float, plan: dict) -> None:
        super().__init__()
        self.trunk, self.branch = trunk, branch
        self.paths = nn.ModuleList(paths)
        self.register_buffer("affinity", affinity.detach().float().clone())
        self.k, self.confidence = int(k), float(confidence)
        self.plan = plan

    @property
    def num_paths(self) -> int:
        return len(self.paths)

    def route(self, x: torch.Tensor):
        """Run trunk and branch: (crossing values, branch logits, exited mask, path per input).

        ``exited[i]`` is True when input ``i`` leaves at the branch; ``path[i]`` is the path it
        takes otherwise (computed for every input, exited or not).
        """
        values = self.trunk(x)
        logits = self.branch(values[0], crossing_mask(self.trunk, values))
        if self.confidence < 1.0:
            exited = torch.softmax(logits.float(), 1).amax(1) >= self.confidence
        else:
            exited = torch.zeros(len(logits), dtype=torch.bool, device=logits.device)
        subset = logits.topk(self.k, dim=1).indices  # (N, k)
        # a subset's score for a path: the summed affinity of its classes; (P, N) -> argmax
        path = self.affinity[:, subset].sum(-1).argmax(0)
        return values, logits, exited, path

    def forward(self, x=None, /, **named) -> torch.Tensor:
        # named inputs come as keyword arguments (model(**batch)), as for the model wrapped
        values, logits, exited, path = self.route(named if x is None else x)
        n = len(logits)
        if n == 1:  # the batch-1 fast path: no gathering or scattering
            return logits if bool(exited[0]) else run_tail(self.paths[int(path[0])], values)
        route = torch.where(exited, torch.full_like(path, -1), path)
        out = logits.clone()
        for p in torch.unique(route).tolist():
            if p < 0:
                continue
            rows = (route == p).nonzero().squeeze(1)
            if len(rows) == n:
                return run_tail(self.paths[p], values)
            sub = [v.index_select(0, rows) for v in values]
            out = out.index_copy(0, rows, run_tail(self.paths[p], sub).to(out.dtype))
        return out

    def extra_repr(self) -> str:
        return (f"at={self.plan['at']!r}, k={self.k}, confidence={self.confidence}, "
                f"keep={self.plan['keep']}, paths={self.num_paths}")


def dynamic_plan(net: DynamicNet) -> dict:
    """The plain-data plan of ``net`` (a deep copy): with ``net.state_dict()`` and the base
    model, :func:`rebuild_dynamic` restores it exactly. The confidence is read from the net, so
    a threshold changed after building is kept.

    Keys: ``version``, ``at``, ``k``, ``confidence``, ``keep``, ``num_classes``, ``max_paths``,
    ``seed``, ``epochs``, ``branch`` (its shape), ``sizes`` (dense channels of each sliced
    group), ``paths`` (per path: ``kept`` {group: channel indices of the dense model},
    ``classes``), ``affinity`` (paths x classes), ``subsets`` (observed top-k subsets:
    ``classes``, ``path``, ``count``), ``relevance`` ({group: classes x channels}, the
    normalised class-wise relevance that chose the channels).

    Examples
    --------
    >>> # plan = dynamic_plan(net); json.dumps(plan) works
    """
    import copy

    plan = copy.deepcopy(net.plan)
    plan["confidence"] = float(net.confidence)
    plan["affinity"] = net.affinity.tolist()
    return plan


def _check_plan(plan: object, call: str) -> dict:
    keys = ("version", "at", "k", "confidence", "keep", "branch", "sizes", "paths", "affinity")
    if not isinstance(plan, dict) or any(k not in plan for k in keys):
        got = sorted(plan) if isinstance(plan, dict) else plan
        raise ConfigError.bad_value(call, "plan", f"a dict with keys {list(keys)} (from "
                                    "dynamic_plan)", got)
    if plan["version"] != PLAN_VERSION:
        raise ConfigError.bad_value(call, "plan", f"a plan of version {PLAN_VERSION}",
                                    plan["version"])
    return plan


def rebuild_dynamic(base_model: nn.Module, plan: dict, example, *,
                    state_dict: dict | None = None, call: str = "rebuild_dynamic"
                    ) -> DynamicNet:
    """Rebuild a :class:`DynamicNet` on a copy of ``base_model`` from its plain-data ``plan``.

    Parameters
    ----------
    base_model : nn.Module
        The model the net was built from (as it was then: statically pruned if it was). It is
        copied, never changed.
    plan : dict
        From :func:`dynamic_plan`.
    example : torch.Tensor or dict of tensors
        One or more inputs (traces the cut and the channel dependencies).
    state_dict : dict, optional
        The net's ``state_dict()`` (the trained branch, and anything retrained later).

    Examples
    --------
    >>> # net2 = rebuild_dynamic(model, dynamic_plan(net), X[:1], state_dict=net.state_dict())
    """
    plan = _check_plan(plan, call)
    model = copy_model(base_model).eval()
    sizes = {k: int(v) for k, v in plan["sizes"].items()}
    if plan.get("split") == "hooks":   # token / untraceable models: see dynamic_hooks
        from .hooks import HookCut

        with eval_mode(model):
            cut = HookCut(model, plan["at"], example, call=call)
            paths = [cut.path(p["kept"], sizes) for p in plan["paths"]]
        cut.strip()
        trunk = cut.trunk
    else:
        trunk, tail = split_at(model, plan["at"], call)
        with torch.no_grad(), eval_mode(model):
            values = tuple(trunk(example))
        check_crossing(values, len(example), plan["at"], call)
        paths = [slice_tail(tail, values, p["kept"], sizes) for p in plan["paths"]]
    b = plan["branch"]
    branch = Branch(b["channels"], b["num_classes"], b["pool"], b["spatial_dims"],
                    b.get("tokens", False))
    net = DynamicNet(trunk, branch, paths, torch.tensor(plan["affinity"]), k=plan["k"],
                     confidence=plan["confidence"], plan=plan)
    if state_dict is not None:
        net.load_state_dict(state_dict)
    return net.eval()
