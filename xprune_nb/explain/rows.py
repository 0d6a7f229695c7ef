"""Which rows an explanation runs on: given tensors, row indices, or rows drawn stratified."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..core.errors import ConfigError
from ..data import StudyData, stratified_indices
from ..data.batch import is_mapping, take

__all__ = ["pick_rows", "misclassified_rows"]


def pick_rows(data: StudyData, inputs, n: int, split: str, *, seed: int, call: str,
              param: str = "inputs") -> tuple[torch.Tensor, torch.Tensor | None]:
    """Rows to explain and their labels (``None`` for rows given as tensors).

    ``inputs`` may be tensors/arrays, a list of row indices of ``split``, or ``None`` for ``n``
    rows drawn stratified by class (deterministic under ``seed``). Integer (token) inputs stay
    integers: ids are never cast to float.
    """
    rows = data.split(split)
    if inputs is None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError.bad_value(call, "n", "a positive integer", n)
        idx = stratified_indices(rows.y, min(n, len(rows)), seed=seed, call=call)
        return take(rows.X, idx), rows.y[idx]
    if isinstance(inputs, (list, tuple, range)) and all(
            isinstance(i, int) and not isinstance(i, bool) for i in inputs):
        idx = torch.tensor(list(inputs), dtype=torch.long)
        if len(idx) == 0 or idx.min() < 0 or idx.max() >= len(rows):
            raise ConfigError.bad_value(call, param, f"row indices of the {split} split in "
                                        f"[0, {len(rows)})", list(inputs))
        return take(rows.X, idx), rows.y[idx]
    if isinstance(inputs, Mapping):   # named token inputs (a dict / BatchEncoding), as given
        if is_mapping(rows.X) and set(map(str, inputs)) - set(map(str, rows.X)):
            raise ConfigError.bad_value(call, param, f"a dict with the model's inputs "
                                        f"{sorted(map(str, rows.X))}", sorted(map(str, inputs)))
        return inputs, None
    try:
        x = torch.as_tensor(inputs)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ConfigError.bad_value(call, param, "a tensor, an array or a list of row indices",
                                    type(inputs).__name__) from exc
    if rows.X.is_floating_point():
        x = x.to(rows.X.dtype)
        if not torch.isfinite(x).all():
            raise ConfigError.bad_value(call, param, "finite inputs (no NaN or infinity)",
                                        "inputs holding NaN or infinity")
    elif x.is_floating_point():
        raise ConfigError.bad_value(call, param, f"integer token ids ({rows.X.dtype}), like the "
                                    "model's inputs", f"a {x.dtype} tensor")
    if x.shape[1:] != rows.X.shape[1:]:
        if x.shape == rows.X.shape[1:]:
            x = x.unsqueeze(0)
        else:
            raise ConfigError.bad_value(
                call, param, f"inputs of shape (N, {', '.join(map(str, rows.X.shape[1:]))})",
                tuple(x.shape))
    return x, None


def misclassified_rows(study, step: int, n: int, call: str = "Panel.explain") -> list[int]:
    """Indices of the first ``n`` test rows that the model of ``step`` gets wrong.

    Examples
    --------
    >>> import xprune_nb as xp
    >>> study = xp.Study(xp.zoo.load("digits_cnn"), xp.datasets.load("digits"))
    >>> len(misclassified_rows(study, 0, 3)) <= 3
    True
    """
    index = study.timeline.index(step, call)
    model = study.model if index == study.current else study.model_at(index)
    test = study.data.test
    with torch.no_grad():
        model.eval()
        wrong = (study.forward(model, test.X).argmax(1) != test.y).nonzero().flatten()
    if len(wrong) == 0:
        raise ConfigError(f"{call}(inputs='misclassified after pruning'): the model of step "
                          f"{index} classifies every test example correctly; pick the first n "
                          "test examples or give indices instead.")
    return wrong[:n].tolist()
