"""What an exported script (and ``xprune-nb run``) writes, and the small helpers scripts use."""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from ..core.atomic import write_text
from ..core.errors import StudyFileError
from ..core.reading import check_finite_state, read_torch_file

__all__ = ["write_outputs", "load_weights", "load_data", "load_groups", "check_group_limits",
           "summary_metrics"]


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a plain state-dict file into ``model`` (``weights_only=True``: never runs code)."""
    call = "load_weights"
    path = Path(path)
    if not path.exists():
        raise StudyFileError(f"{call}(path=...): no such file {str(path)!r}; keep it "
                             "next to the script that names it.")
    state = read_torch_file(path, call=call, kind="state dict")
    if not isinstance(state, dict):
        raise StudyFileError(f"{call}(path=...): {str(path)!r} is not a state dict.")
    check_finite_state(state, path=path, call=call, where="the weights")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise StudyFileError(f"{call}(path=...): the weights in {str(path)!r} do not fit the "
                             f"model: {' '.join(str(exc).split())[:300]}") from exc
    return model.eval()


def load_data(path: str | Path):
    """Train/val/test tensors from a ``.pt`` file (as ``Recipe.save`` writes ``<name>.data.pt``;
    read with ``weights_only=True``) or a ``.npz`` file (``train_X``, ``train_y``, ...), checked
    before use: see :mod:`xprune_nb.data.files`. What an exported script's ``--data`` reads."""
    from ..data.files import load_splits

    return load_splits(path, call="load_data")


def load_groups(path: str | Path, data, *, stored_labels: bool = True) -> dict:
    """``Study`` keyword arguments that give ``data`` the sensitive groups of an exported
    study: the names (and the labels, unless ``data`` brings its own) from the
    ``<name>.groups.pt`` file next to the script (plain data: ``weights_only=True``).

    ``stored_labels=False`` (other data, a script's ``--data``): the file's labels, which
    label the study's own rows, are not used; data without labels of its own is then
    measured without groups (``{}``)."""
    from ..record.recipe.groups import read_groups_file, study_group_options

    path = Path(path)
    if not path.exists():
        raise StudyFileError(f"load_groups(path=...): no such file {str(path)!r}; keep it next "
                             "to the script that names it.")
    names, labels, _ = read_groups_file(path, "load_groups")
    if not stored_labels and not getattr(data, "group_names", None):
        return {}
    return study_group_options(names, labels, data, "load_groups")


def check_group_limits(study, path: str | Path) -> list[dict]:
    """Record the ``auto_prune(max_group_drop=)`` limits of the groups file on the replayed
    steps and re-check them (a broken one is warned about); ``metrics.json`` reports them."""
    from ..record.recipe.groups import read_groups_file, replay_group_limits

    _, _, limits = read_groups_file(Path(path), "check_group_limits")
    if not getattr(study.data, "group_names", None):   # other data without groups
        return []
    return replay_group_limits(study, limits, "check_group_limits")


def summary_metrics(study) -> dict:
    """Plain numbers describing the current model and the original, for ``metrics.json``."""
    from ..record import distributed

    m = study.evaluate(latency=False)
    first = study.history[0].metrics
    out = {k: v for k, v in m.as_dict().items() if isinstance(v, (int, float))}
    if m.per_group_accuracy:   # test accuracy of every sensitive group, by name
        from ..record.recipe.groups import group_limit_report

        out["per_group_accuracy"] = dict(m.per_group_accuracy)
        limits = group_limit_report(study)
        if limits:
            out["group_limits"] = limits
    out.update(world_size=distributed.world_size(), step=study.current,
               original_params=first.get("params"), original_macs=first.get("macs"),
               original_accuracy=first.get("accuracy"))
    return out


def write_outputs(study, out: str | Path, *, model: dict | None = None,
                  data: dict | None = None, deploy: bool = False, contract: bool = False) -> dict:
    """Write ``model.pt``, ``recipe.yaml`` (and its weights/data files) and ``metrics.json``
    into ``out``; return the metrics.

    ``model`` / ``data`` are the recipe's source overrides (see :meth:`Study.recipe`). With
    ``deploy``: ``model.onnx`` (BatchNorm folded, masks baked in, checked with onnxruntime) and,
    when weights are masked, ``model.xpz`` (compressed storage; sizes in the metrics). With
    ``contract``: ``test_model_contract.py``, a pytest file that fails when the model's accuracy
    or explanation drift on the study's probe leaves the bounds measured now (minus 0.05).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    kwargs = (model or {}).get("kwargs")
    study.save_pruned(out / "model.pt", kwargs=kwargs)
    from ..record.io.pretrained import is_pretrained

    # and as a Hugging Face folder (docs/huggingface.md), unless the model is dynamic, which
    # no Hugging Face config describes (model.pt holds it)
    if is_pretrained(study.original) and type(study.model).__name__ != "DynamicNet":
        study.save_pretrained(out / "pretrained")
    study.recipe(model=model, data=data).save(out / "recipe.yaml")
    metrics = summary_metrics(study)
    if deploy:
        metrics.update(_deploy(study, out))
    if contract:
        from ..measure.step import fill_drift
        from .contract import bounds_from_drift, write_contract_test

        fill_drift(study, [study.history[0], study.step])   # measured on first ask (big models)
        bounds = bounds_from_drift(study.step.drift, reference_drift=study.history[0].drift)
        accuracy_min = bounds.pop("accuracy_min", 0.0)
        write_contract_test(out / "test_model_contract.py", model_path=out / "model.pt",
                            probe_x=study.probe_x, probe_y=study.probe_y,
                            accuracy_min=accuracy_min, reference=study.original,
                            forward=study.forward,
                            # your own exported model: the test may import its class
                            trust_source=study.model_source.get("kind") != "zoo", **bounds)
        metrics["contract"] = "test_model_contract.py"
    write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n", call="write_outputs")
    return metrics


def _deploy(study, out: Path) -> dict:
    """ONNX (folded BatchNorm) and, for masked models, compressed storage; what was written."""
    info = {}
    try:
        study.export_onnx(out / "model.onnx")
        info["onnx"] = "model.onnx"
    except Exception as exc:  # noqa: BLE001 - e.g. a dynamic model: say why there is none
        info["onnx"] = f"n/a: {' '.join(str(exc).split())[:200]}"
    if study.step.masked:
        from .compressed import save_compressed

        size = save_compressed(study.model, out / "model.xpz")
        info.update(compressed_bytes=size.bytes, dense_bytes=size.dense_bytes)
    return info
