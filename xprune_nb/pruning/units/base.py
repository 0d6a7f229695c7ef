"""The interface every unit kind implements, and what it is given to work with.

A *unit kind* (``weight``, ``channel``, ``head``, ``block``) is a strategy: it says which units
a model has (and why others cannot go), which of them are still alive, which layers the criteria's
hooks reach to score them, how a selection is applied (masks, or real surgery), how a recorded
structural change is replayed on a fresh copy of the original model, and what a prune would do
(preview). The :class:`~xprune_nb.Study` never branches on a granularity name: it asks the kind.

Adding a kind is one new module with a :class:`UnitKind` subclass plus one line in
``units/__init__.py`` (see ``docs/architecture.md``).
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from ...core.errors import PruneError

__all__ = ["ModelEnv", "Units", "UnitKind"]


@dataclass
class ModelEnv:
    """What a unit kind may know about the study's model, besides the model itself.

    Attributes
    ----------
    original : nn.Module
        The untouched original model (structural analyses are made on it once).
    example : torch.Tensor
        Two training inputs, to trace the model.
    forward : callable
        ``forward(model, x) -> logits``.
    output_layers : list of str
        The layers that produce the logits (never pruned unless asked).
    executed : set of str
        Conv/Linear layers whose ``forward()`` actually runs (hooks on the others never fire).
    num_logits : int
        Width of the logits; a structural change must keep it.
    analysis : dict
        Plain-data results of one-time analyses per kind (e.g. which channel groups can shrink
        safely), kept with the study and saved in study files.
    ran : set of str, optional
        Every module of ``original`` whose forward ran on ``example`` (the study's opening
        check records it in the same pass); ``None`` when not recorded.
    """

    original: nn.Module
    example: torch.Tensor
    forward: Callable[[nn.Module, torch.Tensor], torch.Tensor]
    output_layers: list[str]
    executed: set[str]
    num_logits: int
    analysis: dict[str, Any] = field(default_factory=dict)
    ran: set[str] | None = None
    #: the last model that passed :meth:`check_runs`, its module layout and its MACs per example
    #: (counted in the same pass; :meth:`checked_macs` hands them to the step's measurement)
    _checked: tuple | None = field(default=None, repr=False, compare=False)

    @classmethod
    def of(cls, original: nn.Module, example: torch.Tensor, forward, num_logits: int, *,
           output_layers: list[str] | None = None, executed: set[str] | None = None,
           analysis: dict | None = None, ran: set[str] | None = None) -> ModelEnv:
        """The environment of ``original``, finding its output and executed layers unless
        given (a loaded study passes the recorded ones)."""
        from ...models.mechanisms.fit_check import executed_layers, find_output_layers

        return cls(original=original, example=example, forward=forward,
                   output_layers=list(output_layers) if output_layers is not None
                   else find_output_layers(original, example, forward),
                   executed=set(executed) if executed is not None
                   else executed_layers(original, example, forward),
                   num_logits=num_logits, analysis=dict(analysis or {}),
                   ran=set(ran) if ran is not None else None)

    def ran_in(self, model: nn.Module) -> set[str] | None:
        """The modules of ``model`` that run on ``example``, known without a forward pass when
        ``model`` has the original's modules (same names and types: heads shrunk in place
        count, a block replaced or an attention module swapped does not); else ``None``."""
        if self.ran is None or model is not self.original and _layout(model) != _layout(
                self.original):
            return None
        return set(self.ran)

    def check_runs(self, model: nn.Module, call: str) -> None:
        """Raise :class:`PruneError` unless ``model`` still runs and keeps its logits.

        One input suffices (the opening check ran the original on two, so batching is known to
        work; surgery changes widths, not batching), and the same pass counts the model's MACs
        per example, which the step's measurement then takes (:meth:`checked_macs`) instead of
        a pass of its own. A model that runs but not under the MAC counter is run plainly.
        """
        from ...data.batch import take
        from ...measure.metrics import macs_of

        one, found = take(self.example, slice(0, 1)), {}
        self._checked = None
        try:
            with torch.no_grad():
                was = model.training
                model.eval()
                try:
                    try:
                        macs = macs_of(lambda: found.update(out=self.forward(model, one)))
                    except Exception:  # noqa: BLE001 - e.g. an op the counter cannot dispatch
                        macs, found["out"] = None, self.forward(model, one)
                finally:
                    model.train(was)
        except Exception as exc:  # noqa: BLE001 - any failure: the change broke the model
            raise PruneError(f"{call}: the pruned model no longer runs ({exc}); nothing was "
                             "changed. Ignore the layers involved.") from exc
        if found["out"].shape[-1] != self.num_logits:
            raise PruneError(f"{call}: pruning changed the number of logits; nothing was "
                             "changed.")
        if macs is not None:
            self._checked = (weakref.ref(model), _layout(model), macs)

    def checked_macs(self, model: nn.Module) -> int | None:
        """MACs per example of ``model`` counted by its :meth:`check_runs`, if no module of it
        was added, removed or replaced since (values do not change MACs); else ``None``."""
        if self._checked is None:
            return None
        ref, layout, macs = self._checked
        return macs if ref() is model and _layout(model) == layout else None


def _layout(model: nn.Module) -> list[tuple[str, type]]:
    return [(name, type(m)) for name, m in model.named_modules()]


@dataclass
class Units:
    """The prunable units of one model, as one kind sees them.

    Attributes
    ----------
    kind : str
        Name of the unit kind.
    groups : dict[str, tuple[str, ...]]
        Group key -> the layers it spans (a group is ranked as one: coupled channels, the heads
        of one attention module, the weights of one layer, one block).
    layers : dict[str, nn.Module]
        What the criteria's hooks reach, by name (``ScoringContext.layers``).
    sizes : dict[str, int]
        Units per group.
    skipped : dict[str, str]
        Layers or modules that cannot be pruned at this granularity, and why.
    detail : Any
        The kind's own data (e.g. torch-pruning's dependency graph), valid for this model only.
    """

    kind: str
    groups: dict[str, tuple[str, ...]]
    layers: dict[str, nn.Module]
    sizes: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    detail: Any = None


class UnitKind:
    """Base class of unit kinds; subclasses override what differs.

    Class attributes
    ----------------
    name : str
        The ``granularity=`` name users type.
    noun : str
        What a unit is called in messages ("channels/neurons", "weights"...).
    structural : bool
        True when :meth:`apply` really changes tensor shapes: it then returns a plain-data plan
        that :meth:`replay` applies to a fresh copy of the original model.
    speeds_up : bool
        False for masks: dense kernels multiply masked zeros too.
    score_as : str
        Which criterion method scores these units (``"channel"`` -> ``channel_scores``...).
    """

    name: ClassVar[str] = ""
    noun: ClassVar[str] = "units"
    structural: ClassVar[bool] = False
    speeds_up: ClassVar[bool] = False
    score_as: ClassVar[str] = ""

    # ------------------------------------------------------------------ discovery
    def find(self, model: nn.Module, env: ModelEnv, *, prune_output: bool = False) -> Units:
        """The prunable units of ``model`` (and what cannot be pruned, with why)."""
        raise NotImplementedError

    def offered(self, model: nn.Module, env: ModelEnv) -> bool:
        """Whether ``model`` has units of this kind, to offer it in a menu; kinds whose
        :meth:`find` is costly on a big model (a dependency graph and a trial) answer from the
        model's structure instead. A kind offered that then finds nothing says so when scored."""
        return bool(self.find(model, env).groups)

    def nothing_found(self, units: Units, call: str) -> str:
        """The message when a model has no unit of this kind."""
        why = f" (not prunable: {units.skipped})" if units.skipped else ""
        return f"{call}: the model has no {self.noun} that can be pruned{why}."

    def combine(self, units: Units, raw: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-layer criterion output -> one score tensor per group (default: as is)."""
        return {k: v.detach().float() for k, v in raw.items()}

    def alive(self, model: nn.Module, units: Units) -> dict[str, torch.Tensor] | None:
        """Boolean tensor per group: units still present (``None``: all of them)."""
        return None

    def keep_sets(self, units: Units) -> dict[str, list[list[int]]] | None:
        """Index sets per group of which a global ranking must leave one unit."""
        return None

    # ------------------------------------------------------------------ change
    def check(self, units: Units, removal: dict[str, torch.Tensor], call: str) -> None:
        """Refuse a selection that would break the model, before anything changes."""

    def apply(self, model: nn.Module, units: Units, removal: dict[str, torch.Tensor],
              env: ModelEnv) -> dict | None:
        """Remove ``removal[group]`` (unit indices) from ``model`` in place.

        Returns the plain-data plan to record when the change is structural, else ``None``.
        """
        raise NotImplementedError

    def replay(self, model: nn.Module, plan: dict, example: torch.Tensor,
               forward=None) -> nn.Module | None:
        """Apply a plan recorded by :meth:`apply` to ``model`` (a structural kind must);
        ``example`` is an input to trace the model with, ``forward(model, x) -> logits`` the
        study's (``None`` outside a study). Returns a new model when the kind wraps it (e.g.
        dynamic pruning), else ``None`` (changed in place)."""
        raise NotImplementedError(f"unit kind {self.name!r} records no structural plans")

    # ------------------------------------------------------------------ preview
    def preview(self, model: nn.Module, units: Units, removal: dict[str, torch.Tensor],
                env: ModelEnv) -> nn.Module:
        """The model a removal would give, on a copy (the study's model is never touched)."""
        trial = copy.deepcopy(model)
        trial_units = self.find(trial, env, prune_output=True)
        self.apply(trial, trial_units, removal, env)
        return trial

    def __repr__(self) -> str:
        return f"<unit kind {self.name!r}>"
