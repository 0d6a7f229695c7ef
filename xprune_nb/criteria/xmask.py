"""X-Pruner-style explainability-aware masks: a learned soft mask per unit and per class.

For each class ``c`` a mask ``m_c = sigmoid(theta_c)`` over the units (channels of each scored
layer, heads of each attention module, or blocks) is learned on the frozen model, from the
reference examples of class ``c``, by minimising

``CE(masked model on class c) + sparsity * mean(m_c) + smoothness * mean(H(m_c))``

where ``H`` is the binary entropy: the sparsity term switches off what the class does not need,
the entropy term makes each unit's mask a decision (near 0 or 1) rather than a half-open gate.
A unit a class relies on keeps a high mask for that class; the importance of a unit is its mask
averaged over classes, weighted by how many reference examples each class has.

Gates enter the model only through forward hooks that are removed afterwards
(:mod:`xprune_nb.criteria._xmask_gates`), so the model's weights never change.
"""

from __future__ import annotations

import math
import weakref
from numbers import Integral, Real

import torch
import torch.nn.functional as F

from ..core.errors import ConfigError
from ..data.batch import take
from ._xmask_gates import gates_for
from .base import Criterion, ScoringContext

__all__ = ["XMaskCriterion", "plot_class_masks"]

#: starting logit of every mask: sigmoid(3) = 0.95, a nearly unmasked model, so the first
#: gradients are those of the trained model and not of a half-silenced one
_INIT = 3.0
#: seeded jitter of the starting logits: units a class treats alike do not tie by index
_JITTER = 1e-3

_LIMITS = {
    "steps": ("an integer in [1, 10000]", 1, 10_000),
    "lr": ("a finite number in (0, 10]", 0.0, 10.0),
    "sparsity": ("a finite number in [0, 100]", 0.0, 100.0),
    "smoothness": ("a finite number in [0, 100]", 0.0, 100.0),
}


class XMaskCriterion(Criterion):
    """Explainability-aware class-wise masks (X-Pruner, Yu & Xiang, CVPR 2023).

    For every class present in the reference set, a soft mask ``sigmoid(theta_c)`` over all
    units is trained on the frozen model with ``steps`` Adam steps at ``lr`` on the class's
    examples (cross-entropy of the masked model + ``sparsity`` × mean mask + ``smoothness`` ×
    mean binary entropy of the mask). Scores are the masks averaged over classes weighted by
    their number of reference examples; ``scores.per_class`` holds the masks themselves
    (``NaN`` rows for classes without reference examples), which :func:`plot_class_masks`
    draws and ``study.why`` reports as ``relevance[<class>]``.

    Granularities: ``channel`` (the output units of each Conv/Linear layer), ``head`` (every
    attention style the head kind finds) and ``block``. Deterministic under the study's seed.
    Cost: ``steps`` forward+backward passes over the reference set.

    Parameters
    ----------
    steps : int, default 50
        Adam steps (each one pass over every class's reference examples).
    lr : float, default 0.1
        Adam's learning rate on the mask logits.
    sparsity : float, default 1.0
        Weight of the mean mask (pushes masks the class does not need towards 0).
    smoothness : float, default 0.1
        Weight of the mean binary entropy of the mask (pushes masks to 0/1 decisions).

    Examples
    --------
    >>> from xprune_nb.criteria import create
    >>> create("xmask", steps=20).params["steps"]
    20
    >>> study.score("xmask", granularity="head")        # doctest: +SKIP
    >>> plot_class_masks(study.scores_)                 # doctest: +SKIP
    """

    name = "xmask"
    granularities = ("channel", "head", "block")
    options = {"steps": 50, "lr": 0.1, "sparsity": 1.0, "smoothness": 0.1}
    class_aware = True
    reference = ("Yu & Xiang, X-Pruner: eXplainable Pruning for Vision Transformers, "
                 "CVPR 2023")

    def __init__(self, **options) -> None:
        super().__init__(**options)
        call = f"Study.score({self.name!r})"
        for key, (allowed, low, high) in _LIMITS.items():
            value = self.params[key]
            if key == "steps":
                ok = (isinstance(value, Integral) and not isinstance(value, bool)
                      and low <= value <= high)
            else:
                ok = (isinstance(value, Real) and not isinstance(value, bool)
                      and math.isfinite(value) and low <= value <= high
                      and (key != "lr" or value > 0))
            if not ok:
                raise ConfigError.bad_value(call, key, allowed, value)

    # ---------------------------------------------------------------- learning
    def _masks(self, ctx: ScoringContext) -> tuple[dict[str, torch.Tensor],
                                                   dict[str, torch.Tensor]]:
        """(overall, per class) masks per name; learned once per context and model."""
        cached = getattr(self, "_last", None)
        if (cached is not None and cached[0]() is ctx and cached[1]() is ctx.model
                and cached[2] == ctx.granularity):
            return cached[3]
        result = learn_masks(ctx, **self.params)
        self._last = (weakref.ref(ctx), weakref.ref(ctx.model), ctx.granularity, result)
        return result

    def channel_scores(self, ctx: ScoringContext) -> dict[str, torch.Tensor]:
        return self._masks(ctx)[0]

    def per_class_channel_scores(self, ctx: ScoringContext) -> dict[str, torch.Tensor]:
        return self._masks(ctx)[1]

    def head_scores(self, ctx: ScoringContext) -> dict[str, torch.Tensor]:
        return self._masks(ctx)[0]

    def per_class_head_scores(self, ctx: ScoringContext) -> dict[str, torch.Tensor]:
        return self._masks(ctx)[1]

    def block_scores(self, ctx: ScoringContext) -> dict[str, torch.Tensor]:
        return {k: v.reshape(()) for k, v in self._masks(ctx)[0].items()}

    def per_class_block_scores(self, ctx: ScoringContext) -> dict[str, torch.Tensor]:
        # the block kind stacks {block: (classes,)} into (classes, blocks)
        return {k: v.reshape(-1) for k, v in self._masks(ctx)[1].items()}


