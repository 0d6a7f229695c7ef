"""Explanation contracts: a pytest file that guards an exported model in the user's own CI.

:func:`write_contract_test` writes three files next to each other:

* ``NAME.py``: a short pytest module with one test per bound (accuracy, agreement with the
  reference model, saliency rank correlation, saliency top-k overlap, worst per-class drop);
* ``NAME.contract.json``: the bounds agreed in the study, the model file to check and the
  reference values, as plain JSON;
* ``NAME.probe.pt``: the stored probe (inputs, labels) and the reference model's predictions
  and saliency maps on it, plain tensors (``torch.load(weights_only=True)``).

The test module contains no user string as code: its only values are the JSON file's name,
written as a checked ``repr`` literal, and ``TRUST_SOURCE = True|False``. Trust comes from
that line of code alone: the data files are checked (:mod:`.contract_measure`) and cannot
grant it. The three files are written all or none, atomically; a refused contract
(``check=True``) writes nothing and leaves earlier files as they were. The measuring is done
by :func:`measure_contract` with the definitions of
:func:`xprune_nb.explain.drift.probe_drift` (saliency is the absolute gradient of the true
class's logit), so the numbers match the study's drift numbers.

The model under contract is a pruned checkpoint (``study.save_pruned``, read with
:func:`xprune_nb.load_pruned`) or an ONNX file (run with onnxruntime). ONNX runtimes give no
gradients, so an ONNX file is held to accuracy, agreement and per-class bounds only; guard
its explanations through the checkpoint it was exported from.

Examples
--------
>>> import tempfile, xprune_nb as xp
>>> study = xp.Study(xp.zoo.load("toy_mlp"), xp.datasets.load("moons"), seed=0)
>>> _ = study.score("magnitude"); _ = study.prune(0.3)
>>> folder = tempfile.mkdtemp()
>>> model_path = study.save_pruned(folder + "/model.pt")
>>> test = write_contract_test(folder + "/test_contract.py", model_path=model_path,
...                            probe_x=study.probe_x, probe_y=study.probe_y,
...                            accuracy_min=0.8, reference=study.original,
...                            saliency_spearman_min=0.5)
>>> measure_contract(folder + "/test_contract.contract.json")["accuracy"] >= 0.8
True
"""

from __future__ import annotations

import ast
import datetime as _dt
import io
import json
import math
import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ..core.atomic import check_target, write_files
from ..core.errors import ConfigError
from ..models.mechanisms.model_tools import eval_mode, logits_of
from .contract_measure import (
    BOUNDS,
    FORMAT,
    VERSION,
    check_contract,
    measure,
    measure_contract,
    per_class_accuracy,
)

__all__ = ["write_contract_test", "measure_contract", "check_contract", "bounds_from_drift",
           "BOUNDS"]

_CALL = "write_contract_test"
_SALIENCY = ("saliency_spearman_min", "saliency_topk_iou_min")

_TEMPLATE = '''\
"""Explanation contract for an exported model, written by xprune_nb {version} on {when}.

Fails when the model's accuracy, its agreement with the reference model, or its explanation
drift on the stored probe leaves the bounds agreed in the study. The bounds, the model file
and the reference values are in the JSON file named below; the probe is in a tensor file
next to it. Run it with:  pytest {shown}
"""

from pathlib import Path

import pytest

from xprune_nb.export.contract import BOUNDS, check_contract, measure_contract

CONTRACT = Path(__file__).resolve().parent / {json_name}
# May loading the model import its own class? Decided when this file was written
# (write_contract_test(trust_source=...)); the contract's data files cannot change it.
TRUST_SOURCE = {trust}


@pytest.fixture(scope="module")
def measured():
    return measure_contract(CONTRACT, trust_source=TRUST_SOURCE)


@pytest.mark.parametrize("bound", sorted(BOUNDS))
def test_bound(measured, bound):
    verdict = check_contract(measured, bound)
    if verdict is None:
        pytest.skip(f"no {{bound}} was agreed for this model")
    assert verdict.ok, verdict.message
'''


def _bound(name: str, value, call: str = _CALL):
    if value is None:
        return None
    lo, hi = BOUNDS[name][2]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            math.isfinite(value) and lo <= value <= hi):
        raise ConfigError.bad_value(call, name, f"a number in [{lo:g}, {hi:g}] or None", value)
    return float(value)


