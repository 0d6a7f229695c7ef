"""The panel's preview: a thin call of :meth:`xprune_nb.Study.preview` (the core computes it)."""

from __future__ import annotations

from ...pruning.plan import PrunePreview

__all__ = ["PrunePreview", "preview_prune"]

_FIRST_ROUND = ("amount", "scope", "normalize", "layer_amounts", "ignore", "steps", "schedule",
                "retrain", "rewind", "recalibrate")


def preview_prune(study, amount: float, **prune_args) -> PrunePreview:
    """What ``study.prune(amount, **prune_args)`` would remove (its first round), on a copy.

    Examples
    --------
    >>> import xprune_nb as xp
    >>> study = xp.Study(xp.zoo.load("digits_cnn"), xp.datasets.load("digits"))
    >>> _ = study.score("magnitude")
    >>> p = preview_prune(study, 0.3)
    >>> p.params[1] < p.params[0] and len(study.history) == 1
    True
    """
    return study.preview(amount, **{k: v for k, v in prune_args.items() if k in _FIRST_ROUND})
