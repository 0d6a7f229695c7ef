"""The scorer interface every criterion implements, and what a scorer is given to work with."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from numbers import Integral
from typing import Any, ClassVar

import torch
from torch import nn

from ..core.errors import ConfigError
from ..data.batch import take

__all__ = ["Criterion", "ScoringContext", "GRANULARITIES"]

#: Granularities a criterion may support (``head``: heads of ``nn.MultiheadAttention``).
GRANULARITIES = ("weight", "channel", "head", "block")


@dataclass
class ScoringContext:
    """Everything a criterion may use. Criteria must leave ``model`` exactly as they found it.

    Attributes
    ----------
    model : nn.Module
        The model to score (in eval mode while scoring).
    granularity : str
        ``"channel"`` (score each output unit of ``layers``), ``"weight"`` (each weight) or
        ``"head"`` (each head of the ``nn.MultiheadAttention`` modules in ``layers``).
    layers : dict[str, nn.Module]
        The Conv/Linear layers (attention modules for ``head``) to score, by qualified name.
    inputs, targets : torch.Tensor
        The reference set: ``samples`` examples drawn stratified by class (only from
        ``classes`` when given) and their labels.
    classes : list[int] | None
        Classes whose relevance is wanted (explainability-aware criteria), or ``None`` for all.
    num_classes : int
    forward : callable
        ``forward(model, x) -> logits``; handles models that return tuples, dicts or objects.
    seed : int
        Seed for anything random the criterion does.
    batch_size : int
    progress : callable or None
        ``progress(done, total)`` after each batch; it may raise StoppedError to stop.
    """

    model: nn.Module
    granularity: str
    layers: dict[str, nn.Module]
    inputs: torch.Tensor
    targets: torch.Tensor
    classes: list[int] | None
    num_classes: int
    forward: Callable[[nn.Module, torch.Tensor], torch.Tensor]
    seed: int = 0
    batch_size: int = 64
    progress: Callable[[int, int], None] | None = None
    #: what the unit kind found (``Units``): kinds whose units are not layers (blocks) put what
    #: their criteria need in ``units.detail``
    units: Any = None
    #: evidence masks ``(N, H, W)`` of the reference examples, for criteria that read them
    #: (``wants_evidence``; built from the data's boxes by ``scoring.evidence_for``)
    evidence: Any = None
    #: sensitive-group codes ``(N,)`` of the reference examples (``Study(groups=...)``) and the
    #: groups' names; ``None`` for a study without groups
    groups: Any = None
    group_names: list[str] | None = None

    @property
    def num_batches(self) -> int:
        return (len(self.targets) + self.batch_size - 1) // self.batch_size

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Mini-batches of the reference set, reporting progress after each one."""
        total = self.num_batches
        for i in range(total):
            sl = slice(i * self.batch_size, (i + 1) * self.batch_size)
            # token inputs may be a dict / BatchEncoding: every named tensor is sliced alike
            yield take(self.inputs, sl), self.targets[sl]
            if self.progress is not None:
                self.progress(i + 1, total)


def _is_choice(value: Any, allowed: tuple) -> bool:
    """``value in allowed`` without Python's numeric coercions: ``True == 1`` and
    ``1.0 == 1`` would let ``p=True`` or ``signed=1.0`` through as another option."""
    for option in allowed:
        if isinstance(option, bool):
            ok = isinstance(value, bool) and value == option
        elif isinstance(option, Integral):
            ok = isinstance(value, Integral) and not isinstance(value, bool) and value == option
        else:
            ok = type(value) is type(option) and value == option
        if ok:
            return True
    return False


class Criterion:
    """Base class of importance criteria.

    A criterion has one job: given a :class:`ScoringContext`, return one importance tensor per
    layer: for ``channel`` granularity a 1-D tensor (one score per output unit), for ``weight``
    a tensor shaped like the layer's weight. Higher means more important. The Study combines
    coupled layers into groups, normalises and ranks; a criterion does none of that.

    Subclasses set ``name``, ``granularities``, ``options`` (name -> default) and, where an
    option takes one of a few values, ``choices``; they implement ``channel_scores`` and/or
    ``weight_scores``. The constructor only validates and stores options.
    """

    name: ClassVar[str] = ""
    granularities: ClassVar[tuple[str, ...]] = ("weight", "channel")
    options: ClassVar[dict[str, Any]] = {}
    choices: ClassVar[dict[str, tuple]] = {}
    needs_data: ClassVar[bool] = True
    class_aware: ClassVar[bool] = False
    #: refused on a study without sensitive groups (``ScoringContext.groups``)
    needs_groups: ClassVar[bool] = False
    #: only reads weights and never runs the model, so scoring skips its change check (two
    #: sweeps over every weight and buffer, about a second on a BERT-base); counts only where
    #: a class sets it itself, so a subclass that runs the model is checked again
    read_only: ClassVar[bool] = False
    reference: ClassVar[str] = ""

    @classmethod
    def for_call(cls, call: str, **options: Any) -> Criterion:
        """The criterion with ``options``, refusing bad ones in the name of ``call`` (e.g.
        ``Study.sensitivity``): options are validated the same way wherever they are passed,
        and the message names the call the user made."""
        try:
            return cls(**options)
        except ConfigError as exc:
            text = str(exc)
            if text.startswith("Study.score") and call != "Study.score":
                raise ConfigError(call + text[len("Study.score"):]) from None
            raise

    def __init__(self, **options: Any) -> None:
        call = f"Study.score({self.name!r})"
        unknown = set(options) - set(self.options)
        if unknown:
            allowed = ", ".join(sorted(self.options)) or "none"
            raise ConfigError(
                f"{call}: unknown option(s) {sorted(unknown)}; options of {self.name!r} "
                f"are: {allowed}."
            )
        values = {**self.options, **options}
        for key, allowed in self.choices.items():
            if not _is_choice(values[key], allowed):
                raise ConfigError.bad_value(call, key, f"one of {list(allowed)}", values[key])
        self.params = values

    def score(self, ctx: ScoringContext) -> dict[str, torch.Tensor]:
        """Scores per layer for ``ctx.granularity``."""
        if ctx.granularity == "channel":
            return self.channel_scores(ctx)
        if ctx.granularity == "head":
            return self.head_scores(ctx)
        return self.weight_scores(ctx)

    def channel_scores(self, ctx: ScoringContext) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def weight_scores(self, ctx: ScoringContext) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def head_scores(self, ctx: ScoringContext) -> dict[str, torch.Tensor]:
        """{attention module name: (heads,) tensor}; ``ctx.layers`` holds the
        ``nn.MultiheadAttention`` modules."""
        raise NotImplementedError

    def per_class_channel_scores(self, ctx: ScoringContext) -> dict[str, torch.Tensor] | None:
        """Optional: (classes, units) relevance per layer, for ``Study.why``."""
        return None

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({opts})"
