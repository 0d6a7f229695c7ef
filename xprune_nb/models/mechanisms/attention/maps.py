"""Attention explanations of transformers: attention maps, rollout and gradient-weighted relevance.

Three views of what a transformer looks at, from the attention probabilities ``A`` (one
``(heads, tokens, tokens)`` matrix per layer, rows = queries), read with forward hooks:

``maps``
    ``A`` itself, per head and per layer.
``rollout`` (Abnar & Zuidema, 2020)
    The heads' mean attention plus the residual (``0.5 A + 0.5 I``, rows renormalised),
    multiplied through the layers: how much of each input token reaches each output token.
``attention_relevance`` (Chefer, Gur & Wolf, ICCV 2021, "Generic Attention-model Explainability")
    Class-specific: ``R = I``, then for each layer ``R += mean_h[(dA ⊙ A)^+] @ R``, where ``dA``
    is the gradient of the explained class's logit with respect to ``A``. A token's score is the
    row of ``R`` at the pooled token (``pool="cls"``) or the mean of its rows (``pool="mean"``,
    for mean-pooling models), without the identity ``R`` starts from.

Attention is read from :class:`~xprune_nb.models.mechanisms.attention.SDPAttention`,
``nn.MultiheadAttention`` (explained on a copy in which it is swapped for the exact
``SDPAttention``, so the probabilities are in the autograd graph and ``TransformerEncoderLayer``
cannot take its fused path) and Hugging Face attention modules built with
``attn_implementation="eager"``. The model itself is never changed.

Token scores map back to the input: token ids one to one, images through the patch grid
(``tokens = g*g`` patches, optionally after one class token; or one token per image row),
spreading each token's score evenly over its pixels so that mass is conserved.

Examples
--------
>>> import torch
>>> from xprune_nb.models import DigitsViT
>>> model = DigitsViT(depth=2).eval()
>>> record = capture_attention(model, torch.rand(3, 1, 8, 8))
>>> [tuple(a.shape) for a in record.attentions]
[(3, 4, 16, 16), (3, 4, 16, 16)]
>>> rollout(record.attentions).shape
torch.Size([3, 16, 16])
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ....core.errors import ConfigError, ModelError
from ..model_tools import copy_model, eval_mode, logits_of

__all__ = ["AttentionRecord", "attention_modules", "capture_attention", "rollout",
           "gradient_weighted_relevance", "token_scores", "to_input_space",
           "attention_relevance", "attention_rollout", "POOLS"]

Forward = Callable[[nn.Module, torch.Tensor], torch.Tensor]
POOLS = ("mean", "cls")


def _default_forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return logits_of(model(x))


def attention_modules(model: nn.Module) -> tuple[dict[str, str], dict[str, str]]:
    """Attention modules whose probabilities can be read (name -> style), and the others with
    the reason why not. Single-head modules count: they still attend."""
    from .discovery import _classify

    modules = dict(model.named_modules())
    found, skipped, inside = {}, {}, []
    for name, module in modules.items():
        if any(name.startswith(p + ".") for p in inside):
            continue
        group = _classify(modules, name, module)
        if group is None:
            continue
        inside.append(name)
        if isinstance(group, str):
            skipped[name] = group
        elif group.kind in ("sdpa", "mha", "hf"):
            found[name] = group.kind
        else:
            skipped[name] = (f"{group.kind} attention computes its probabilities inside a fused "
                             "kernel that does not return them")
    return found, skipped


def _no_attention(model: nn.Module, skipped: dict[str, str], call: str, param: str | None):
    detail = "; ".join(f"{k}: {v}" for k, v in skipped.items())
    # a study's call names no model parameter: the model is the study's own
    what = (f"{call}({param}=...): {type(model).__name__}" if param
            else f"{call}: the study's model ({type(model).__name__})")
    return ConfigError(
        f"{what} has no attention module whose attention "
        "probabilities can be read (supported: nn.MultiheadAttention, SDPAttention, Hugging "
        "Face attention built with attn_implementation='eager')"
        + (f"; found but unreadable: {detail}" if detail else "")
        + ". Explain it with method='saliency', 'integrated_gradients' or 'lrp' instead.")


@dataclass
class AttentionRecord:
    """What one forward pass attended to.

    Attributes
    ----------
    names : list of str
        Attention modules in the order they ran.
    attentions : list of Tensor
        ``(N, heads, queries, keys)`` probabilities per layer (in the autograd graph).
    active : list of Tensor
        ``(heads,)`` booleans: False for a head whose value rows are all zero (masked heads
        attend uniformly but contribute nothing; rollout leaves them out).
    logits : Tensor
        ``(N, classes)``.
    head_ids : list of tuple of int
        Which of the module's original heads each remaining head is.
    """

    names: list[str]
    attentions: list[torch.Tensor]
    active: list[torch.Tensor]
    logits: torch.Tensor
    head_ids: list[tuple[int, ...]]


def _value_rows(module: nn.Module, kind: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    if kind == "sdpa":
        layer = module.v_proj
    else:
        layer = next(getattr(module, n) for n in ("value", "v_proj", "v_lin", "v")
                     if isinstance(getattr(module, n, None), nn.Linear))
    return layer.weight, layer.bias


def _active(module: nn.Module, kind: str, heads: int) -> torch.Tensor:
    weight, bias = _value_rows(module, kind)
    rows = weight.detach().reshape(heads, -1).abs().sum(1)
    if bias is not None:
        rows = rows + bias.detach().reshape(heads, -1).abs().sum(1)
    return rows > 0


@functools.cache
def _signature(cls: type) -> inspect.Signature:
    return inspect.signature(cls.forward)


def _force_weights(module, args, kwargs):
    """Pre-hook: ask the module for unaveraged per-head weights; remember what the caller
    wanted, so the forward hook hands back exactly that."""
    bound = _signature(type(module)).bind(module, *args, **kwargs)
    bound.apply_defaults()
    call = dict(bound.arguments)
    call.pop("self")
    module._xp_wanted = (call["need_weights"], call["average_attn_weights"])
    call["need_weights"], call["average_attn_weights"] = True, False
    return (), call


def _explainable(model: nn.Module) -> nn.Module:
    """The model, or a copy whose nn.MultiheadAttention modules are exact SDPAttention."""
    if not any(isinstance(m, nn.MultiheadAttention) for m in model.modules()):
        return model
    from .sdpa import convert_mha

    twin = copy_model(model, "explain.attention")
    convert_mha(twin)
    return twin


def capture_attention(model: nn.Module, x: torch.Tensor, forward: Forward | None = None, *,
                      grad: bool = True, call: str = "explain.attention",
                      param: str | None = "model") -> AttentionRecord:
    """Run ``model`` on ``x`` (eval mode) and record every layer's attention; with ``grad``
    the probabilities stay in the autograd graph (for gradient-weighted relevance).

    Raises
    ------
    ConfigError
        The model has no attention module whose probabilities can be read.
    ModelError
        A Hugging Face attention module returned no probabilities (built with a fused
        implementation such as ``sdpa``).
    """
    forward = forward or _default_forward
    found, skipped = attention_modules(model)
    if not found:
        raise _no_attention(model, skipped, call, param)
    model = _explainable(model)
    found, _ = attention_modules(model)
    modules = dict(model.named_modules())
    names, attentions, active, head_ids = [], [], [], []

    def hook(module, args, kwargs, output, name):
        weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
        if not isinstance(weights, torch.Tensor) or weights.dim() != 4:
            raise ModelError(
                f"{call}: attention module {name!r} returned no attention probabilities; "
                "build the model with attn_implementation='eager' to explain its attention.")
        kind, heads = found[name], weights.shape[1]
        names.append(name)
        attentions.append(weights)
        active.append(_active(module, kind, heads))
        head_ids.append(tuple(getattr(module, "head_ids", range(heads)))[:heads])
        if kind != "sdpa":
            return None
        need, average = module._xp_wanted
        if not need:
            return output[0], None
        return output[0], weights.mean(1) if average else weights

    handles = []
    try:
        for name, kind in found.items():
            module = modules[name]
            if kind == "sdpa":
                handles.append(module.register_forward_pre_hook(_force_weights,
                                                                with_kwargs=True))
            # prepend: the user's own hooks see what the caller asked for, not our weights
            handles.append(module.register_forward_hook(
                lambda m, a, k, o, name=name: hook(m, a, k, o, name), with_kwargs=True,
                prepend=True))
        with eval_mode(model), torch.set_grad_enabled(grad):
            logits = forward(model, x)
    finally:
        for h in handles:
            h.remove()
        for name in found:            # leave no trace on the model
            modules[name].__dict__.pop("_xp_wanted", None)
    if not attentions:
        raise _no_attention(model, {n: "never runs in the model's forward" for n in found},
                            call, param)
    return AttentionRecord(names, attentions, active, logits, head_ids)


def _fuse(a: torch.Tensor, active: torch.Tensor | None, fusion: str) -> torch.Tensor:
    if active is not None and bool(active.any()) and not bool(active.all()):
        a = a[:, active.to(a.device)]
    if fusion == "mean":
        return a.mean(1)
    return a.max(1).values if fusion == "max" else a.min(1).values


def rollout(attentions: Sequence[torch.Tensor], *, active: Sequence[torch.Tensor] | None = None,
            head_fusion: str = "mean", residual: bool = True) -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema, 2020): ``Â_l = norm(fuse_h(A_l) + I)`` (``0.5 A +
    0.5 I`` with rows renormalised), ``rollout = Â_L ··· Â_1``; ``(N, T, T)``, row ``i``: how
    much of each input token reaches output token ``i``.

    Examples
    --------
    >>> a = torch.full((1, 2, 3, 3), 1 / 3)
    >>> rollout([a, a])[0, 0]
    tensor([0.5000, 0.2500, 0.2500], dtype=torch.float64)
    """
    if head_fusion not in ("mean", "max", "min"):
        raise ConfigError.unknown_name("explain.rollout", "head_fusion", ("mean", "max", "min"),
                                       head_fusion)
    result = None
    for i, a in enumerate(attentions):
        fused = _fuse(a.detach().double(), None if active is None else active[i], head_fusion)
        if residual:
            fused = 0.5 * fused + 0.5 * torch.eye(fused.shape[-1], dtype=fused.dtype)
            fused = fused / fused.sum(-1, keepdim=True)
        # later layers act on the result of earlier ones: left-multiply
        result = fused if result is None else fused @ result
    return result