def _class_batches(ctx: ScoringContext, classes: list[int]) -> dict[int, list[slice]]:
    """Per class, its reference rows in batches of at most ``ctx.batch_size``."""
    out = {}
    for c in classes:
        rows = torch.nonzero(ctx.targets == c).flatten()
        out[c] = [rows[i:i + ctx.batch_size] for i in range(0, len(rows), ctx.batch_size)]
    return out


class _Adam:
    """Adam (Kingma & Ba 2015; betas 0.9/0.999, eps 1e-8) on one tensor, in place.

    ``torch.optim.Adam`` would do the same, but constructing it imports ``torch._dynamo`` (about
    2.5 s on a first call), longer than scoring a small model's heads takes."""

    def __init__(self, param: torch.Tensor, lr: float) -> None:
        self.param, self.lr, self.t = param, lr, 0
        self.m = torch.zeros_like(param)
        self.v = torch.zeros_like(param)

    @torch.no_grad()
    def step(self, grad: torch.Tensor) -> None:
        self.t += 1
        self.m.mul_(0.9).add_(grad, alpha=0.1)
        self.v.mul_(0.999).addcmul_(grad, grad, value=0.001)
        m_hat = self.m / (1 - 0.9 ** self.t)
        v_hat = self.v / (1 - 0.999 ** self.t)
        self.param.sub_(self.lr * m_hat / (v_hat.sqrt() + 1e-8))


def _entropy(m: torch.Tensor) -> torch.Tensor:
    m = m.clamp(1e-6, 1 - 1e-6)
    return -(m * m.log() + (1 - m) * (1 - m).log())


