"""Skip criterion: a block matters as much as the accuracy the model loses without it."""

from __future__ import annotations

import torch

from .base import Criterion, ScoringContext

__all__ = ["SkipCriterion"]


class SkipCriterion(Criterion):
    """Measured accuracy drop on the reference set when each block alone is skipped.

    The most direct answer to "can this block go?": each removable block is replaced by its
    skip connection in turn (a hook hands its input on; the model is restored after each
    trial) and the reference examples are classified again. The cost is one forward pass over
    the reference set per block. Blocks whose removal costs nothing (or helps) score lowest.

    References
    ----------
    Veit, Wilber, Belongie. Residual Networks Behave Like Ensembles of Relatively Shallow
    Networks. NeurIPS 2016 (lesion study: deleting single blocks of a ResNet).

    Examples
    --------
    >>> import xprune_nb as xp
    >>> study = xp.Study(xp.zoo.load("digits_resnet"), xp.datasets.load("digits"))
    >>> scores = study.score("skip", granularity="block", samples=64)
    >>> scores.granularity
    'block'
    """

    name = "skip"
    granularities = ("block",)
    reference = "Veit et al., NeurIPS 2016 (block lesions)"

    def block_scores(self, ctx: ScoringContext) -> dict[str, torch.Tensor]:
        from ._blocks import block_skip_drops

        return block_skip_drops(ctx)
