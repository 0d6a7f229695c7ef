"""Build a :class:`~xprune_nb.pruning.dynamic.net.DynamicNet` from a model and class-wise scores.

:func:`build_dynamic` validates every argument before it touches anything, cuts the model at the
branch point, trains the branch on the trunk's (frozen) features, predicts the top-k subsets of
the training data, clusters them into at most ``max_paths`` sliced paths
(:mod:`~xprune_nb.pruning.dynamic.paths`) and slices a copy of the tail for each.

Defaults were picked by measurement (``docs/dynamic.md``, ``benchmarks/bench_dynamic.py``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import torch
from torch import nn

from ...core.errors import ConfigError, DataError, ModelError
from ...data.batch import batch_size, is_mapping, take
from ...models.mechanisms.fit_check import find_output_layers
from ...models.mechanisms.model_tools import call_model, copy_model, eval_mode, logits_of
from .net import PLAN_VERSION, Branch, DynamicNet
from .paths import cluster_subsets, normalise_relevance
from .split import branch_points, check_crossing, slice_tail, split_at, tail_groups
from .train import finetune_paths, pooled_features, train_branch

__all__ = ["build_dynamic", "DEFAULTS", "check_dynamic_args", "auto_branch_point",
           "class_relevance", "dynamic_branch_points"]

#: Defaults of build_dynamic (and Study.dynamic), measured in docs/dynamic.md.
DEFAULTS = {"k": 2, "confidence": 0.9, "keep": 0.5, "at": None, "epochs": 20, "max_paths": 4,
            "finetune": 3, "pool": 4, "at_fraction": 0.35}


def _forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return logits_of(call_model(model, x))


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_dynamic_args(*, k: object, confidence: object, keep: object, epochs: object,
                       max_paths: object = 1, seed: object = 0, num_classes: int | None = None,
                       call: str = "Study.dynamic") -> None:
    """Raise a ConfigError naming the first bad parameter (nothing else is checked here).

    Examples
    --------
    >>> check_dynamic_args(k=2, confidence=0.9, keep=0.5, epochs=5, num_classes=10)
    >>> check_dynamic_args(k=10, confidence=0.9, keep=0.5, epochs=5, num_classes=10)
    Traceback (most recent call last):
    ...
    xprune_nb.core.errors.ConfigError: Study.dynamic(k=...): expected an integer in [1, 9] ...
    """
    top = "" if num_classes is None else f"{num_classes - 1}"
    if not _is_int(k) or k < 1 or (num_classes is not None and k >= num_classes):
        allowed = (f"an integer in [1, {top}] (fewer than the {num_classes} classes)"
                   if num_classes is not None else "a positive integer")
        raise ConfigError.bad_value(call, "k", allowed, k)
    if not _is_number(confidence) or not 0 < confidence <= 1:
        raise ConfigError.bad_value(call, "confidence", "a number in (0, 1] (1.0 disables "
                                    "early exit)", confidence)
    if not _is_number(keep) or not 0 < keep <= 1:
        raise ConfigError.bad_value(call, "keep", "a fraction of channels in (0, 1]", keep)
    if not _is_int(epochs) or epochs < 1:
        raise ConfigError.bad_value(call, "epochs", "a positive integer", epochs)
    if not _is_int(max_paths) or max_paths < 1:
        raise ConfigError.bad_value(call, "max_paths", "a positive integer", max_paths)
    if not _is_int(seed) or seed < 0:
        raise ConfigError.bad_value(call, "seed", "a non-negative integer", seed)


def _num_classes(model: nn.Module, example: torch.Tensor, forward: Callable, call: str) -> int:
    try:
        with torch.no_grad(), eval_mode(model):
            out = forward(model, example)
    except Exception as exc:  # noqa: BLE001 - the model cannot classify this input
        raise ConfigError.bad_value(call, "model", "a classifier that runs on the example "
                                    f"({type(exc).__name__}: {exc})", type(model).__name__
                                    ) from exc
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[1] < 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError.bad_value(call, "model", "a classifier returning (batch, classes) "
                                    "logits with at least 2 classes", f"output {shape}")
    return int(out.shape[1])


def _flops_by_module(model: nn.Module, example: torch.Tensor) -> dict[str, int]:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), eval_mode(model), counter:
        model(example)
    # keys are "Global", "ClassName" and "ClassName.qualified.name"
    return {(k.split(".", 1)[1] if "." in k else k): int(sum(v.values()))
            for k, v in counter.get_flop_counts().items()}


def auto_branch_point(model: nn.Module, example: torch.Tensor, fraction: float = 0.35,
                      call: str = "Study.dynamic") -> list[str]:
    """Candidate branch points, best first: top-level modules and the children of top-level
    ``nn.Sequential`` / ``nn.ModuleList`` stages, ordered by how close the share of the dense
    MACs done up to their output is to ``fraction``.

    Examples
    --------
    >>> import torch
    >>> from xprune_nb.models import DigitsResNet
    >>> auto_branch_point(DigitsResNet(), torch.zeros(1, 1, 8, 8))[0]
    'layer1'
    """
    points = branch_points(model, call)
    # top-level modules, and the blocks of top-level nn.Sequential / nn.ModuleList stages
    stages = {n for n, m in model.named_children() if isinstance(m, (nn.Sequential,
                                                                         nn.ModuleList))}
    top = [p for p in points if "." not in p or (p.count(".") == 1
                                                 and p.split(".")[0] in stages)]
    flops = _flops_by_module(model, example)
    total = max(flops.pop("Global", 0), 1)
    done, cum = 0, {}
    for p in top:
        if p not in stages:  # a stage's MACs are its blocks'
            done += flops.get(p, 0)
            cum[p] = done / total
    for stage in stages & set(top):  # a stage ends where its last block ends
        cum[stage] = max((v for p, v in cum.items() if p.startswith(stage + ".")), default=0)
    # among points with equal MACs so far (a conv, then its BatchNorm, ReLU and pooling),
    # prefer the last one: the branch then sees activated, pooled features
    return sorted((p for p in top if 0 < cum[p] < 1), key=lambda p: (abs(cum[p] - fraction),
                                                                        -top.index(p)))


def class_relevance(model: nn.Module, example: torch.Tensor, tail: nn.Module, groups,
                    per_class_scores: dict[str, torch.Tensor], num_classes: int,
                    call: str = "Study.dynamic") -> dict[str, torch.Tensor]:
    """(classes, channels) relevance for each sliceable tail group, from scores keyed by the
    model's channel-group keys (as ``Scores.per_class``) or by layer names."""
    from ..groups import build_graph, channel_groups

    per_layer: dict[str, torch.Tensor] = {}
    full = {g.key: g for g in channel_groups(model, build_graph(model, example))}
    for key, t in per_class_scores.items():
        t = t.detach().double()
        g = full.get(key)
        if g is not None and t.shape[1] == g.size:
            # spread a group's scores onto its member layers' own channels
            for name, local, root in g.mapping:
                layer = per_layer.setdefault(name, torch.zeros(num_classes, max(local) + 1,
                                                               dtype=torch.float64))
                layer[:, list(local)] = t[:, list(root)]
        else:
            per_layer.setdefault(key, t)
    out = {}
    for g in groups:
        members = {n: per_layer[n] for n in g.layers if n in per_layer}
        try:
            out[g.key] = g.combine(members).double() if members else None
        except (IndexError, RuntimeError):
            raise ConfigError.bad_value(call, "per_class_scores", "(classes, units) tensors "
                                        "that fit the model's channels", f"{g.key!r} of "
                                        "another size") from None
    return {k: v for k, v in out.items() if v is not None}


