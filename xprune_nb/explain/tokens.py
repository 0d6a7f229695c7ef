"""Explanations of models that read token ids: attributions per token position, ids kept integer.

Gradients cannot flow into integer ids, and casting them to float breaks the embedding lookup,
so every method here attributes to the output of the model's ``nn.Embedding`` (found by the
forward pass: the embedding that reads the input ids) and sums over the embedding width:

``saliency``
    The gradient of the explained logit with respect to each token's embedding: its L2 norm
    (``abs=True``, Simonyan et al. 2014 for text) or gradient x embedding (``abs=False``).
``integrated_gradients``
    By default from a zero word embedding (Sundararajan et al. 2017 use "the all-zero input
    embedding vector" for text): captum's ``IntegratedGradients`` on the embedding output. A
    token id as baseline means a different word in every vocabulary (0 is ``[PAD]`` in BERT,
    ``<s>`` in RoBERTa, ``!`` in GPT-2), and a baseline equal to many of the input's own tokens
    leaves their maps empty; the zero embedding is "no word" for every model. With
    ``baseline_token=id``, captum's ``LayerIntegratedGradients`` from a sequence of that id
    instead. Complete: per input, the token scores sum to ``f(x) - f(baseline)``; the gap is
    reported as ``completeness``.
``attention_relevance``, ``attention_rollout``
    From the attention probabilities (:mod:`xprune_nb.models.mechanisms.attention.maps`), one score
    per token.
``shapley``
    Shapley values of token positions: a coalition keeps its tokens and replaces the others by
    ``baseline_token`` (default: the model's padding id, :func:`default_token`). ``exact``
    enumerates every coalition (up to 12 tokens); ``permutation`` averages marginal
    contributions over seeded random orders, each also walked in reverse (antithetic); both
    are efficient (values sum to ``f(x) - f(baseline)``) by construction.

Examples
--------
>>> import torch
>>> from torch import nn
>>> net = nn.Sequential(nn.Embedding(10, 4), nn.Flatten(), nn.Linear(12, 2))
>>> ids = torch.tensor([[1, 2, 3]])
>>> scores, gap = token_attribution(net, ids, torch.tensor([0]), "integrated_gradients")
>>> scores.shape, bool(abs(gap[0]) < 1e-4)
((1, 3), True)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..core.errors import ConfigError, MissingDependencyError
from ..models.mechanisms.model_tools import call_model, eval_mode, logits_of

__all__ = ["TOKEN_METHODS", "embedding_layer", "check_float_inputs", "token_attribution",
           "default_token", "token_inputs", "TokenInputs"]

Forward = Callable[[nn.Module, torch.Tensor], torch.Tensor]

#: method -> options it accepts (``vocab`` is for display, accepted by every method)
TOKEN_METHODS: dict[str, tuple[str, ...]] = {
    "saliency": ("abs", "layer"),
    "integrated_gradients": ("n_steps", "baseline_token", "internal_batch_size", "layer",
                             "method"),
    "attention_relevance": ("pool",),
    "attention_rollout": ("pool", "head_fusion"),
}
def _default_forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return logits_of(call_model(model, x))


class _Found(Exception):
    """Stops a probing forward pass at the embedding that reads the inputs."""


def embedding_layer(model: nn.Module, ids: torch.Tensor, forward: Forward | None = None, *,
                    layer: str | None = None, call: str = "study.saliency") -> nn.Embedding:
    """The ``nn.Embedding`` that reads ``ids`` (the first one run on exactly these ids), or the
    module named ``layer``.

    Raises
    ------
    ConfigError
        ``layer`` is not an embedding of the model, or no embedding reads the ids.
    """
    modules = dict(model.named_modules())
    if layer is not None:
        if not isinstance(modules.get(layer), nn.Embedding):
            names = [n for n, m in modules.items() if isinstance(m, nn.Embedding)]
            raise ConfigError.unknown_name(call, "layer", names, layer)
        return modules[layer]
    forward = forward or _default_forward
    tokens = token_inputs(ids, call)
    probe = tokens.ids[:1]
    fed = tokens.feed(probe, torch.zeros(1, dtype=torch.long))

    def pre(module, args):
        if args and isinstance(args[0], torch.Tensor) and args[0].shape == probe.shape \
                and torch.equal(args[0], probe):
            raise _Found(module)

    handles = [m.register_forward_pre_hook(pre) for m in modules.values()
               if isinstance(m, nn.Embedding)]
    try:
        with torch.no_grad(), eval_mode(model):
            forward(model, fed)
    except _Found as hit:
        return hit.args[0]
    finally:
        for h in handles:
            h.remove()
    raise ConfigError.bad_value(call, "layer", "the name of the nn.Embedding that reads the "
                                "token ids (none reads them directly)", None)


def check_float_inputs(model: nn.Module, x: torch.Tensor, forward: Forward | None = None, *,
                       call: str = "study.saliency", param: str = "inputs") -> None:
    """Refuse float inputs that the model would feed to an ``nn.Embedding`` (token ids)."""
    if not x.is_floating_point() or not any(isinstance(m, nn.Embedding)
                                             for m in model.modules()):
        return
    forward = forward or _default_forward

    def pre(module, args):
        if args and isinstance(args[0], torch.Tensor) and args[0].is_floating_point():
            raise _Found(module)

    handles = [m.register_forward_pre_hook(pre) for m in model.modules()
               if isinstance(m, nn.Embedding)]
    try:
        with torch.no_grad(), eval_mode(model):
            forward(model, x[:1])
    except _Found:
        raise ConfigError.bad_value(call, param, "integer token ids (the model looks them up "
                                    "in an nn.Embedding; ids are never cast to float)",
                                    f"a {x.dtype} tensor") from None
    except Exception:   # noqa: BLE001 - any other failure is the normal path's to report
        return
    finally:
        for h in handles:
            h.remove()


def _check_ids(x: torch.Tensor, call: str) -> torch.Tensor:
    if x.is_floating_point() or x.dtype == torch.bool or x.dim() != 2 or not len(x):
        raise ConfigError.bad_value(call, "inputs", "integer token ids shaped (N, tokens)",
                                    f"{x.dtype} {tuple(x.shape)}")
    return x.long()


@dataclass
class TokenInputs:
    """Token inputs as users hold them: the ids, the other named inputs that go with them
    (``attention_mask``, ``token_type_ids``...; None for a bare tensor of ids) and which
    positions are real tokens (``attention_mask != 0``; all of them without a mask)."""

    ids: torch.Tensor
    extras: dict[str, torch.Tensor] | None
    valid: torch.Tensor

    def feed(self, ids: torch.Tensor, rows: torch.Tensor | None = None):
        """What the model takes for ``ids``, whose row ``j`` belongs to example ``rows[j]``
        (default: ``rows`` repeat ``0..N-1``, as captum's interpolation batches do)."""
        if self.extras is None:
            return ids
        n = len(self.ids)
        if rows is None:
            rows = torch.arange(n).repeat(max(len(ids) // n, 1))[: len(ids)]
        return {"input_ids": ids, **{k: v[rows] for k, v in self.extras.items()}}

    def bind(self, forward: Forward) -> Forward:
        """``forward`` on ids alone: the other named inputs are added row by row."""
        if self.extras is None:
            return forward
        return lambda model, ids: forward(model, self.feed(ids))


def token_inputs(x, call: str = "study.saliency") -> TokenInputs:
    """Split a tensor of ids or a dict / ``BatchEncoding`` (``input_ids`` plus optional
    ``attention_mask``, ``token_type_ids``...) into :class:`TokenInputs`.

    Examples
    --------
    >>> import torch
    >>> t = token_inputs({"input_ids": torch.tensor([[5, 6, 0]]),
    ...                   "attention_mask": torch.tensor([[1, 1, 0]])})
    >>> t.ids.tolist(), t.valid.tolist(), sorted(t.extras)
    ([[5, 6, 0]], [[True, True, False]], ['attention_mask'])
    """
    if isinstance(x, Mapping):
        if "input_ids" not in x:
            raise ConfigError.bad_value(call, "inputs", "token ids, or a dict / BatchEncoding "
                                        "with 'input_ids'", sorted(map(str, x)))
        ids = _check_ids(torch.as_tensor(x["input_ids"]), call)
        extras = {str(k): torch.as_tensor(v) for k, v in x.items()
                  if k != "input_ids" and isinstance(v, torch.Tensor)}
        for name, value in extras.items():
            if value.shape[:1] != ids.shape[:1]:
                raise ConfigError.bad_value(call, "inputs", f"{name!r} with one row per "
                                            "input_ids row", tuple(value.shape))
        mask = extras.get("attention_mask")
        valid = (mask != 0) if mask is not None and mask.shape == ids.shape else \
            torch.ones_like(ids, dtype=torch.bool)
        return TokenInputs(ids, extras, valid)
    ids = _check_ids(torch.as_tensor(x), call)
    return TokenInputs(ids, None, torch.ones_like(ids, dtype=torch.bool))


def _baseline(options: dict, call: str) -> int | None:
    """The ``baseline_token`` option: a token id, or None (the default, see
    :func:`default_token` and :func:`token_attribution`)."""
    token = options.get("baseline_token")
    if token is None:
        return None
    if isinstance(token, bool) or not isinstance(token, (int, np.integer)) or token < 0:
        raise ConfigError.bad_value(call, "baseline_token", "a token id >= 0 or None (the "
                                    "model's padding token)", token)
    return int(token)


def default_token(model: nn.Module, token: int | None = None) -> int:
    """The id that replaces removed tokens (deletion/insertion, Shapley coalitions): ``token``
    when given, else the model's own padding id (``config.pad_token_id``, e.g. 0 for BERT, 1 for
    RoBERTa), else 0.

    Examples
    --------
    >>> from torch import nn
    >>> default_token(nn.Linear(2, 2)), default_token(nn.Linear(2, 2), 5)
    (0, 5)
    """
    if token is not None:
        return int(token)
    pad = getattr(getattr(model, "config", None), "pad_token_id", None)
    return pad if isinstance(pad, int) and not isinstance(pad, bool) and pad >= 0 else 0


def _zero_embedding_ig(model, ids, targets, forward, emb, options):
    # ``forward`` is bound to the other named inputs (TokenInputs.bind)
    """Integrated gradients from a zero word embedding (Sundararajan et al. 2017, section 6.3:
    "the all-zero input embedding vector" for text): captum's ``IntegratedGradients`` on the
    embedding's output, which a forward hook feeds into the model; ids of the other inputs are
    repeated to match captum's batch of interpolation steps."""
    from captum.attr import IntegratedGradients

    with torch.no_grad():
        x_emb = emb(ids).detach()
    fed: dict[str, torch.Tensor] = {}
    handle = emb.register_forward_hook(lambda _m, _a, out: fed.get("e", out))

    def f(e):
        fed["e"] = e
        try:
            return forward(model, ids.repeat(len(e) // len(ids), 1))
        finally:
            fed.clear()

    try:
        with eval_mode(model):
            attr, delta = IntegratedGradients(f).attribute(
                x_emb, baselines=torch.zeros_like(x_emb), target=targets,
                return_convergence_delta=True, **options)
    finally:
        handle.remove()
    return attr.detach().sum(-1).double().numpy(), delta.detach().abs().double().numpy()


def _gradient(model, ids, targets, forward, emb, signed: bool) -> torch.Tensor:
    stash: list[torch.Tensor] = []

    def hook(module, args, out):
        # a leaf that requires grad, even if the model's weights are frozen
        leaf = out.detach().requires_grad_(True)
        stash.append(leaf)
        return leaf

    handle = emb.register_forward_hook(hook)
    try:
        with eval_mode(model), torch.enable_grad():
            logits = forward(model, ids)
            chosen = logits.gather(1, targets.view(-1, 1)).sum()
            (grad,) = torch.autograd.grad(chosen, stash[0])
    finally:
        handle.remove()
    if signed:
        return (grad * stash[0].detach()).sum(-1)
    return grad.norm(dim=-1)


def token_attribution(model: nn.Module, ids: torch.Tensor, targets: torch.Tensor,
                      method: str = "integrated_gradients", *, forward: Forward | None = None,
                      call: str = "study.saliency", **options
                      ) -> tuple[np.ndarray, np.ndarray | None]:
    """One score per token position ``(N, L)`` for ``targets``, and the signed completeness gap
    of integrated gradients (``sum - (f(x) - f(baseline))`` per input; ``None`` otherwise)."""
    if method not in TOKEN_METHODS:
        raise ConfigError.bad_value(call, "method", f"one of {list(TOKEN_METHODS)} for a model "
                                    "that reads token ids", method)
    # baseline_token is every method's: deletion/insertion start from it
    unknown = sorted(set(options) - set(TOKEN_METHODS[method]) - {"baseline_token"})
    if unknown:
        raise ConfigError(f"{call}(method={method!r}): unknown option(s) {unknown} for token "
                          f"inputs; options of {method!r} are: "
                          f"{', '.join(TOKEN_METHODS[method]) or 'none'} (and vocab).")
    tokens, targets = token_inputs(ids, call), targets.long()
    scores, gap = _attribute(model, tokens, targets, method, forward or _default_forward,
                             call, options)
    scores = np.asarray(scores, dtype=np.float64)
    scores[~tokens.valid.numpy()] = 0.0   # padding gets no attribution
    return scores, gap


def _attribute(model, tokens: TokenInputs, targets, method, forward, call, options):
    raw = forward
    ids, forward = tokens.ids, tokens.bind(forward)
    if method.startswith("attention_"):
        from ..models.mechanisms.attention import maps as attention

        options.pop("baseline_token", None)
        valid = tokens.valid if tokens.extras is not None else None
        maps = getattr(attention, method)(model, ids, targets, forward=forward, call=call,
                                          valid=valid, **options)
        return maps.detach().numpy(), None
    emb = embedding_layer(model, tokens.feed(ids) if tokens.extras else ids, raw,
                          layer=options.pop("layer", None), call=call)
    if method == "saliency":
        return _gradient(model, ids, targets, forward, emb,
                         signed=not options.get("abs", True)).numpy(), None
    try:
        from captum.attr import LayerIntegratedGradients
    except ImportError as exc:
        raise MissingDependencyError.for_package("captum", "Integrated gradients", "explain") \
            from exc
    token = _baseline(options, call)
    opts = {k: v for k, v in options.items() if k != "baseline_token"}
    if token is None:
        return _zero_embedding_ig(model, ids, targets, forward, emb, opts)
    base = torch.full_like(ids, token)
    with eval_mode(model):
        attr, delta = LayerIntegratedGradients(lambda t: forward(model, t), emb).attribute(
            ids, baselines=base, target=targets, return_convergence_delta=True, **opts)
    return attr.detach().sum(-1).double().numpy(), delta.detach().double().numpy()