def gradient_weighted_relevance(attentions: Sequence[torch.Tensor],
                                grads: Sequence[torch.Tensor], *,
                                active: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
    """Chefer et al. (ICCV 2021) relevance: ``R = I; R += mean_h[(dA ⊙ A)^+] @ R`` per layer
    in forward order, the mean over the ``active`` heads (all by default: a masked head's term
    is zero, so leaving it out makes a masked model's relevance that of the same model with the
    head removed). Returns ``(N, T, T)``, identity included."""
    relevance = None
    for i, (a, g) in enumerate(zip(attentions, grads)):
        cam = _fuse((g.detach().double() * a.detach().double()).clamp(min=0),
                    None if active is None else active[i], "mean")
        if relevance is None:
            relevance = torch.eye(cam.shape[-1], dtype=cam.dtype).expand_as(cam).clone()
        relevance = relevance + cam @ relevance
    return relevance


def token_scores(matrix: torch.Tensor, pool: str = "mean", *,
                 drop_identity: bool = False, valid: torch.Tensor | None = None) -> torch.Tensor:
    """``(N, T)`` scores from a ``(N, T, T)`` rollout or relevance matrix: the row of the pooled
    token (``cls``: token 0) or the mean of all rows (``mean``: mean-pooling models). With
    ``valid`` (``(N, T)`` bool, an attention mask), the mean is over the real tokens' rows only
    and padding scores 0."""
    if pool not in POOLS:
        raise ConfigError.unknown_name("explain.attention", "pool", POOLS, pool)
    if drop_identity:
        matrix = matrix - torch.eye(matrix.shape[-1], dtype=matrix.dtype)
    if valid is None:
        return matrix[:, 0] if pool == "cls" else matrix.mean(1)
    keep = valid.to(matrix.dtype)
    if pool == "cls":
        return matrix[:, 0] * keep
    rows = (matrix * keep.unsqueeze(2)).sum(1) / keep.sum(1, keepdim=True).clamp(min=1)
    return rows * keep


def _grid(tokens: int, shape: Sequence[int], token_grid, call: str) -> tuple[int, int, int]:
    """(rows, cols, leading class tokens) of the token layout of an image input."""
    _, h, w = shape
    if token_grid is not None:
        try:
            gh, gw = (int(v) for v in token_grid)
        except (TypeError, ValueError):
            raise ConfigError.bad_value(call, "token_grid", "(rows, cols) of patches",
                                        token_grid) from None
        if gh < 1 or gw < 1 or h % gh or w % gw or tokens - gh * gw not in (0, 1):
            raise ConfigError.bad_value(call, "token_grid", f"(rows, cols) dividing {h}x{w} "
                                        f"with rows*cols = {tokens} or {tokens - 1} tokens",
                                        token_grid)
        return gh, gw, tokens - gh * gw
    for extra in (0, 1):
        g = math.isqrt(tokens - extra)
        if g * g == tokens - extra and g and h % g == 0 and w % g == 0:
            return g, g, extra
    if tokens == h:
        return h, 1, 0              # one token per image row
    raise ConfigError.bad_value(call, "token_grid", f"(rows, cols) of the patch grid: "
                                f"{tokens} tokens don't tile a {h}x{w} image", None)


def to_input_space(scores: torch.Tensor, x: torch.Tensor, *, token_grid=None,
                   call: str = "explain.attention") -> torch.Tensor:
    """Token scores ``(N, T)`` as maps shaped like ``x``; each token's score spread evenly over
    its pixels (image) or given to its position (token ids, one token per feature)."""
    n, tokens = scores.shape
    if x.dim() == 2:
        if x.shape[1] == tokens:
            return scores.float()
        if x.shape[1] == tokens - 1:     # a class token the model prepends itself
            return scores[:, 1:].float()
        raise ConfigError.bad_value(call, "inputs", f"{tokens} features, one per token",
                                    tuple(x.shape))
    if x.dim() != 4:
        raise ConfigError.bad_value(call, "inputs", "token ids (N, L) or images (N, C, H, W)",
                                    tuple(x.shape))
    c, h, w = x.shape[1:]
    gh, gw, extra = _grid(tokens, x.shape[1:], token_grid, call)
    grid = scores[:, extra:].reshape(n, 1, gh, gw) / (c * (h // gh) * (w // gw))
    up = grid.repeat_interleave(h // gh, 2).repeat_interleave(w // gw, 3)
    return up.expand(n, c, h, w).float().contiguous()


def attention_relevance(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, *,
                        forward: Forward | None = None, pool: str = "mean",
                        token_grid=None, call: str = "study.saliency",
                        valid: torch.Tensor | None = None) -> torch.Tensor:
    """Chefer et al. (2021) gradient-weighted attention relevance of each input for its target
    class, shaped like ``x`` (see the module docstring)."""
    if pool not in POOLS:
        raise ConfigError.unknown_name(call, "pool", POOLS, pool)
    record = capture_attention(model, x, forward, call=call, param="method")
    chosen = record.logits.gather(1, targets.view(-1, 1).long()).sum()
    grads = torch.autograd.grad(chosen, record.attentions, allow_unused=True)
    grads = [torch.zeros_like(a) if g is None else g for a, g in zip(record.attentions, grads)]
    rel = gradient_weighted_relevance(record.attentions, grads, active=record.active)
    return to_input_space(token_scores(rel, pool, drop_identity=True, valid=valid), x,
                          token_grid=token_grid, call=call)


def attention_rollout(model: nn.Module, x: torch.Tensor, targets: torch.Tensor | None = None,
                      *, forward: Forward | None = None, pool: str = "mean", token_grid=None,
                      head_fusion: str = "mean", call: str = "study.saliency",
                      valid: torch.Tensor | None = None) -> torch.Tensor:
    """Rollout scores of each input shaped like ``x`` (class-agnostic: ``targets`` unused);
    ``valid`` (an attention mask) leaves padding out of the pooling."""
    if pool not in POOLS:
        raise ConfigError.unknown_name(call, "pool", POOLS, pool)
    record = capture_attention(model, x, forward, grad=False, call=call, param="method")
    roll = rollout(record.attentions, active=record.active, head_fusion=head_fusion)
    return to_input_space(token_scores(roll, pool, valid=valid), x, token_grid=token_grid,
                          call=call)
