"""What every new step records about its model: metrics, masks and explanation drift.

Measuring is bounded so that a study of a big model stays responsive (the rules of
"Numbers that are not there" in DESIGN.md):

- MACs are counted once per structure (:class:`MeasureCache`): a retrain or a masked prune
  keeps the dense MACs of its parent.
- Accuracy (test and validation, per class and per group) is measured with the step when one
  evaluation of the measured samples is cheap (at most :data:`ACCURACY_EAGER_MACS`
  multiply-accumulates); above that the step records what its weights say (parameters, MACs,
  sparsity, size), lists ``"accuracy"`` in ``Step.pending``, and the first read of its
  ``metrics`` measures the rest (:func:`fill_accuracy`, with a progress bar). Opening a study
  of a big model and pruning it thus cost no pass over the evaluation data: Torch-Pruning's
  pruner measures nothing either.
- The original model's saliency on the probe set is computed once and reused by every step.
- Drift is measured with the step when one saliency pass over the probe is cheap (at most
  :data:`DRIFT_EAGER_MACS` multiply-accumulates forward); above that it is left for the first
  ask (:func:`fill_drift`, which :meth:`Study.drift` calls), and the step lists ``"drift"`` in
  ``Step.pending``: displays say "not measured yet" until then.
- Latency is never timed here: only ``evaluate(latency=True)`` and the panel's button time it.
"""

from __future__ import annotations

import json
import math
import threading
import weakref

import torch
from torch import nn

from ..core.history import NOT_MEASURED as _NOT_MEASURED
from ..core.history import Step
from .metrics import count_macs, evaluate_model, size_metrics

__all__ = ["measure_step", "fill_drift", "fill_accuracy", "attach_measurer", "MeasureCache",
           "structure_macs", "DRIFT_EAGER_MACS", "ACCURACY_EAGER_MACS", "NOT_MEASURED"]

#: one forward pass over the probe set may cost this many MACs for drift to be measured with
#: every step (about a second on one CPU core, forward and backward); bigger: on first ask
DRIFT_EAGER_MACS = 4e9

#: one evaluation of the measured test and validation samples may cost this many MACs for a
#: step's accuracy to be measured with it (0.2-0.3 s on one core here); bigger: on first ask
ACCURACY_EAGER_MACS = 1e10

#: the words every display shows for a number that is computed on first ask (its home is
#: core/history.py, next to ``Step.pending``, so the explanations use it too)
NOT_MEASURED = _NOT_MEASURED

#: probe inputs per saliency pass: peak memory is one chunk's activations and gradients
PROBE_CHUNK = 8


class MeasureCache:
    """What a study measured once and reuses: MACs per structure, the original's probe saliency.

    Examples
    --------
    >>> cache = MeasureCache()
    >>> cache.macs_for([], lambda: 42), cache.macs_for([], lambda: 0)
    (42, 42)

    ``original_macs``, when the opening check counted them, is the count of the original
    structure (``[]``), which then costs no pass of its own:

    >>> MeasureCache(original_macs=7).macs_for([], lambda: 42)
    7
    """

    def __init__(self, original_macs: int | None = None) -> None:
        self._macs: dict[str, int] = {}
        if original_macs is not None:
            self._macs[self._key([])] = int(original_macs)
        self.reference: tuple[torch.Tensor, torch.Tensor] | None = None
        #: one measurement on first ask at a time (the panel's thread and the kernel's may both
        #: read a step); re-entrant: a measurement reads the study
        self.filling = threading.RLock()

    @staticmethod
    def _key(structure: list) -> str:
        return json.dumps(structure, sort_keys=True, default=str)

    def macs_for(self, structure: list, count) -> int:
        """MACs of the model with this structure (``count()`` runs only the first time)."""
        key = self._key(structure)
        if key not in self._macs:
            self._macs[key] = int(count())
        return self._macs[key]


def _cache(study) -> MeasureCache:
    cache = getattr(study, "measure_cache", None)
    if cache is None:   # a study built before this cache existed (or a stand-in in tests)
        cache = study.measure_cache = MeasureCache()
    return cache


def structure_macs(study, structure: list, model: nn.Module) -> int:
    """MACs per example of ``model``, whose structure is ``structure``; counted once per
    structure (the step's measurement reuses the count), or taken from the surgery's "still
    runs" check, which counted them in its own pass over the same input."""
    def count() -> int:
        env = getattr(study, "env", None)
        checked = env.checked_macs(model) if env is not None else None
        return checked if checked is not None else count_macs(model, study.data.example(1),
                                                               study.forward)

    return _cache(study).macs_for(structure, count)


def drift_is_eager(study, macs: int) -> bool:
    """Whether drift is measured with each step (cheap probe) or on first ask."""
    return macs * max(len(study.probe_x), 1) <= DRIFT_EAGER_MACS


