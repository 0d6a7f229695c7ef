"""Explanation contracts: a pytest file that guards an exported model in the user's own CI.

:func:`write_contract_test` writes three files next to each other:

* ``NAME.py``: a short pytest module with one test per bound (accuracy, agreement with the
  reference model, saliency rank correlation, saliency top-k overlap, worst per-class drop);
* ``NAME.contract.json``: the bounds agreed in the study, the model file to check and the
  reference values, as plain JSON;
* ``NAME.probe.pt``: the stored probe (inputs, labels) and the reference model's predictions
  and saliency maps on it, plain tensors (``torch.load(weights_only=True)``).

The test module contains no user string as code: the only value in it is the JSON file's
name, written as a checked ``repr`` literal. The measuring is done by :func:`measure_contract`
with the definitions of :func:`xprune_nb.explain.drift.probe_drift` (saliency is the absolute
gradient of the true class's logit), so the numbers match the study's drift numbers.

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
import json
import math
import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from .._model import eval_mode, logits_of
from ..errors import ConfigError, StudyFileError

__all__ = ["write_contract_test", "measure_contract", "check_contract", "bounds_from_drift",
           "BOUNDS"]

FORMAT = "xprune_nb.contract"
VERSION = 1
_CALL = "write_contract_test"
#: bound name -> (measured value it applies to, "min" or "max", allowed range)
BOUNDS = {
    "accuracy_min": ("accuracy", "min", (0.0, 1.0)),
    "agreement_min": ("agreement", "min", (0.0, 1.0)),
    "saliency_spearman_min": ("saliency_spearman", "min", (-1.0, 1.0)),
    "saliency_topk_iou_min": ("saliency_topk_iou", "min", (0.0, 1.0)),
    "max_class_drop": ("class_drop", "max", (0.0, 1.0)),
}
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


@pytest.fixture(scope="module")
def measured():
    return measure_contract(CONTRACT)


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


def _per_class(pred: torch.Tensor, y: torch.Tensor, k: int) -> list[float]:
    correct = (pred == y).double()
    counts = torch.bincount(y, minlength=k).double()
    acc = torch.zeros(k, dtype=torch.float64).index_add_(0, y, correct) / counts.clamp(min=1)
    acc[counts == 0] = float("nan")
    return acc.tolist()


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
        ``load_pruned``); not needed for zoo models and ONNX files.
    check : bool
        Measure the model now and refuse (removing the files) when it already breaks a bound.
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
               "accuracy_per_class": _per_class(values["pred"], y, k)}
    stem = path.stem
    json_path, probe_path = path.with_name(stem + ".contract.json"), path.with_name(
        stem + ".probe.pt")
    try:
        model_ref = os.path.relpath(model_path.resolve(), path.parent.resolve())
        if model_ref.startswith(".."):
            model_ref = str(model_path.resolve())
    except ValueError:   # another drive on Windows
        model_ref = str(model_path.resolve())
    contract = {"format": FORMAT, "version": VERSION, "model": Path(model_ref).as_posix(),
                "probe": probe_path.name, "bounds": bounds, "top_k": float(top_k),
                "reference": ref, "trust_source": bool(trust_source)}
    text = _render(path, json_path.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(probe, probe_path)
    json_path.write_text(json.dumps(contract, indent=2) + "\n", encoding="utf-8")
    path.write_text(text, encoding="utf-8")
    if check:
        try:
            measured = measure_contract(json_path)
            failed = [v.message for b in BOUNDS
                      if (v := check_contract(measured, b)) is not None and not v.ok]
        except BaseException:
            _remove(path, json_path, probe_path)
            raise
        if failed:
            _remove(path, json_path, probe_path)
            raise ConfigError(f"{_CALL}: the model at {str(model_path)!r} already breaks the "
                              f"contract: {'; '.join(failed)}. Nothing was written.")
    return path


def _remove(*paths: Path) -> None:
    for p in paths:
        p.unlink(missing_ok=True)


def _render(path: Path, json_name: str) -> str:
    from .. import __version__

    literal = repr(json_name)
    if ast.literal_eval(literal) != json_name:   # a name that is not a plain literal
        raise ConfigError.bad_value(_CALL, "path", "a plain file name", str(path))
    shown = path.name if path.name.replace("_", "").replace(".", "").isalnum() else repr(
        path.name)
    when = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = _TEMPLATE.format(version=__version__, when=when, shown=shown, json_name=literal)
    ast.parse(text)   # a generated test that does not parse is a bug here, not the user's
    return text


def _load_model(path: Path, trust_source: bool = False):
    """A callable ``x -> logits`` and the torch model (None for ONNX). ``trust_source`` lets
    a checkpoint of your own class import it (the contract's author opted in)."""
    if path.suffix == ".onnx":
        from .onnx import onnx_session, run_onnx

        session = onnx_session(path)
        return (lambda x: run_onnx(session, x)), None
    from .. import load_pruned  # public name: the checkpoint module may move

    model = load_pruned(path, trust_source=trust_source).eval()

    def run(x):
        with torch.no_grad():
            return logits_of(model(x))

    return run, model


def measure_contract(contract_path: str | Path) -> dict:
    """Measure the model named by a ``.contract.json`` file on its stored probe.

    Returns the bounds and the measured ``accuracy``, ``agreement``, ``saliency_spearman``,
    ``saliency_topk_iou``, ``class_drop`` (NaN where not measurable) and
    ``accuracy_per_class``.
    """
    call = "measure_contract"
    contract_path = Path(contract_path)
    try:
        contract = json.loads(contract_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise StudyFileError(f"{call}: cannot read {str(contract_path)!r}: {exc}") from exc
    if not isinstance(contract, dict) or contract.get("format") != FORMAT or contract.get(
            "version") != VERSION:
        raise StudyFileError(f"{call}: {str(contract_path)!r} is not a contract written by "
                             f"this xprune_nb (format {FORMAT!r}, version {VERSION}).")
    here = contract_path.resolve().parent
    probe = torch.load(here / contract["probe"], map_location="cpu", weights_only=True)
    x, y = probe["x"], probe["y"]
    run, model = _load_model(here / contract["model"], contract.get("trust_source") is True)
    logits = run(x)
    pred = logits.argmax(1)
    k = int(max(int(y.max()) + 1, logits.shape[1]))
    per_class = _per_class(pred, y, k)
    out = {"bounds": contract["bounds"], "accuracy": float((pred == y).double().mean()),
           "accuracy_per_class": per_class, "agreement": float("nan"),
           "saliency_spearman": float("nan"), "saliency_topk_iou": float("nan"),
           "class_drop": float("nan")}
    if "reference_pred" in probe:
        out["agreement"] = float((pred == probe["reference_pred"]).double().mean())
        ref = contract["reference"]["accuracy_per_class"]
        drops = [r - a for r, a in zip(ref, per_class) if not (math.isnan(r) or math.isnan(a))]
        out["class_drop"] = max(drops) if drops else float("nan")
    if "reference_saliency" in probe and model is not None:
        from ..explain.compare import rank_correlation, topk_iou
        from ..explain.saliency import gradient_saliency

        sal, _ = gradient_saliency(model, x.float(), y)
        from ..explain.numbers import finite_mean

        # the same means as the study's probe drift: inputs whose maps rank nothing left out
        out["saliency_spearman"] = finite_mean(rank_correlation(probe["reference_saliency"], sal))
        out["saliency_topk_iou"] = finite_mean(topk_iou(probe["reference_saliency"], sal,
                                                        contract["top_k"]))
    return out


class _Verdict:
    def __init__(self, ok: bool, message: str):
        self.ok, self.message = ok, message

    def __repr__(self) -> str:
        return f"Verdict(ok={self.ok}, {self.message!r})"


def check_contract(measured: dict, bound: str) -> _Verdict | None:
    """Whether ``measured`` (from :func:`measure_contract`) keeps ``bound``; ``None`` when no
    such bound was agreed. A value that could not be measured (NaN) breaks its bound."""
    if bound not in BOUNDS:
        raise ConfigError.unknown_name("check_contract", "bound", BOUNDS, bound)
    limit = measured["bounds"].get(bound)
    if limit is None:
        return None
    key, kind, _ = BOUNDS[bound]
    value = measured[key]
    ok = (value >= limit) if kind == "min" else (value <= limit)
    rel = ">=" if kind == "min" else "<="
    return _Verdict(bool(ok), f"{key} = {value:.4f}, agreed {rel} {limit:.4f}")