def bounds_from_drift(drift: dict, *, margin: float = 0.05,
                      reference_drift: dict | None = None) -> dict:
    """Bounds for :func:`write_contract_test` from a study step's drift numbers
    (``study.step.drift``), each loosened by ``margin``: what the model does now, minus a
    tolerance. ``reference_drift`` (``study.history[0].drift``) adds ``max_class_drop``.
    Numbers that are NaN (not measurable) give no bound.

    Examples
    --------
    >>> bounds_from_drift({"accuracy": 0.9, "agreement": 0.95, "saliency_spearman": 0.7,
    ...                    "saliency_topk_iou": float("nan")}, margin=0.1)
    {'accuracy_min': 0.8, 'agreement_min': 0.85, 'saliency_spearman_min': 0.6}
    """
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 0 <= margin <= 1:
        raise ConfigError.bad_value("bounds_from_drift", "margin", "a number in [0, 1]", margin)
    out = {}
    for bound, (key, kind, (lo, hi)) in BOUNDS.items():
        if kind != "min":
            continue
        value = drift.get(key)
        if isinstance(value, (int, float)) and math.isfinite(value):
            out[bound] = round(min(hi, max(lo, value - margin)), 6)
    if reference_drift is not None:
        now, ref = drift.get("accuracy_per_class") or [], reference_drift.get(
            "accuracy_per_class") or []
        drops = [r - a for r, a in zip(ref, now) if math.isfinite(r) and math.isfinite(a)]
        if drops:
            out["max_class_drop"] = round(min(1.0, max(0.0, max(drops)) + margin), 6)
    return out


def _reference_values(reference: nn.Module, x: torch.Tensor, y: torch.Tensor,
                      forward: Callable | None, need_saliency: bool) -> dict:
    from ..explain.saliency import gradient_saliency

    if need_saliency:
        saliency, logits = gradient_saliency(reference, x, y, forward)
    else:
        with torch.no_grad(), eval_mode(reference):
            out = reference(x) if forward is None else forward(reference, x)
        logits, saliency = logits_of(out) if forward is None else out, None
    return {"pred": logits.argmax(1), "saliency": saliency}