def accuracy_is_eager(study, macs: int) -> bool:
    """Whether a step's accuracy is measured with it (a cheap evaluation) or on first ask."""
    data = study.data
    examples = len(data.test) + (0 if data.val is data.test else len(data.val))
    return macs * max(examples, 1) <= ACCURACY_EAGER_MACS


def measure_step(study, step: Step, model: nn.Module, seconds: float = 0.0,
                 progress=None) -> None:
    """Fill ``step``'s metrics, per-class accuracy, masked layers and (when cheap) drift;
    ``progress(done, total)`` follows the evaluation's batches.

    On a big model (:func:`accuracy_is_eager` false) the accuracy is left for the first read
    of ``step.metrics`` (:func:`fill_accuracy`); the weights' numbers are recorded at once.
    Drift is measured on the study's fixed probe set against the original model (see
    :func:`xprune_nb.explain.drift.probe_drift`); without the explain extra it is left empty.
    """
    from ..models.mechanisms.masks import masked_layers

    dynamic = type(model).__name__ == "DynamicNet"   # its MACs depend on the input
    macs = None if dynamic else structure_macs(study, step.structure, model)
    step.pending = [p for p in step.pending if p not in ("drift", "accuracy")]
    if dynamic or accuracy_is_eager(study, macs):
        m = evaluate_model(model, study.data, study.forward, latency=False, macs=macs,
                           progress=progress, adaptive=input_adaptive_measure(model))
        _record(step, m)
    else:
        step.metrics = size_metrics(model, macs)
        step.per_class_accuracy, step.per_group_accuracy, step.val_per_group_accuracy = [], {}, {}
        step.pending.append("accuracy")
        attach_measurer(study, step)
        if progress is not None:   # what opening a big model measures: the weights' numbers
            progress(1, 1)
    step.masked = masked_layers(model)
    step.seconds = seconds
    step.drift = {}
    if drift_is_eager(study, _cache(study).macs_for(
            [], lambda: count_macs(study.original, study.data.example(1), study.forward))):
        step.drift = probe_drift_of(study, model, step.index)
    else:
        step.pending.append("drift")


def _record(step: Step, m) -> None:
    """Write a :class:`~xprune_nb.measure.metrics.Metrics` into the step's measured fields."""
    state = step.__dict__   # written as they are: reading them would measure again
    state["metrics"] = dict(m.as_dict())
    state["per_class_accuracy"] = m.per_class_accuracy
    state["per_group_accuracy"] = m.per_group_accuracy
    state["val_per_group_accuracy"] = m.val_per_group_accuracy


def _settle(step: Step, m) -> None:
    """Keep the measured :class:`~xprune_nb.measure.metrics.Metrics` of a step whose accuracy
    was pending (without latency, which steps never hold), and stop measuring on read."""
    _record(step, m)
    step.__dict__["metrics"] = {k: v for k, v in step.known().items()
                                if not k.startswith("latency_")}
    step.pending.remove("accuracy")
    step.measure_on_ask(None)


class _OnAsk:
    """Measures a step's pending accuracy when it is first read (held weakly: a step kept
    after its study is gone keeps the numbers it has)."""

    def __init__(self, study) -> None:
        self.study = weakref.ref(study)

    def __call__(self, step: Step) -> None:
        study = self.study()
        if study is not None:
            fill_accuracy(study, [step], progress=True)

    def __reduce__(self):
        # a pickle of the step's fields (``vars(step)``) carries no study: it reads as None
        return (type(None), ())


def attach_measurer(study, step: Step) -> None:
    """Have reading ``step.metrics`` measure its pending accuracy on ``study`` (a new step, or
    one of a loaded study)."""
    step.measure_on_ask(_OnAsk(study) if "accuracy" in step.pending else None)


def fill_accuracy(study, steps=None, progress=None) -> int:
    """Measure the accuracy of every step (or of ``steps``) that left it for the first ask.

    ``progress`` follows the progress protocol (``True``: a bar; one unit per evaluation
    batch, per step); returns how many steps were measured. A step's numbers are those its
    eager measurement would have recorded (same samples, same MACs).

    Examples
    --------
    >>> import xprune_nb as xp
    >>> from xprune_nb.measure import step as measure
    >>> measure.ACCURACY_EAGER_MACS, saved = 0, measure.ACCURACY_EAGER_MACS   # all "big"
    >>> study = xp.Study(xp.zoo.load("toy_mlp"), xp.datasets.load("moons"))
    >>> _ = study.score("magnitude")
    >>> step = study.prune(0.3)
    >>> step.pending, "accuracy" in step.known()
    (['accuracy'], False)
    >>> measure.fill_accuracy(study), step.pending, 0 <= step.metrics["accuracy"] <= 1
    (2, [], True)
    >>> measure.ACCURACY_EAGER_MACS = saved
    """
    from ..core.progress import make_progress

    with _cache(study).filling:
        todo = [s for s in (study.history if steps is None else steps)
                if "accuracy" in s.pending]
        for n, step in enumerate(todo, 1):
            tick = make_progress(progress, "Study: measure", f"measure step {step.index} "
                                 f"({n} of {len(todo)})")
            _settle(step, evaluate_model(study.timeline.reading_model(step.index), study.data,
                                         study.forward, latency=False,
                                         macs=step.known().get("macs"), progress=tick))
    return len(todo)


