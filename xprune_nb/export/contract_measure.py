"""Reading and measuring explanation contracts (the files :func:`write_contract_test` writes).

A contract is data: the test file the user's CI runs reads a ``.contract.json`` file and a
``.probe.pt`` file, and both are checked here before any of their values is used: the JSON's
keys, types and sizes, the probe's tensors and their shapes. Nothing in them can grant trust:
whether the model's own class may be imported (``trust_source``) is decided only by the code
that calls :func:`measure_contract`, i.e. a literal in the generated test file. A
``"trust_source"`` key that contracts written by earlier versions hold is ignored.

Examples
--------
>>> check_contract({"bounds": {"accuracy_min": 0.8}, "accuracy": 0.9}, "accuracy_min")
Verdict(ok=True, 'accuracy = 0.9000, agreed >= 0.8000')
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from ..core.errors import ConfigError, StudyFileError
from ..models.mechanisms.model_tools import logits_of

__all__ = ["FORMAT", "VERSION", "BOUNDS", "read_contract", "measure_contract",
           "check_contract", "per_class_accuracy", "measure"]

FORMAT = "xprune_nb.contract"
VERSION = 1
#: bound name -> (measured value it applies to, "min" or "max", allowed range)
BOUNDS = {
    "accuracy_min": ("accuracy", "min", (0.0, 1.0)),
    "agreement_min": ("agreement", "min", (0.0, 1.0)),
    "saliency_spearman_min": ("saliency_spearman", "min", (-1.0, 1.0)),
    "saliency_topk_iou_min": ("saliency_topk_iou", "min", (0.0, 1.0)),
    "max_class_drop": ("class_drop", "max", (0.0, 1.0)),
}
#: a contract is a few hundred bytes; anything far larger is not one
MAX_JSON_BYTES = 1 << 20
MAX_CLASSES = 100_000
_KEYS = {"format", "version", "model", "probe", "bounds", "top_k", "reference"}
_LEGACY = {"trust_source"}   # written by earlier versions, never read


def per_class_accuracy(pred: torch.Tensor, y: torch.Tensor, k: int) -> list[float]:
    """Accuracy of each of ``k`` classes (NaN for a class with no example)."""
    correct = (pred == y).double()
    counts = torch.bincount(y, minlength=k).double()
    acc = torch.zeros(k, dtype=torch.float64).index_add_(0, y, correct) / counts.clamp(min=1)
    acc[counts == 0] = float("nan")
    return acc.tolist()


def _damaged(path: Path, what: str) -> StudyFileError:
    return StudyFileError(f"measure_contract(contract_path=...): {str(path)!r} is not a valid "
                          f"contract: {what}. Write it again with write_contract_test.")


def _number(value, lo: float = -math.inf, hi: float = math.inf) -> bool:
    return (not isinstance(value, bool) and isinstance(value, (int, float))
            and math.isfinite(value) and lo <= value <= hi)


def _plain_name(name) -> bool:
    return isinstance(name, str) and name not in ("", ".", "..") and "/" not in name \
        and "\\" not in name and "\0" not in name and len(name) <= 255


def read_contract(contract_path: str | Path) -> tuple[dict, dict, Path]:
    """The contract's JSON and its probe, both validated, and the model file's path.

    Raises :class:`StudyFileError` for anything that is not exactly what
    :func:`write_contract_test` writes: unknown keys, a probe that is not a file name next to
    the contract, bounds that are not numbers in range, tensors of the wrong shape.
    """
    from ..core.limits import load_json
    from ..core.reading import read_torch_file

    call = "measure_contract"
    if not isinstance(contract_path, (str, Path)) or not str(contract_path):
        raise ConfigError.bad_value(call, "contract_path", "the path of a .contract.json file",
                                    contract_path)
    path = Path(contract_path)
    try:
        if path.stat().st_size > MAX_JSON_BYTES:
            raise _damaged(path, f"it is larger than {MAX_JSON_BYTES} bytes")
        contract = load_json(path.read_text(encoding="utf-8"), call=call,
                             param="contract_path")
    except ConfigError as exc:
        raise _damaged(path, str(exc).split(": ", 1)[-1]) from exc
    except (OSError, ValueError) as exc:
        raise StudyFileError(f"{call}(contract_path=...): cannot read {str(path)!r}: "
                             f"{' '.join(str(exc).split())[:200] or type(exc).__name__}."
                             ) from exc
    if not isinstance(contract, dict) or contract.get("format") != FORMAT or contract.get(
            "version") != VERSION:
        raise StudyFileError(f"{call}: {str(path)!r} is not a contract written by this "
                             f"xprune_nb (format {FORMAT!r}, version {VERSION}).")
    unknown = sorted(set(contract) - _KEYS - _LEGACY)
    if unknown or not _KEYS <= set(contract):
        raise _damaged(path, f"its keys are {sorted(contract)}; expected {sorted(_KEYS)}")
    if not isinstance(contract["model"], str) or not contract["model"] or "\0" in contract[
            "model"]:
        raise _damaged(path, "'model' is not a file path")
    if not _plain_name(contract["probe"]):
        raise _damaged(path, "'probe' is not a file name next to the contract")
    bounds = contract["bounds"]
    if not isinstance(bounds, dict) or set(bounds) - set(BOUNDS) or not all(
            v is None or _number(v, *BOUNDS[k][2]) for k, v in bounds.items()):
        raise _damaged(path, f"'bounds' must map names among {sorted(BOUNDS)} to numbers in "
                             "their ranges or null")
    if not _number(contract["top_k"], 0.0, 1.0) or contract["top_k"] <= 0:
        raise _damaged(path, "'top_k' is not a fraction in (0, 1]")
    ref = contract["reference"]
    per_class = ref.get("accuracy_per_class", []) if isinstance(ref, dict) else None
    if not isinstance(ref, dict) or set(ref) - {"accuracy", "accuracy_per_class"} or not (
            isinstance(per_class, list) and len(per_class) <= MAX_CLASSES and all(
                _number(v, 0.0, 1.0) or (isinstance(v, float) and math.isnan(v))
                for v in per_class)):
        raise _damaged(path, "'reference' must hold an accuracy and a list of per-class "
                             "accuracies")
    here = path.resolve().parent
    probe = read_torch_file(here / contract["probe"], call=call, kind="contract probe")
    _check_probe(probe, here / contract["probe"])
    return contract, probe, here / contract["model"]


def _check_probe(probe, path: Path) -> None:
    def bad(what):
        return StudyFileError(f"measure_contract: the probe {str(path)!r} is damaged: {what}. "
                              "Write the contract again with write_contract_test.")

    if not isinstance(probe, dict) or not {"x", "y"} <= set(probe) or set(probe) - {
            "x", "y", "reference_pred", "reference_saliency"}:
        raise bad("expected tensors 'x', 'y' and optionally 'reference_pred', "
                  "'reference_saliency'")
    if not all(isinstance(v, torch.Tensor) for v in probe.values()):
        raise bad("a value is not a tensor")
    x, y = probe["x"], probe["y"]
    if y.dim() != 1 or len(y) == 0 or x.dim() < 1 or len(x) != len(y) or y.is_floating_point() \
            or y.is_complex() or int(y.min()) < 0 or int(y.max()) >= MAX_CLASSES:
        raise bad("'y' must hold one class index per example of 'x'")
    if x.is_complex() or (x.is_floating_point() and not torch.isfinite(x).all()):
        raise bad("'x' holds complex, NaN or infinite values")
    pred = probe.get("reference_pred")
    if pred is not None and (pred.shape != y.shape or pred.is_floating_point()
                             or int(pred.min()) < 0 or int(pred.max()) >= MAX_CLASSES):
        raise bad("'reference_pred' must hold one class index per example")
    sal = probe.get("reference_saliency")
    if sal is not None and (sal.shape != x.shape or not sal.is_floating_point()):
        raise bad("'reference_saliency' must have the shape of 'x'")


def _load_model(path: Path, trust_source: bool):
    """A callable ``x -> logits`` and the torch model (None for ONNX)."""
    if path.suffix == ".onnx":
        from .onnx import onnx_session, run_onnx

        session = onnx_session(path)
        return (lambda x: run_onnx(session, x)), None
    from ..record.io.checkpoint import load_pruned

    model = load_pruned(path, trust_source=trust_source).eval()

    def run(x):
        with torch.no_grad():
            return logits_of(model(x))

    return run, model


def measure_contract(contract_path: str | Path, *, trust_source: bool = False) -> dict:
    """Measure the model named by a ``.contract.json`` file on its stored probe.

    Parameters
    ----------
    contract_path : str or Path
        The ``NAME.contract.json`` file :func:`write_contract_test` wrote.
    trust_source : bool, default False
        Let a checkpoint of your own class import it (see ``load_pruned``). Only the caller
        decides this -- the generated test file holds it as a literal written by
        ``write_contract_test(trust_source=...)``; nothing in the contract's files can.

    Returns
    -------
    dict
        The bounds and the measured ``accuracy``, ``agreement``, ``saliency_spearman``,
        ``saliency_topk_iou``, ``class_drop`` (NaN where not measurable) and
        ``accuracy_per_class``.
    """
    if not isinstance(trust_source, bool):
        raise ConfigError.bad_value("measure_contract", "trust_source", "True or False",
                                    trust_source)
    contract, probe, model_path = read_contract(contract_path)
    return measure(contract, probe, model_path, trust_source)


def measure(contract: dict, probe: dict, model_path: Path, trust_source: bool) -> dict:
    """:func:`measure_contract` on a contract and probe already in memory (and checked)."""
    x, y = probe["x"], probe["y"].long()
    run, model = _load_model(model_path, trust_source)
    logits = run(x)
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or len(logits) != len(y):
        raise StudyFileError(f"measure_contract: the model {str(model_path)!r} does not return "
                             f"(batch, classes) logits on the probe; it is not the model the "
                             "contract was written for.")
    pred = logits.argmax(1)
    k = int(max(int(y.max()) + 1, logits.shape[1]))
    per_class = per_class_accuracy(pred, y, k)
    out = {"bounds": contract["bounds"], "accuracy": float((pred == y).double().mean()),
           "accuracy_per_class": per_class, "agreement": float("nan"),
           "saliency_spearman": float("nan"), "saliency_topk_iou": float("nan"),
           "class_drop": float("nan")}
    if "reference_pred" in probe:
        out["agreement"] = float((pred == probe["reference_pred"]).double().mean())
        ref = contract["reference"].get("accuracy_per_class", [])
        drops = [r - a for r, a in zip(ref, per_class) if not (math.isnan(r) or math.isnan(a))]
        out["class_drop"] = max(drops) if drops else float("nan")
    if "reference_saliency" in probe and model is not None:
        from ..explain.compare import rank_correlation, topk_iou
        from ..explain.numbers import finite_mean
        from ..explain.saliency import gradient_saliency

        sal, _ = gradient_saliency(model, x.float(), y)
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