def _check_scores(scores: object, num_classes: int, call: str) -> None:
    ok = isinstance(scores, dict) and scores and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) and v.dim() == 2
        and v.shape[0] == num_classes for k, v in scores.items())
    if not ok:
        raise ConfigError.bad_value(call, "per_class_scores", "a non-empty dict of group or "
                                    f"layer name -> ({num_classes} classes, units) tensors, "
                                    "e.g. Scores.per_class of a class-aware criterion such "
                                    "as 'lrp'", type(scores).__name__)


def build_dynamic(model: nn.Module, *, train_X: torch.Tensor, train_y: torch.Tensor,
                  per_class_scores: dict[str, torch.Tensor], forward: Callable | None = None,
                  k: int = DEFAULTS["k"], confidence: float = DEFAULTS["confidence"],
                  keep: float = DEFAULTS["keep"], at: str | None = DEFAULTS["at"],
                  epochs: int = DEFAULTS["epochs"], seed: int = 0,
                  max_paths: int = DEFAULTS["max_paths"], example: torch.Tensor | None = None,
                  finetune: int = DEFAULTS["finetune"], pool: int = DEFAULTS["pool"],
                  branch_state: dict | None = None,
                  call: str = "Study.dynamic") -> DynamicNet:
    """A :class:`DynamicNet` over a copy of ``model`` (which is never changed).

    Parameters
    ----------
    model : nn.Module
        A classifier whose forward torch.fx can trace.
    train_X, train_y : torch.Tensor
        Training data for the branch; its top-k predictions on it weigh the subset clustering.
    per_class_scores : dict[str, torch.Tensor]
        Class-wise channel relevance: group key (or layer name) -> (classes, channels), e.g.
        ``Scores.per_class`` from ``study.score("lrp", granularity="channel")``.
    forward : callable, optional
        ``forward(model, x) -> logits`` (default: the model's output, or its ``logits``).
    k : int
        Size of the predicted class subset (1 <= k < classes).
    confidence : float in (0, 1]
        Early exit when the branch's top-1 probability reaches it; 1.0 disables exits.
    keep : float in (0, 1]
        Fraction of each group's channels a path keeps after the branch point.
    at : str or None
        Branch point (a module name, see ``branch_points(model)``); ``None`` picks the
        top-level module after which about ``at_fraction`` of the dense MACs are done.
    epochs, seed : int
        Branch training (deterministic under ``seed``).
    max_paths : int
        At most this many sliced paths (class subsets are clustered).
    example : torch.Tensor, optional
        Inputs to trace with (default: ``train_X[:2]``).
    finetune : int
        Epochs of fine-tuning each sliced path on the training examples routed to it
        (labels + distillation from the dense model); 0 keeps the sliced weights as they are.
        Skipped when ``keep=1.0`` (nothing was removed).
    pool : int
        The branch pools each spatial dimension to this size before its linear layer.
    branch_state : dict, optional
        A trained branch's state dict to reuse (skips training; used by sweeps).

    Raises
    ------
    ConfigError
        Names the bad parameter; nothing has changed.
    ModelError
        The model cannot be traced or cut at ``at``.

    Examples
    --------
    >>> import torch
    >>> from xprune_nb import zoo
    >>> model = zoo.load("digits_resnet")
    >>> X, y = torch.randn(32, 1, 8, 8), torch.arange(32) % 10
    >>> scores = {n: torch.rand(10, m.out_channels) for n, m in model.named_modules()
    ...           if isinstance(m, torch.nn.Conv2d)}
    >>> net = build_dynamic(model, train_X=X, train_y=y, per_class_scores=scores, at="layer1",
    ...                     k=2, epochs=1, max_paths=2)
    >>> net.num_paths <= 2 and net(X).shape == (32, 10)
    True
    """
    forward = forward or _forward
    if not (isinstance(train_X, torch.Tensor) or is_mapping(train_X)) \
            or not isinstance(train_y, torch.Tensor) or len(train_y) == 0 \
            or batch_size(train_X, call) != len(train_y):
        raise DataError(f"{call}: the training data must be inputs (a tensor or a dict of "
                        "tensors) and labels of the same, non-zero length.")
    example = take(train_X, slice(0, 2)) if example is None else example
    num_classes = _num_classes(model, example, forward, call)
    check_dynamic_args(k=k, confidence=confidence, keep=keep, epochs=epochs,
                       max_paths=max_paths, seed=seed, num_classes=num_classes, call=call)
    if not _is_int(finetune) or finetune < 0:
        raise ConfigError.bad_value(call, "finetune", "a non-negative integer", finetune)
    if not _is_int(pool) or pool < 1:
        raise ConfigError.bad_value(call, "pool", "a positive integer", pool)
    if int(train_y.min()) < 0 or int(train_y.max()) >= num_classes:
        raise DataError(f"{call}: labels must lie in [0, {num_classes - 1}] for a model with "
                        f"{num_classes} outputs.")
    _check_scores(per_class_scores, num_classes, call)
    model = copy_model(model).eval()
    # named inputs, or a forward torch.fx cannot trace (Hugging Face models): cut with hooks
    hooks = is_mapping(example) or not _traceable(model, call)
    output_layers = find_output_layers(model, example, forward)
    if at is not None:
        candidates = [at]
    elif hooks:
        from .hooks import auto_hook_point

        candidates = auto_hook_point(model, example, DEFAULTS["at_fraction"], call)
    else:
        candidates = auto_branch_point(model, example, DEFAULTS["at_fraction"], call)
    last_error, cut = None, None
    for point in candidates:
        if hooks:
            from .hooks import HookCut

            with eval_mode(model):
                cut = HookCut(model, point, example, forward=forward, ignored=output_layers,
                              call=call)
                groups = cut.groups()
            trunk, tail = cut.trunk, None
        else:
            trunk, tail = split_at(model, point, call)
        with torch.no_grad():
            values = tuple(trunk(example))
        if not hooks:
            check_crossing(values, batch_size(example), point, call)
            groups = tail_groups(tail, values, output_layers)
        relevance = class_relevance(model, example, tail, groups, per_class_scores,
                                    num_classes, call)
        if relevance:
            at = point
            break
        points = ", ".join(candidates[:12] if hooks else branch_points(model, call)[:12])
        last_error = ConfigError.bad_value(
            call, "at", "a branch point followed by channels to slice, with class-wise scores "
            f"for them (candidates: {points or 'none'}, ...)", point)
    else:
        raise last_error or ConfigError.bad_value(call, "at", "a module name", at)
    sizes = {g.key: g.size for g in groups if g.key in relevance}
    feat = values[0]
    tokens = hooks and feat.dim() == 3   # (batch, tokens, hidden): a sequence model's states
    spatial = 0 if tokens else feat.dim() - 2
    if spatial > 3 or spatial < 0:
        raise ConfigError.bad_value(call, "at", "a module whose output is (N, C), (N, C, "
                                    "*spatial) with up to 3 spatial dimensions, or token "
                                    "states (N, tokens, C)", at)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        # pooling never enlarges: a 2x2 feature map is pooled to 2x2, not repeated to 4x4
        size = min([pool, *feat.shape[2:]]) if spatial else 1
        branch = Branch(feat.shape[-1] if tokens else feat.shape[1], num_classes, size,
                        spatial, tokens=tokens)
    feats = pooled_features(trunk, branch, train_X)
    if branch_state is not None:
        branch.load_state_dict(branch_state)
    else:
        train_branch(branch, feats, train_y.long(), epochs=epochs, seed=seed)
    with torch.no_grad():
        top = branch.fc(feats).topk(k, dim=1).indices.sort(1).values
    subsets = Counter(tuple(int(c) for c in row) for row in top.tolist())
    rel = normalise_relevance(relevance)
    clusters = cluster_subsets(rel, subsets, num_classes, float(keep), max_paths)
    if hooks:
        with eval_mode(model):
            paths = [cut.path(p["kept"], sizes) for p in clusters["paths"]]
    else:
        paths = [slice_tail(tail, values, p["kept"], sizes) for p in clusters["paths"]]
    plan = {
        "version": PLAN_VERSION, "at": at, "k": int(k), "confidence": float(confidence),
        "keep": float(keep), "num_classes": num_classes, "max_paths": int(max_paths),
        "seed": int(seed), "epochs": int(epochs), "finetune": int(finetune),
        "branch": branch.shape(), "sizes": sizes, "split": "hooks" if hooks else "fx",
        "paths": clusters["paths"], "affinity": clusters["affinity"].tolist(),
        "subsets": clusters["subsets"],
        "relevance": {key: r.float().tolist() for key, r in rel.items()},
    }
    net = DynamicNet(trunk, branch, paths, clusters["affinity"], k=k, confidence=confidence,
                     plan=plan).eval()
    if finetune and keep < 1:  # with every channel kept there is nothing to recover
        n = batch_size(train_X)
        with torch.no_grad():
            teacher = torch.cat([forward(model, take(train_X, slice(i, i + 256)))
                                 for i in range(0, n, 256)])
        finetune_paths(net, train_X, train_y.long(), teacher, epochs=finetune, seed=seed)
    if hooks:
        cut.strip()   # the trunk stops at the cut: its copy of the later layers goes
    return net


def _traceable(model: nn.Module, call: str) -> bool:
    """True when torch.fx can trace ``model`` (the graph cut of :mod:`.dynamic_split`)."""
    try:
        branch_points(model, call)
    except ModelError:
        return False
    return True


def dynamic_branch_points(model: nn.Module, example, call: str = "Study.dynamic") -> list[str]:
    """What ``at`` may be for ``model`` on inputs like ``example``: the torch.fx branch points
    of a traceable model taking one tensor, else the modules a hook cut can stop after."""
    if not is_mapping(example) and _traceable(model, call):
        return branch_points(model, call)
    from .hooks import hook_points

    return hook_points(model, example, call)