def input_adaptive_measure(model: nn.Module):
    """How to measure ``model`` when its MACs depend on its input (a dynamic model), else None."""
    if type(model).__name__ != "DynamicNet":
        return None
    # UP (measure -> pruning): a dynamic model's MACs and latency depend on the input, and its
    # own measurement lives with it; imported only for such a model
    from ..pruning.dynamic.eval import dynamic_metrics

    return dynamic_metrics


def probe_drift_of(study, model: nn.Module, index: int | None = None) -> dict:
    """Drift of ``model`` against the original on the study's probe, the original's saliency
    computed once per study; ``{}`` without the explain extra."""
    try:
        # UP (measure -> explain): the drift every step records is an explanation; imported
        # at call time so measuring does not load the explainers
        from ..explain.drift import probe_drift, probe_saliency
    except ImportError:   # explanations are an optional extra
        return {}
    cache = _cache(study)
    if cache.reference is None:
        cache.reference = probe_saliency(study.original, study.probe_x, study.probe_y,
                                         forward=study.forward, chunk=PROBE_CHUNK)
    # step 0 is the original itself: its own reference, no second pass
    return probe_drift(study.original, model, study.probe_x, study.probe_y,
                       forward=study.forward, reference=cache.reference,
                       same_as_reference=index == 0, chunk=PROBE_CHUNK)


def fill_drift(study, steps=None, progress=None) -> int:
    """Measure the drift of every step (or of ``steps``) that left it for the first ask.

    ``progress(done, total)`` is called after each step (the progress protocol); returns how
    many steps were measured. The model of each step is rebuilt from the history.
    """
    todo = [s for s in (study.history if steps is None else steps) if "drift" in s.pending]
    if progress is not None and todo:
        progress(0, len(todo))
    for i, step in enumerate(todo, 1):
        model = study.model if step.index == study.current else study.model_at(step.index)
        step.drift = probe_drift_of(study, model, step.index)
        step.pending = [p for p in step.pending if p != "drift"]
        if progress is not None:
            progress(i, len(todo))
    return len(todo)


def display(value, pending: bool, fmt: str = "{:.3f}") -> str:
    """A measured number for a display: the value, "not measured yet", or "n/a: ..."."""
    if pending:
        return NOT_MEASURED
    if isinstance(value, (int, float)) and math.isfinite(value):
        return fmt.format(value)
    return "n/a: not computable for this model"


def evaluate(study, *, latency: bool = False, step: int | None = None, progress=False,
             stop=None):
    """Measure the current model (or that of ``step``): accuracy and loss on test and
    validation, parameters, MACs, sparsity, size, and latency at batch 1 and 64 when asked.

    Parameters
    ----------
    latency : bool
        Time forward passes at batch 1 and 64 (each within a couple of seconds: repeats stop
        when the time budget is spent). ``False`` (the default) measures no time.
    step : int, optional
        Measure the model of this history step instead of the current one. A step of a big
        model whose accuracy was left for the first ask (``"accuracy"`` in ``Step.pending``)
        keeps what this call measured.
    progress, stop
        The progress protocol (one unit per evaluation batch); ``stop`` ends it between batches
        with :class:`~xprune_nb.core.errors.StoppedError`.

    Returns
    -------
    Metrics

    Examples
    --------
    >>> import xprune_nb as xp
    >>> study = xp.Study(xp.zoo.load("toy_mlp"), xp.datasets.load("moons"))
    >>> study.evaluate().latency_ms, sorted(study.evaluate(latency=True).latency_ms)
    ({}, [1, 64])
    """
    from ..core.params import Options, check
    from ..core.progress import make_progress

    call = "Study.evaluate"
    check(call, "latency", latency, Options((True, False)))
    tick = make_progress(progress, call, "evaluate", stop)
    index = study.current if step is None else study.timeline.index(step, call)
    model = study.timeline.reading_model(index)
    record = study.history[index]
    macs = None if type(model).__name__ == "DynamicNet" else structure_macs(
        study, record.structure, model)
    found = evaluate_model(model, study.data, study.forward, latency=latency, macs=macs,
                           progress=tick, adaptive=input_adaptive_measure(model))
    with _cache(study).filling:
        if "accuracy" in record.pending:   # the step's first ask: keep what was measured
            _settle(record, found)
    return found