def write_contract_test(path: str | Path, *, model_path: str | Path, probe_x: torch.Tensor,
                        probe_y: torch.Tensor, accuracy_min: float,
                        reference: nn.Module | None = None,
                        forward: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None,
                        agreement_min: float | None = None,
                        saliency_spearman_min: float | None = None,
                        saliency_topk_iou_min: float | None = None,
                        max_class_drop: float | None = None, top_k: float = 0.1,
                        check: bool = True, trust_source: bool = False) -> Path:
    """Write a pytest file that fails when the model at ``model_path`` leaves agreed bounds.

    Parameters
    ----------
    path : str or Path
        The test file to write (``test_*.py``, so pytest collects it).
    model_path : str or Path
        The exported model: a checkpoint from ``study.save_pruned`` / an exported script, or
        an ``.onnx`` file. Stored relative to the test file when it lies below its folder.
    probe_x, probe_y : torch.Tensor
        The probe examples and labels (e.g. ``study.probe_x``, ``study.probe_y``).
    accuracy_min : float
        Lowest accuracy allowed on the probe.
    reference : nn.Module, optional
        The model explanations are compared with (typically ``study.original``); needed by
        every bound but ``accuracy_min``.
    forward : callable, optional
        ``forward(model, x) -> logits`` for ``reference`` (e.g. ``study.forward``).
    agreement_min : float, optional
        Lowest share of probe examples on which the model predicts what ``reference`` does.
    saliency_spearman_min, saliency_topk_iou_min : float, optional
        Lowest mean rank correlation / top-``top_k`` overlap between the model's saliency
        maps and the reference's (checkpoints only: ONNX runtimes have no gradients).
    max_class_drop : float, optional
        Largest drop of any class's probe accuracy below the reference's.
    trust_source : bool
        The checkpoint is of your own importable class: let the test import it (see
        ``load_pruned``); not needed for zoo models and ONNX files. It is written into the
        test file's code, never into its data files, so editing those cannot grant trust.
    check : bool
        Measure the model now and refuse (writing nothing) when it already breaks a bound.
        With ``check=False``, ``model_path`` may be a file that does not exist yet (e.g. the
        ``model.pt`` an exported script will write).

    Returns
    -------
    Path
        The test file; the ``.contract.json`` and ``.probe.pt`` files lie next to it.
    """
    path = Path(path) if isinstance(path, (str, os.PathLike)) else path
    if not isinstance(path, Path) or path.suffix != ".py" or not path.stem.isidentifier():
        raise ConfigError.bad_value(_CALL, "path", "a .py file name that is a Python "
                                    "identifier, e.g. 'test_contract.py'", path)
    if not isinstance(model_path, (str, os.PathLike)) or (check
                                                        and not Path(model_path).is_file()):
        raise ConfigError.bad_value(_CALL, "model_path", "an existing model file (or any path "
                                    "with check=False)", model_path)
    model_path = Path(model_path)
    if not isinstance(probe_x, torch.Tensor) or not isinstance(probe_y, torch.Tensor) or (
            probe_y.dim() != 1 or len(probe_x) != len(probe_y) or len(probe_y) == 0):
        raise ConfigError.bad_value(_CALL, "probe_x, probe_y", "tensors with one label per "
                                    "example", (type(probe_x).__name__,
                                                type(probe_y).__name__))
    bounds = {"accuracy_min": _bound("accuracy_min", accuracy_min),
              "agreement_min": _bound("agreement_min", agreement_min),
              "saliency_spearman_min": _bound("saliency_spearman_min", saliency_spearman_min),
              "saliency_topk_iou_min": _bound("saliency_topk_iou_min", saliency_topk_iou_min),
              "max_class_drop": _bound("max_class_drop", max_class_drop)}
    if bounds["accuracy_min"] is None:
        raise ConfigError.bad_value(_CALL, "accuracy_min", "a number in [0, 1]", None)
    if isinstance(top_k, bool) or not isinstance(top_k, (int, float)) or not 0 < top_k <= 1:
        raise ConfigError.bad_value(_CALL, "top_k", "a fraction in (0, 1]", top_k)
    relative = [k for k, v in bounds.items() if v is not None and k != "accuracy_min"]
    if relative and not isinstance(reference, nn.Module):
        raise ConfigError.bad_value(_CALL, "reference", f"the reference nn.Module (needed by "
                                    f"{relative})", reference)
    saliency = [k for k in _SALIENCY if bounds[k] is not None]
    if saliency and model_path.suffix == ".onnx":
        raise ConfigError.bad_value(_CALL, saliency[0], "None for an ONNX model (its runtime "
                                    "has no gradients, so no saliency); guard the explanations "
                                    "with the PyTorch checkpoint it was exported from",
                                    bounds[saliency[0]])
    if saliency and not probe_x.is_floating_point():
        raise ConfigError.bad_value(_CALL, saliency[0], "None for integer (token) inputs, "
                                    "which have no input gradient", bounds[saliency[0]])
    for name, flag in (("check", check), ("trust_source", trust_source)):
        if not isinstance(flag, bool):
            raise ConfigError.bad_value(_CALL, name, "True or False", flag)
    if forward is not None and not callable(forward):
        raise ConfigError.bad_value(_CALL, "forward", "a callable(model, x) or None", forward)

    x, y = probe_x.detach().cpu(), probe_y.detach().cpu().long()
    probe = {"x": x.clone(), "y": y.clone()}
    ref = {}
    if reference is not None:
        values = _reference_values(reference, x, y, forward, bool(saliency))
        probe["reference_pred"] = values["pred"].clone()
        if values["saliency"] is not None:
            probe["reference_saliency"] = values["saliency"].clone()
        k = int(max(int(y.max()) + 1, int(values["pred"].max()) + 1))
        ref = {"accuracy": float((values["pred"] == y).double().mean()),
               "accuracy_per_class": per_class_accuracy(values["pred"], y, k)}
    stem = path.stem
    json_path, probe_path = path.with_name(stem + ".contract.json"), path.with_name(
        stem + ".probe.pt")
    for target in (path, json_path, probe_path):   # folders and devices: refused first
        check_target(target, call=_CALL)
    try:
        model_ref = os.path.relpath(model_path.resolve(), path.parent.resolve())
        if model_ref.startswith(".."):
            model_ref = str(model_path.resolve())
    except ValueError:   # another drive on Windows
        model_ref = str(model_path.resolve())
    contract = {"format": FORMAT, "version": VERSION, "model": Path(model_ref).as_posix(),
                "probe": probe_path.name, "bounds": bounds, "top_k": float(top_k),
                "reference": ref}
    text = _render(path, json_path.name, trust_source)
    if check:   # measured before anything is written: a refusal leaves every file as it was
        measured = measure(contract, probe, model_path, trust_source)
        failed = [v.message for b in BOUNDS
                  if (v := check_contract(measured, b)) is not None and not v.ok]
        if failed:
            raise ConfigError(f"{_CALL}: the model at {str(model_path)!r} already breaks the "
                              f"contract: {'; '.join(failed)}. Nothing was written.")
    buffer = io.BytesIO()
    torch.save(probe, buffer)
    # all three files or none: a full disk or a file-size limit leaves the previous ones
    write_files({probe_path: buffer.getvalue(),
                 json_path: (json.dumps(contract, indent=2) + "\n").encode("utf-8"),
                 path: text.encode("utf-8")}, call=_CALL)
    return path


def _render(path: Path, json_name: str, trust_source: bool) -> str:
    from ..core.version import __version__

    literal = repr(json_name)
    if ast.literal_eval(literal) != json_name:   # a name that is not a plain literal
        raise ConfigError.bad_value(_CALL, "path", "a plain file name", str(path))
    shown = path.name if path.name.replace("_", "").replace(".", "").isalnum() else repr(
        path.name)
    when = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = _TEMPLATE.format(version=__version__, when=when, shown=shown, json_name=literal,
                            trust=repr(trust_source is True))
    ast.parse(text)   # a generated test that does not parse is a bug here, not the user's
    return text
