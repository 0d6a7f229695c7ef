"""What an exported script (and ``xprune-nb run``) writes, and the small helpers scripts use."""

from __future__ import annotations

import json
import types
from pathlib import Path

import torch
from torch import nn

from ..errors import StudyFileError
from ..io.atomic import write_text

__all__ = ["write_outputs", "load_weights", "load_data", "summary_metrics"]


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a plain state-dict file into ``model`` (``weights_only=True``: never runs code)."""
    path = Path(path)
    if not path.is_file():
        raise StudyFileError(f"load_weights(path=...): no such file {str(path)!r}; keep it "
                             "next to the script that names it.")
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()


def load_data(path: str | Path):
    """The splits written by ``Recipe.save`` as ``<name>.data.pt`` (plain tensors)."""
    path = Path(path)
    if not path.is_file():
        raise StudyFileError(f"load_data(path=...): no such file {str(path)!r}; keep it next "
                             "to the script that names it.")
    stored = torch.load(path, map_location="cpu", weights_only=True)
    return types.SimpleNamespace(
        **{k: (v["X"], v["y"]) for k, v in stored.items() if k in ("train", "val", "test")},
        **stored.get("meta", {}))


def summary_metrics(study) -> dict:
    """Plain numbers describing the current model and the original, for ``metrics.json``."""
    from .. import distributed

    m = study.evaluate(latency=False)
    first = study.history[0].metrics
    out = {k: v for k, v in m.as_dict().items() if isinstance(v, (int, float))}
    out.update(world_size=distributed.world_size(), step=study.current,
               original_params=first.get("params"), original_macs=first.get("macs"),
               original_accuracy=first.get("accuracy"))
    return out


def write_outputs(study, out: str | Path, *, model: dict | None = None,
                  data: dict | None = None) -> dict:
    """Write ``model.pt``, ``recipe.yaml`` (and its weights/data files) and ``metrics.json``
    into ``out``; return the metrics.

    ``model`` / ``data`` are the recipe's source overrides (see :meth:`Study.recipe`).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    kwargs = (model or {}).get("kwargs")
    study.save_pruned(out / "model.pt", kwargs=kwargs)
    study.recipe(model=model, data=data).save(out / "recipe.yaml")
    metrics = summary_metrics(study)
    write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n", call="write_outputs")
    return metrics
