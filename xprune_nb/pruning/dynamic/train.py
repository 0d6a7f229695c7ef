"""Training for dynamic pruning: the branch classifier and the sliced paths' fine-tuning.

Both are deterministic under their seed (a private ``torch.Generator`` for shuffling) and leave
the trunk untouched: it is frozen, and the branch trains on its pooled features computed once.
"""

from __future__ import annotations

import torch
from torch import nn

from ...data.batch import batch_size, take
from ...models.mechanisms.model_tools import eval_mode
from .net import Branch, DynamicNet, crossing_mask
from .split import run_tail

__all__ = ["pooled_features", "train_branch", "finetune_paths"]


def pooled_features(trunk: nn.Module, branch: Branch, X, batch: int = 256) -> torch.Tensor:
    """The branch's input for every example: the trunk's first output, pooled and flattened
    (token features: averaged over the tokens the attention mask keeps)."""
    out = []
    with torch.no_grad():
        for i in range(0, batch_size(X), batch):
            values = trunk(take(X, slice(i, i + batch)))
            out.append(branch.features(values[0], crossing_mask(trunk, values)))
    return torch.cat(out)


def train_branch(branch: Branch, feats: torch.Tensor, y: torch.Tensor, *, epochs: int,
                 seed: int, lr: float = 1e-2, batch: int = 64) -> Branch:
    """Train the branch's linear layer on pooled trunk features (cross-entropy, Adam),
    deterministic under ``seed`` and without touching the global RNG."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(branch.fc.parameters(), lr=lr)
    branch.train()
    for _ in range(epochs):
        perm = torch.randperm(len(feats), generator=gen)
        for i in range(0, len(feats), batch):
            idx = perm[i:i + batch]
            loss = nn.functional.cross_entropy(branch.fc(feats[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return branch.eval()


def finetune_paths(net: DynamicNet, X, y: torch.Tensor, teacher: torch.Tensor,
                   *, epochs: int, seed: int, lr: float = 1e-3, batch: int = 64,
                   temperature: float = 2.0) -> None:
    """Fine-tune each sliced path, in place, on the training examples routed to it (early exits
    ignored, so any threshold can be used later): cross-entropy on the labels plus
    distillation from the dense model's logits ``teacher`` (temperature ``temperature``).
    The trunk and branch stay frozen; BatchNorm statistics stay as they are (eval mode), so a
    path's small groups do not skew them. Deterministic under ``seed``."""
    if epochs <= 0:
        return
    gen = torch.Generator().manual_seed(seed)
    opts = [torch.optim.Adam(p.parameters(), lr=lr) for p in net.paths]
    n = batch_size(X)
    with torch.no_grad(), eval_mode(net):
        route = torch.cat([net.route(take(X, slice(i, i + 256)))[3] for i in range(0, n, 256)])
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, batch):
            idx = perm[i:i + batch]
            with torch.no_grad():
                values = net.trunk(take(X, idx))
            for p in torch.unique(route[idx]).tolist():
                rows = (route[idx] == p).nonzero().squeeze(1)
                out = run_tail(net.paths[p], [v[rows] for v in values])
                soft = nn.functional.log_softmax(out / temperature, 1)
                target = nn.functional.softmax(teacher[idx][rows] / temperature, 1)
                loss = nn.functional.cross_entropy(out, y[idx][rows]) + temperature ** 2 * \
                    nn.functional.kl_div(soft, target, reduction="batchmean")
                opts[p].zero_grad()
                loss.backward()
                opts[p].step()
    net.eval()