def learn_masks(ctx: ScoringContext, *, steps: int, lr: float, sparsity: float,
                smoothness: float) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Train one mask per class present in ``ctx.targets`` on the frozen ``ctx.model``.

    Returns ``(overall, per_class)``: ``{name: (units,)}`` class-frequency-weighted mean masks
    and ``{name: (num_classes, units)}`` masks (``NaN`` rows for absent classes).

    Each step: for each class, the class's mask is copied into the gates, the class's examples
    give ``dCE/dm_c`` (batches of ``ctx.batch_size``, summed and divided by the class's size),
    then one Adam step on all logits with the regularisers. Adam is element-wise, so this equals
    one independent optimisation per class. Progress is reported once per step.
    """
    targets = ctx.targets.long()
    classes = sorted(int(c) for c in torch.unique(targets))
    counts = torch.tensor([int((targets == c).sum()) for c in classes], dtype=torch.float64)
    batches = _class_batches(ctx, classes)
    with gates_for(ctx.granularity)(ctx) as gates, torch.enable_grad():
        names = list(gates)
        sizes = [gates[n].numel() for n in names]
        gate_list = [gates[n] for n in names]
        generator = torch.Generator().manual_seed(int(ctx.seed))
        theta = (_INIT + _JITTER * torch.randn(len(classes), sum(sizes),
                                               generator=generator)).requires_grad_(True)
        adam = _Adam(theta, lr)
        for step in range(steps):
            ce_grad = torch.zeros_like(theta)
            with torch.no_grad():
                masks = torch.sigmoid(theta)
            for row, c in enumerate(classes):
                with torch.no_grad():
                    for gate, part in zip(gate_list, masks[row].split(sizes)):
                        gate.copy_(part)
                for idx in batches[c]:
                    logits = ctx.forward(ctx.model, take(ctx.inputs, idx))
                    loss = F.cross_entropy(logits, targets[idx], reduction="sum")
                    grads = torch.autograd.grad(loss / counts[row].item(), gate_list,
                                                allow_unused=True)
                    ce_grad[row] += torch.cat([torch.zeros(s) if g is None else g.reshape(-1)
                                               for g, s in zip(grads, sizes)])
            m = torch.sigmoid(theta)
            # chain rule through the gates: d(CE)/d(theta) = dCE/dm * dm/dtheta
            objective = ((m * ce_grad).sum() + sparsity * m.mean(1).sum()
                         + smoothness * _entropy(m).mean(1).sum())
            adam.step(torch.autograd.grad(objective, theta)[0])
            if ctx.progress is not None:
                ctx.progress(step + 1, steps)
    final = torch.sigmoid(theta.detach()).double()
    weights = (counts / counts.sum())[:, None]
    overall_flat = (weights * final).sum(0)
    table = torch.full((ctx.num_classes, final.shape[1]), float("nan"), dtype=torch.float64)
    table[torch.tensor(classes)] = final
    overall, per_class = {}, {}
    for name, part, rows in zip(names, overall_flat.split(sizes), table.split(sizes, dim=1)):
        overall[name] = part.float()
        per_class[name] = rows.float()
    return overall, per_class


def plot_class_masks(scores, ax=None, *, class_names=None):
    """Class x unit heat map of the learned masks in ``scores.per_class``; returns the axes.

    Units are laid out group after group (thin white lines separate groups); classes without
    reference examples are blank.

    Examples
    --------
    >>> import torch
    >>> from xprune_nb.core.scores import Scores
    >>> s = Scores("xmask", "head", {"attn": torch.tensor([0.9, 0.2])},
    ...            per_class={"attn": torch.tensor([[0.95, 0.1], [0.85, 0.3]])})
    >>> plot_class_masks(s).get_ylabel()
    'class'
    """
    import matplotlib.pyplot as plt
    import numpy as np

    if not getattr(scores, "per_class", None):
        raise ConfigError.bad_value("plot_class_masks", "scores",
                                    "scores of a class-aware criterion such as 'xmask' "
                                    "(with per_class masks)", scores)
    names = list(scores.per_class)
    tables = [scores.per_class[n].double().reshape(scores.per_class[n].shape[0], -1).numpy()
              for n in names]
    k = max(t.shape[0] for t in tables)
    grid = np.concatenate([np.pad(t, ((0, k - t.shape[0]), (0, 0)), constant_values=np.nan)
                           for t in tables], axis=1)
    if ax is None:
        _, ax = plt.subplots(figsize=(min(14, 2 + 0.12 * grid.shape[1]), 1 + 0.3 * k))
    image = ax.imshow(grid, aspect="auto", interpolation="nearest", cmap="viridis",
                      vmin=0.0, vmax=1.0)
    edges = np.cumsum([t.shape[1] for t in tables])[:-1]
    for edge in edges:
        ax.axvline(edge - 0.5, color="white", linewidth=1)
    centers = np.concatenate([[0], edges]) + np.array([t.shape[1] for t in tables]) / 2 - 0.5
    ax.set_xticks(centers, names, rotation=45, ha="right", fontsize=8)
    labels = class_names if class_names is not None and len(class_names) >= k else range(k)
    ax.set_yticks(range(k), [str(c) for c in list(labels)[:k]])
    ax.set_ylabel("class")
    ax.set_xlabel(f"{scores.granularity} units, by group")
    ax.set_title(f"{scores.criterion}: class-wise masks")
    ax.figure.colorbar(image, ax=ax, label="mask")
    return ax
