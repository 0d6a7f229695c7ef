"""What a prune removes: its validated configuration, the selection, and the preview.

``Study.prune``, the panel's preview and recipes all go through :func:`prune_config` (one set of
checks, one message shape) and :func:`select_removal` (one selection), so a preview and the prune
that follows agree unit for unit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from ..core.errors import ConfigError, PruneError
from ..core.params import check, validate
from ..core.scores import Scores
from ..measure.metrics import count_macs, count_params
from .schedules import step_fractions
from .selection import select_units
from .units import ModelEnv, UnitKind, Units

__all__ = ["PruneConfig", "prune_config", "select_removal", "units_for", "rewind_index",
           "round_kept",
           "PrunePreview",
           "preview_removal"]


@dataclass
class PruneConfig:
    """The validated arguments of one ``Study.prune`` call (plain data, recorded in its steps)."""

    amount: float
    scope: str = "global"
    normalize: str | None = "mean"
    layer_amounts: dict[str, float] = field(default_factory=dict)
    ignore: list[str] = field(default_factory=list)
    steps: int = 1
    schedule: str = "linear"
    retrain: dict | None = None
    rewind: int | str | None = None
    recalibrate: bool | None = None
    round_to: int | None = None

    def fractions(self) -> list[float]:
        """The fraction of the units alive at each round that the round removes."""
        return step_fractions(self.amount, self.steps, self.schedule)

    def round_layer_amounts(self) -> dict[str, float]:
        """Per-round fractions that compound to ``layer_amounts`` over ``steps`` rounds."""
        return {k: 1 - (1 - v) ** (1 / self.steps) for k, v in self.layer_amounts.items()}

    def to_dict(self) -> dict:
        return asdict(self)

    def call(self) -> dict:
        """The ``Study.prune`` arguments as given (a recipe's ``prune`` step)."""
        out = self.to_dict()
        if out["retrain"] is not None:
            out["retrain"] = dict(out["retrain"])
        return out


_RETRAIN_KEYS = ("epochs", "lr", "optimizer", "batch_size", "weight_decay", "seed",
                 "recalibrate", "recalibrate_samples", "steps_per_epoch")


def prune_config(call: str, scores: Scores, amount: float, *, scope: str = "global",
                 normalize: str | None = "mean", layer_amounts: dict | None = None,
                 ignore: Sequence[str] | str = (), steps: int = 1, schedule: str = "linear",
                 retrain: dict | None = None, rewind=None, recalibrate=None,
                 round_to: int | None = None) -> PruneConfig:
    """Check every argument of a prune against the parameter table and the scores."""
    validate(call, amount=amount, scope=scope, normalize=normalize, steps=steps,
             schedule=schedule, recalibrate=recalibrate, round_to=round_to)
    if round_to is not None and scores.granularity != "channel":
        raise ConfigError(f"{call}(round_to={round_to!r}): rounding the channels kept applies "
                          f"to granularity='channel' only; these scores are "
                          f"{scores.granularity!r} (use round_to=None).")
    valid = set(scores.values)
    if isinstance(ignore, str):
        ignore = [ignore]
    if not isinstance(ignore, (list, tuple, set)) or not all(isinstance(n, str) for n in ignore):
        raise ConfigError.bad_value(call, "ignore", "a group name or a list of group names",
                                    ignore)
    ignore = list(ignore)
    if layer_amounts is not None and not isinstance(layer_amounts, dict):
        raise ConfigError.bad_value(call, "layer_amounts", "a dict {group: fraction}",
                                    layer_amounts)
    layer_amounts = dict(layer_amounts or {})
    for name in ignore + list(layer_amounts):
        if name not in valid:
            raise ConfigError.unknown_name(call, "layer name", valid, name)
    for name, frac in layer_amounts.items():
        check(call, f"layer_amounts[{name!r}]", frac, _fraction())
    check_retrain_args(call, retrain)
    return PruneConfig(amount=amount, scope=scope, normalize=normalize,
                       layer_amounts=layer_amounts, ignore=ignore, steps=steps,
                       # recalibrate recorded (None = the default) so that a replay knows
                       # this call is newer than BatchNorm recalibration after retraining
                       schedule=schedule,
                       retrain={"recalibrate": None, **retrain} if retrain else None,
                       rewind=rewind, recalibrate=recalibrate, round_to=round_to)


def check_retrain_args(call: str, retrain: dict | None) -> None:
    """``retrain=`` of a prune or an auto-prune: ``Study.retrain`` arguments, checked now."""
    if retrain is None:
        return
    if not isinstance(retrain, dict):
        raise ConfigError.bad_value(call, "retrain", "a dict of Study.retrain arguments",
                                    retrain)
    for key in retrain:
        if key not in _RETRAIN_KEYS:
            raise ConfigError.unknown_name(call, "retrain", _RETRAIN_KEYS, key)
    validate(f"{call}(retrain=...)", **{k: v for k, v in retrain.items() if k != "seed"})
    if retrain.get("seed") is not None:
        check(f"{call}(retrain=...)", "seed", retrain["seed"])


def _fraction():
    from ..core.params import PARAMS

    return PARAMS["amount"]


def select_removal(kind: UnitKind, model: nn.Module, units: Units, scores: Scores,
                   fraction: float, cfg: PruneConfig, layer_amounts: dict[str, float],
                   call: str, refuse_empty: bool = True) -> dict[str, torch.Tensor]:
    """The units one round removes: least important first, never emptying a group.

    Refuses (PruneError) a round that would remove nothing, saying how many units the smallest
    non-empty round would remove.
    """
    values = {k: v for k, v in scores.values.items() if k not in cfg.ignore}
    if not values:
        raise PruneError(f"{call}: every group is ignored, so nothing would be pruned; "
                         "ignore fewer groups.")
    removal = select_units(values, fraction, scope=cfg.scope, normalize=cfg.normalize,
                           layer_amounts=layer_amounts, alive=kind.alive(model, units),
                           keep_sets=kind.keep_sets(units), call=call)
    if cfg.round_to:
        removal = round_kept(removal, values, kind.alive(model, units), cfg.round_to)
    removal = {k: v for k, v in removal.items() if len(v)}
    if refuse_empty and not removal:
        alive = kind.alive(model, units)
        total = sum(int(alive[k].sum()) if alive else v.numel() for k, v in values.items())
        smallest = 1 / total if total else 1.0
        raise PruneError(
            f"{call}: amount={fraction!r} removes no {kind.noun} (there are {total} alive "
            f"in the groups considered; the smallest non-empty step removes 1 unit, about "
            f"amount={smallest:.3g}). Use a larger amount"
            + (f" or a smaller round_to (every group keeps a multiple of {cfg.round_to})."
               if cfg.round_to else "."))
    kind.check(units, removal, call)
    return removal


def round_kept(removal: dict[str, torch.Tensor], values: dict[str, torch.Tensor],
               alive: dict[str, torch.Tensor] | None, round_to: int) -> dict[str, torch.Tensor]:
    """Remove fewer units where needed so that every group keeps a multiple of ``round_to``
    (as Torch-Pruning's ``round_to``: dense kernels run fastest on channel counts that are
    multiples of 8 or 16); the units spared are the most important of those selected. A group
    smaller than ``round_to`` keeps all its units.

    Examples
    --------
    >>> r = round_kept({"g": torch.tensor([0, 1, 2])}, {"g": torch.tensor([.1, .2, .3, .4,
    ...                .5, .6, .7, .8, .9, 1.])}, None, 4)
    >>> r["g"].tolist()      # 10 units, 3 selected: 7 kept -> 8 kept, so remove only 2
    [0, 1]
    """
    out = {}
    for key, idx in removal.items():
        total = int(alive[key].sum()) if alive else values[key].numel()
        kept = total - len(idx)
        rounded = min(total, -(-kept // round_to) * round_to)
        drop = total - rounded
        if drop < len(idx):   # spare the most important of the selected units
            order = torch.argsort(values[key][idx].float(), stable=True)
            idx = torch.sort(idx[order[:drop]]).values
        out[key] = idx
    return out


def rewind_index(timeline, rewind, call: str) -> int | None:
    """``rewind=``: None, "original" (step 0) or an earlier step on the current path."""
    if rewind is None:
        return None
    if rewind == "original":
        return 0
    current = timeline.current
    if (isinstance(rewind, int) and not isinstance(rewind, bool) and 0 <= rewind <= current
            and timeline.is_ancestor(rewind, current)):
        return rewind
    raise ConfigError.bad_value(call, "rewind", "None, 'original' or the index of an earlier "
                                f"step on the path to the current step {current}", rewind)


def units_for(kind: UnitKind, model: nn.Module, env: ModelEnv, scores: Scores,
              current: int) -> Units:
    """The units ``scores`` were made on, while still valid for ``model`` (saves finding them
    again, e.g. building torch-pruning's dependency graph twice); else found anew."""
    scored_model, found = getattr(scores, "_units", (None, None))
    # valid only for the very model object scored (a rollback rebuilds a new one) and while the
    # kind's own data (e.g. a dependency graph) has not been used up by a removal
    if scored_model is model and found.detail is not None and scores.step == current:
        return found
    return kind.find(model, env, prune_output=bool(scores.options.get("prune_output")))


@dataclass
class PrunePreview:
    """Units a prune would remove per group, and the predicted size of the model after it.

    Attributes
    ----------
    granularity : str
        The unit kind.
    rows : list of dict
        Per group: ``group``, ``layers``, ``units`` (alive now), ``remove``, ``keep``.
    params, nonzero_params, macs : tuple of int
        (now, after) for the whole model.
    """

    granularity: str
    amount: float
    rows: list[dict] = field(default_factory=list)
    params: tuple[int, int] = (0, 0)
    nonzero_params: tuple[int, int] = (0, 0)
    macs: tuple[int, int] = (0, 0)
    speeds_up: bool = True
    noun: str = "units"

    @property
    def removed(self) -> int:
        return sum(r["remove"] for r in self.rows)

    def to_frame(self):
        """One row per group, as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.rows, columns=["group", "layers", "units", "remove", "keep"])

    def summary(self) -> str:
        text = (f"Prune {100 * self.amount:.0f}% would remove {self.removed} {self.noun}: "
                f"params {self.params[0]} → {self.params[1]}")
        if not self.speeds_up:
            text += (f", nonzero {self.nonzero_params[0]} → {self.nonzero_params[1]}; MACs stay "
                     f"{self.macs[0]} (dense kernels multiply masked zeros too)")
        else:
            text += f", MACs {self.macs[0]} → {self.macs[1]}"
        return text + "."

    def _repr_html_(self) -> str:
        import html

        return (f"<b>Preview</b>: {html.escape(self.summary())}"
                + self.to_frame().to_html(index=False))


def preview_removal(kind: UnitKind, model: nn.Module, env: ModelEnv, units: Units,
                    scores: Scores, cfg: PruneConfig, call: str) -> PrunePreview:
    """What the first round of ``cfg`` would remove, computed on a copy of ``model``."""
    fraction = cfg.fractions()[0]
    removal = select_removal(kind, model, units, scores, fraction, cfg,
                             cfg.round_layer_amounts(), call)
    example = env.example[:1]
    params, nonzero = count_params(model)
    macs = count_macs(model, example, env.forward)
    trial = kind.preview(model, units, removal, env)   # on a copy
    after, after_nonzero = count_params(trial)
    alive = kind.alive(model, units)
    rows = []
    for key, v in scores.values.items():
        if key in cfg.ignore:
            continue
        n = int(alive[key].sum()) if alive else int(v.numel())
        gone = len(removal.get(key, ()))
        rows.append({"group": key, "layers": ", ".join(units.groups.get(key, (key,))),
                     "units": n, "remove": gone, "keep": n - gone})
    return PrunePreview(kind.name, cfg.amount, rows, (params, after), (nonzero, after_nonzero),
                        (macs, count_macs(trial, example, env.forward)), kind.speeds_up,
                        kind.noun)
