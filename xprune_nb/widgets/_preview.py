"""What a prune would do, computed on a copy: the study and its model are never touched."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..errors import ConfigError
from ..metrics import count_macs, count_params
from ..pruning.selection import select_units

__all__ = ["PrunePreview", "preview_prune"]


@dataclass
class PrunePreview:
    """Units a prune would remove per group, and the predicted size of the model after it.

    Attributes
    ----------
    granularity : str
        ``"channel"`` (units are channels/neurons, removed for real) or ``"weight"`` (masked).
    rows : list of dict
        Per group: ``group``, ``layers`` (coupled layers), ``units`` (alive now), ``remove``,
        ``keep``.
    params, nonzero_params, macs : tuple of int
        (now, after) for the whole model.
    """

    granularity: str
    amount: float
    rows: list[dict] = field(default_factory=list)
    params: tuple[int, int] = (0, 0)
    nonzero_params: tuple[int, int] = (0, 0)
    macs: tuple[int, int] = (0, 0)

    @property
    def removed(self) -> int:
        return sum(r["remove"] for r in self.rows)

    def to_frame(self):
        """One row per group, as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.rows, columns=["group", "layers", "units", "remove", "keep"])

    def summary(self) -> str:
        unit = {"channel": "channels/neurons", "head": "attention heads"}.get(
            self.granularity, "weights")
        text = (f"Prune {100 * self.amount:.0f}% would remove {self.removed} {unit}: "
                f"params {self.params[0]} → {self.params[1]}")
        if self.granularity in ("weight", "head"):
            text += (f", nonzero {self.nonzero_params[0]} → {self.nonzero_params[1]}; MACs stay "
                     f"{self.macs[0]} (dense kernels multiply masked zeros too)")
        else:
            text += f", MACs {self.macs[0]} → {self.macs[1]}"
        return text + "."

    def _repr_html_(self) -> str:
        return f"<b>Preview</b>: {self.summary()}" + self.to_frame().to_html(index=False)


def preview_prune(study, amount: float, *, scope: str = "global", normalize: str | None = "mean",
                  layer_amounts: dict[str, float] | None = None, ignore: Sequence[str] = (),
                  **_ignored) -> PrunePreview:
    """Compute, on a copy, what ``study.prune(amount, ...)`` would remove from the current model.

    The selection is made by the same core function as :meth:`Study.prune` from the same scores,
    so the preview and the prune agree unit for unit. Extra keyword arguments of ``Study.prune``
    that do not change the first round (``steps``, ``retrain``...) are accepted and ignored.

    Examples
    --------
    >>> import xprune_nb as xp
    >>> study = xp.Study(xp.zoo.load("digits_cnn"), xp.datasets.load("digits"))
    >>> _ = study.score("magnitude")
    >>> p = preview_prune(study, 0.3)
    >>> p.params[1] < p.params[0] and len(study.history) == 1
    True
    """
    call = "Panel.preview"
    scores = study.scores_   # raises NotScoredError with "call study.score(...) first"
    if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not 0 <= amount < 1:
        raise ConfigError.bad_value(call, "amount", "a number in [0, 1)", amount)
    ignore = [ignore] if isinstance(ignore, str) else list(ignore)
    layer_amounts = dict(layer_amounts or {})
    for name in ignore + list(layer_amounts):
        if name not in scores.values:
            raise ConfigError.unknown_name(call, "layer name", scores.values, name)
    for name, frac in layer_amounts.items():
        if isinstance(frac, bool) or not isinstance(frac, (int, float)) or not 0 <= frac < 1:
            raise ConfigError.bad_value(call, f"layer_amounts[{name!r}]", "a number in [0, 1)",
                                        frac)
    values = {k: v for k, v in scores.values.items() if k not in ignore}
    example = study.data.train.X
    params, nonzero = count_params(study.model)
    macs = count_macs(study.model, example[:1], study.forward)
    if scores.granularity == "weight":
        from ..pruning.unstructured import alive_weights

        modules = dict(study.model.named_modules())
        alive = alive_weights({k: modules[k] for k in values})
        removal = select_units(values, amount, scope=scope, normalize=normalize,
                               layer_amounts=layer_amounts, alive=alive, call=call)
        lost = 0
        for key, idx in removal.items():
            weight = modules[key].weight.detach().flatten()
            lost += int((weight[idx] != 0).sum())
        rows = [{"group": k, "layers": k, "units": int(alive[k].sum()),
                 "remove": len(removal.get(k, ())),
                 "keep": int(alive[k].sum()) - len(removal.get(k, ()))} for k in values]
        return PrunePreview("weight", amount, rows, (params, params), (nonzero, nonzero - lost),
                            (macs, macs))
    if scores.granularity == "head":
        from .._model import copy_model
        from ..pruning.heads import alive_heads, apply_head_removal

        model = copy_model(study.model)
        modules = {k: m for k, m in model.named_modules() if k in values}
        alive = alive_heads(modules)
        removal = select_units(values, amount, scope=scope, normalize=normalize,
                               layer_amounts=layer_amounts, alive=alive, call=call)
        apply_head_removal(modules, removal)
        _, after_nonzero = count_params(model)
        rows = [{"group": k, "layers": k, "units": int(alive[k].sum()),
                 "remove": len(removal.get(k, ())),
                 "keep": int(alive[k].sum()) - len(removal.get(k, ()))} for k in values]
        return PrunePreview("head", amount, rows, (params, params), (nonzero, after_nonzero),
                            (macs, macs))
    from ..pruning.groups import apply_channel_plan

    removal = select_units(values, amount, scope=scope, normalize=normalize,
                           layer_amounts=layer_amounts, call=call)
    model = copy.deepcopy(study.model)
    apply_channel_plan(model, example[:2], {k: v.tolist() for k, v in removal.items()})
    after, after_nonzero = count_params(model)
    rows = [{"group": k, "layers": ", ".join(scores.groups.get(k, (k,))),
             "units": int(v.numel()), "remove": len(removal.get(k, ())),
             "keep": int(v.numel()) - len(removal.get(k, ()))} for k, v in values.items()]
    return PrunePreview("channel", amount, rows, (params, after), (nonzero, after_nonzero),
                        (macs, count_macs(model, example[:1], study.forward)))
