"""Token explanations that feed perturbed sequences to the model: Shapley values of token
positions and deletion/insertion curves (the gradient methods are in :mod:`.tokens`).

Both replace tokens by a baseline id (default: the model's padding id,
:func:`~xprune_nb.explain.tokens.default_token`); padding positions are never perturbed.

Examples
--------
>>> import torch
>>> from torch import nn
>>> net = nn.Sequential(nn.Embedding(10, 4), nn.Flatten(), nn.Linear(12, 2))
>>> values, base, fx, how = token_shapley(net, torch.tensor([[1, 2, 3]]), baseline_token=0)
>>> how, values.shape, bool(abs(values.sum() - (fx - base).sum()) < 1e-6)
('exact', (1, 3, 2), True)
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from ..core.errors import ConfigError
from ..models.mechanisms.model_tools import eval_mode
from .compare import map_reasons
from .tokens import Forward, _baseline, _default_forward, default_token, token_inputs

__all__ = ["token_shapley", "token_deletion_insertion"]

_EXACT_MAX_TOKENS = 12


def _outputs(model, forward, rows, batch: int = 4096) -> torch.Tensor:
    """Outputs on many rows (ids, or a dict of named inputs with the same rows), in chunks."""
    n = len(rows["input_ids"]) if isinstance(rows, Mapping) else len(rows)

    def part(i):
        return ({k: v[i:i + batch] for k, v in rows.items()} if isinstance(rows, Mapping)
                else rows[i:i + batch])

    with torch.no_grad(), eval_mode(model):
        return torch.cat([forward(model, part(i)).double() for i in range(0, n, batch)])


def token_shapley(model: nn.Module, ids: torch.Tensor, *, forward: Forward | None = None,
                  baseline_token: int | None = None, explainer: str = "auto",
                  permutations: int = 16,
                  seed: int = 0, output: str = "logits", call: str = "study.shapley"
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """Shapley values of token positions against ``baseline_token``.

    Returns
    -------
    values : ndarray (N, L, K)
    base : ndarray (N, K)
        ``f(baseline)``: each row's sequence of baseline tokens.
    fx : ndarray (N, K)
    explainer : str
        ``exact`` or ``permutation`` (``auto`` resolved: exact up to 10 tokens).
    """
    tokens = token_inputs(ids, call)
    ids = tokens.ids
    baseline_token = default_token(model, _baseline({"baseline_token": baseline_token}, call))
    if explainer not in ("auto", "exact", "permutation"):
        raise ConfigError.bad_value(call, "explainer", "'auto', 'exact' or 'permutation' for "
                                    "token inputs", explainer)
    if (isinstance(permutations, bool) or not isinstance(permutations, (int, np.integer))
            or permutations < 1):
        raise ConfigError.bad_value(call, "permutations", "an integer >= 1", permutations)
    if output not in ("logits", "probability"):
        raise ConfigError.unknown_name(call, "output", ("logits", "probability"), output)
    forward = forward or _default_forward
    if output == "probability":
        raw = forward
        forward = lambda m, t: torch.softmax(raw(m, t), dim=1)  # noqa: E731
    n, length = ids.shape
    if explainer == "auto":
        explainer = "exact" if length <= 10 else "permutation"
    if explainer == "exact" and length > _EXACT_MAX_TOKENS:
        raise ConfigError.bad_value(call, "explainer", f"'permutation' for {length} tokens "
                                    f"('exact' enumerates 2**tokens coalitions; at most "
                                    f"{_EXACT_MAX_TOKENS} tokens)", "exact")
    if explainer == "exact":
        masks = torch.tensor(list(itertools.product((0, 1), repeat=length)), dtype=torch.bool)
    else:
        rng = np.random.RandomState(seed)   # local: the caller's global state is untouched
        orders = [rng.permutation(length) for _ in range(int(permutations))]
        orders += [o[::-1] for o in orders]
        steps = []
        for order in orders:
            m = torch.zeros(length + 1, length, dtype=torch.bool)
            for k, pos in enumerate(order):
                m[k + 1:, pos] = True
            steps.append(m)
        masks = torch.cat(steps)
    values, bases, fxs = [], [], []
    for i, row in enumerate(ids):
        rows = torch.where(masks, row.expand_as(masks), torch.full_like(masks, baseline_token,
                                                                         dtype=torch.long))
        # padding is masked out by the model: its positions keep a value of 0 (efficiency
        # holds over the real tokens)
        fed = tokens.feed(rows, torch.full((len(rows),), i, dtype=torch.long))
        out = _outputs(model, forward, fed)                        # (coalitions, K)
        if explainer == "exact":
            # masks enumerate coalitions in binary order: position j is bit (length - 1 - j)
            code, size = torch.arange(len(masks)), masks.sum(1)
            weight = torch.tensor([math.factorial(s) * math.factorial(length - s - 1)
                                   / math.factorial(length) for s in range(length)],
                                  dtype=torch.float64)
            phi = torch.zeros(length, out.shape[1], dtype=torch.float64)
            for j in range(length):
                bit = 1 << (length - 1 - j)
                without = code[(code & bit) == 0]
                phi[j] = (weight[size[without]].unsqueeze(1)
                          * (out[without | bit] - out[without])).sum(0)
            base_out, fx = out[0], out[-1]
        else:
            walks = out.view(len(orders), length + 1, -1)
            phi = torch.zeros(length, out.shape[1], dtype=torch.float64)
            for order, walk in zip(orders, walks):
                phi[torch.as_tensor(order.copy())] += walk[1:] - walk[:-1]
            phi /= len(orders)
            base_out, fx = walks[0, 0], walks[0, -1]
        values.append(phi)
        bases.append(base_out)
        fxs.append(fx)
    return (torch.stack(values).numpy(), torch.stack(bases).numpy(), torch.stack(fxs).numpy(),
            explainer)


def token_deletion_insertion(model: nn.Module, ids: torch.Tensor, maps, targets, *,
                             forward: Forward | None = None,
                             baseline_token: int | None = None,
                             steps: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Deletion and insertion AUC (Petsiuk et al. 2018) over token positions: the most relevant
    tokens are replaced by (deletion) or restored from (insertion) ``baseline_token`` first;
    the curve is the target's softmax probability. Lower deletion / higher insertion = better.
    """
    forward = forward or _default_forward
    baseline_token = default_token(model, baseline_token)
    tokens = token_inputs(ids)
    ids, valid = tokens.ids, tokens.valid
    n, length = ids.shape
    rel = torch.nan_to_num(torch.as_tensor(np.asarray(maps, dtype=np.float64)).reshape(n, length))
    rel[~valid] = -math.inf   # padding is never deleted or inserted: it ranks last
    rank = torch.empty(n, length, dtype=torch.long)
    rank.scatter_(1, torch.argsort(-rel, dim=1, stable=True),
                  torch.arange(length).expand(n, length))
    fractions = torch.linspace(0, 1, steps + 1)
    real = valid.sum(1).view(n, 1, 1).double()      # fractions of each row's real tokens
    changed = rank.unsqueeze(1) < torch.round(fractions.view(1, -1, 1) * real).long()
    xs = ids.unsqueeze(1).expand(n, steps + 1, length)
    base = torch.full_like(xs, baseline_token)
    batch = torch.cat([torch.where(changed, base, xs), torch.where(changed, xs, base)])
    owner = torch.arange(n).view(1, n, 1).expand(2, n, steps + 1).reshape(-1)
    probs = torch.softmax(_outputs(model, forward, tokens.feed(batch.reshape(-1, length), owner)),
                          dim=1)
    probs = probs.reshape(2, n, steps + 1, -1)
    t = torch.as_tensor(np.asarray(targets)).long().view(1, n, 1, 1).expand(2, n, steps + 1, 1)
    curve = probs.gather(3, t).squeeze(3).numpy()
    width = np.diff(fractions.double().numpy())
    auc = ((curve[..., 1:] + curve[..., :-1]) / 2 * width).sum(axis=2)
    # a map that orders nothing (e.g. an empty map from a [PAD] baseline) has no curve of its own
    flat, real_tokens = np.asarray(maps, dtype=np.float64).reshape(n, length), valid.numpy()
    reasons = [map_reasons(row[v][None])[0] if v.any() else "no tokens"
               for row, v in zip(flat, real_tokens)]
    auc[:, np.array([bool(r) for r in reasons], dtype=bool)] = np.nan
    return auc[0], auc[1]
