"""Deployment exports of a study's model: the service behind ``Study.export_onnx``."""

from __future__ import annotations

from pathlib import Path

from ..core.errors import ModelError

__all__ = ["export_onnx"]


def export_onnx(study, path: str | Path, *, step: int | None = None, fold_bn: bool = True,
                check: bool = True, atol: float = 1e-4) -> Path:
    """Write the current model (or that of ``step``) as ONNX: BatchNorm folded into the layer
    before it, masks baked in, the outputs checked against the study's model with onnxruntime
    (to ``atol``). Needs the ``deploy`` extra (``pip install 'xprune_nb[deploy]'``).

    Examples
    --------
    >>> import tempfile, xprune_nb as xp
    >>> study = xp.Study(xp.zoo.load("digits_cnn"), xp.datasets.load("digits"))
    >>> path = study.export_onnx(tempfile.mkdtemp() + "/model.onnx")  # doctest: +SKIP
    """
    from .onnx import export_onnx as write

    call = "Study.export_onnx"
    index = study.current if step is None else study.timeline.index(step, call)
    model = study.model if index == study.current else study.model_at(index)
    if type(model).__name__ == "DynamicNet":
        raise ModelError(f"{call}: step {index} is dynamic (input-adaptive): its path depends "
                         "on each input, so it has no single ONNX graph. Export the static "
                         "step before it (step=...).")
    return write(model, study.env.example, path, output_fn=study.output_fn, fold_bn=fold_bn,
                 check=check, atol=atol)
