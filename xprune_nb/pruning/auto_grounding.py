"""The grounding constraint of ``auto_prune``: explanations must stay on the evidence.

``max_grounding_drop`` bounds how far the mean relevance mass on the evidence (or the pointing
game hit rate) of the validation split may fall below that of the model auto_prune starts
from. The evidence is either the boxes that ship with the data (``digits_boxes``,
:func:`xprune_nb.data.ground_truth.boxes`) or a user-given mask per validation row. Each map is
an attribution of the row's true class by ``grounding_method`` (any ``Study.saliency`` method);
channels of image maps are summed per pixel, as :mod:`xprune_nb.explain.grounding` does, so
with boxes the numbers are exactly those of ``relevance_mass_in_box`` and ``pointing_game``.

Examples
--------
>>> import numpy as np
>>> maps = np.zeros((1, 1, 4, 4)); maps[0, 0, 0, 0] = 3.0; maps[0, 0, 3, 3] = 1.0
>>> mask = np.zeros((1, 4, 4), bool); mask[0, :2, :2] = True
>>> mass_in_mask(maps, mask).tolist(), pointing_in_mask(maps, mask).tolist()
([0.75], [1.0])
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..core.errors import ConfigError

__all__ = ["METRICS", "GroundingCheck", "grounding_check", "mass_in_mask", "pointing_in_mask"]

#: ``grounding_metric`` names: share of positive relevance in the mask, or whether the most
#: relevant pixel lies in it
METRICS = ("mass", "pointing")
#: at most this many validation rows are explained per round (stratified by class): every
#: round explains them once, so the constraint's cost stays bounded on large splits
MAX_ROWS = 256
_BATCH = 64


def _align(maps, masks) -> tuple[np.ndarray, np.ndarray]:
    """Maps and masks as ``(N, features)``: image maps ``(N, C, H, W)`` summed over channels
    (masks ``(N, H, W)`` or ``(N, C, H, W)``, the latter reduced with "any" over channels)."""
    a = np.asarray(maps, dtype=np.float64)
    m = np.asarray(masks).astype(bool)
    if a.ndim == 4:
        a = a.sum(1)
        if m.ndim == 4:
            m = m.any(1)
    return a.reshape(len(a), -1), m.reshape(len(m), -1)


def mass_in_mask(maps, masks) -> np.ndarray:
    """Per map, ``sum_mask R+ / sum R+`` (NaN for a map without positive relevance or with a
    non-finite entry): ``relevance_mass_in_box`` for any evidence mask."""
    a, m = _align(maps, masks)
    r = np.clip(a, 0, None)
    total = r.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(total > 0, (r * m).sum(1) / np.where(total > 0, total, 1), np.nan)
    return np.where(np.isfinite(a).all(1), out, np.nan)


def pointing_in_mask(maps, masks) -> np.ndarray:
    """Per map, 1.0 when a most relevant entry lies in the mask, else 0.0 (NaN for a constant
    or non-finite map): ``pointing_game`` for any evidence mask."""
    a, m = _align(maps, masks)
    with np.errstate(invalid="ignore"):
        hit = ((a == a.max(1, keepdims=True)) & m).any(1).astype(np.float64)
        constant = a.max(1) == a.min(1)
    return np.where(constant | ~np.isfinite(a).all(1), np.nan, hit)


def _box_masks(boxes: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    from ..explain.grounding import _inside

    return _inside(np.asarray(boxes), tuple(shape[-2:]))


class GroundingCheck:
    """The grounding of one study's models on its validation split (and, for the report, its
    test split). Every argument is checked when it is built, before auto_prune changes
    anything.

    Parameters
    ----------
    study : Study
    call : str
    limit : float
        ``max_grounding_drop`` (already range-checked).
    metric : {"mass", "pointing"}
    masks : array or dict, optional
        Evidence per validation row, shaped like the inputs (``(N, *input_shape)``) or, for
        images, ``(N, H, W)``; or ``{"val": masks, "test": masks}`` (test masks make the test
        report possible on data without boxes). ``None``: the data's boxes.
    method : str
        The explanation method (``Study.saliency``'s ``method``).
    """

    def __init__(self, study, call: str, limit: float, metric: str, masks, method: str) -> None:
        from ..explain.saliency import METHODS

        if metric not in METRICS:
            raise ConfigError.unknown_name(call, "grounding_metric", METRICS, metric)
        if method not in METHODS:
            raise ConfigError.unknown_name(call, "grounding_method", METHODS, method)
        self.study, self.call, self.limit = study, call, float(limit)
        self.metric, self.method = metric, method
        shape = tuple(study.data.val.X.shape[1:])
        if masks is None:
            from ..data.ground_truth import boxes

            if (getattr(study.data, "source", None) or {}).get("name") != "digits_boxes":
                raise ConfigError.bad_value(
                    call, "max_grounding_drop", "data with evidence boxes (digits_boxes) or "
                    "grounding_masks= (one evidence mask per validation row)",
                    f"max_grounding_drop={limit!r} on data without boxes and no masks")
            self.masks = {s: _box_masks(boxes(study.data, s), shape) for s in ("val", "test")}
        else:
            given = dict(masks) if isinstance(masks, dict) else {"val": masks}
            unknown = sorted(set(given) - {"val", "test"})
            if unknown or "val" not in given:
                raise ConfigError.bad_value(call, "grounding_masks", "an array of validation "
                                            "masks or a dict with 'val' (and optionally "
                                            "'test')", f"keys {sorted(given)}")
            self.masks = {s: self._checked(m, s, shape) for s, m in given.items()}
        self.rows = self._rows()

    def _checked(self, masks, split: str, shape: tuple[int, ...]) -> np.ndarray:
        n = len(self.study.data.split(split))
        m = np.asarray(getattr(masks, "detach", lambda: masks)())
        allowed = [(n, *shape)] + ([(n, *shape[-2:])] if len(shape) == 3 else [])
        if m.shape not in allowed or not (m.dtype == bool or np.issubdtype(m.dtype, np.number)):
            want = " or ".join(str(a) for a in allowed)
            raise ConfigError.bad_value(self.call, "grounding_masks", f"{split} masks shaped "
                                        f"{want} (one per {split} row, like its inputs)",
                                        f"shape {m.shape}")
        if np.issubdtype(m.dtype, np.number) and not np.isin(m, (0, 1)).all():
            raise ConfigError.bad_value(self.call, "grounding_masks", "boolean or 0/1 masks",
                                        "other values")
        m = m.astype(bool)
        empty = np.flatnonzero(~m.reshape(n, -1).any(1))
        if empty.size:
            raise ConfigError.bad_value(self.call, "grounding_masks", f"a non-empty mask for "
                                        f"every {split} row", f"empty masks at rows "
                                        f"{empty[:5].tolist()}")
        return m

    def _rows(self) -> np.ndarray:
        from ..data import stratified_indices

        y = self.study.data.val.y
        if len(y) <= MAX_ROWS:
            return np.arange(len(y))
        return np.sort(stratified_indices(y, MAX_ROWS, seed=self.study.seed,
                                          call=self.call).numpy())

    def value(self, model, split: str = "val", rows=None) -> float:
        """Mean grounding of ``model`` on ``split`` (all rows, or ``rows``; NaN when no map
        has a number)."""
        from ..explain.numbers import finite_mean
        from ..explain.saliency import attribute

        part = self.study.data.split(split)
        rows = np.arange(len(part)) if rows is None else rows
        per = mass_in_mask if self.metric == "mass" else pointing_in_mask
        out = []
        for i in range(0, len(rows), _BATCH):
            idx = torch.as_tensor(rows[i:i + _BATCH])
            maps, _ = attribute(model, part.X[idx], part.y[idx], self.method,
                                forward=self.study.forward)
            out.append(per(maps, self.masks[split][idx.numpy()]))
        return finite_mean(np.concatenate(out)) if out else math.nan

    def reference(self, model) -> float:
        """The start model's validation grounding (refused when it has none); its test
        grounding too, for the report."""
        self.ref = self.value(model, "val", self.rows)
        if not math.isfinite(self.ref):
            raise ConfigError.bad_value(self.call, "max_grounding_drop", f"a model whose "
                                        f"{self.method} maps have a {self.metric} on the "
                                        "evidence", "maps without positive relevance")
        self.test_start = self.value(model, "test") if "test" in self.masks else math.nan
        return self.ref

    def judge(self, model) -> tuple[str | None, dict]:
        """A broken-limit sentence (or None) and the values for the round's record."""
        now = self.value(model, "val", self.rows)
        drop = self.ref - now
        values = {"grounding": now, "grounding_drop": drop}
        if not drop <= self.limit:       # NaN (maps vanished) breaks it too
            return (f"grounding ({self.label}) drop {drop:.4f} > max_grounding_drop="
                    f"{self.limit}", values)
        return None, values

    @property
    def label(self) -> str:
        return f"{'relevance mass' if self.metric == 'mass' else 'pointing game'}, {self.method}"

    def report(self, end_model) -> dict:
        """Validation and test grounding of the start and end models (test: NaN with a reason
        when there are no test masks)."""
        out = {"method": self.method, "metric": self.metric, "limit": self.limit,
               "val_start": self.ref, "val_end": self.value(end_model, "val", self.rows)}
        if "test" in self.masks:
            out["test_start"] = self.test_start
            out["test_end"] = self.value(end_model, "test")
            out["test_note"] = ""
        else:
            out["test_start"] = out["test_end"] = math.nan
            out["test_note"] = "n/a: no test masks given (grounding_masks={'test': ...})"
        return out

    def sentence(self, report: dict) -> str:
        if report["test_note"]:
            test = report["test_note"]
        else:
            test = f"test {report['test_start']:.3f} -> {report['test_end']:.3f}"
        return (f"grounding ({self.label}): val {report['val_start']:.3f} -> "
                f"{report['val_end']:.3f} (max drop {self.limit:g}), {test}")



def grounding_check(study, call: str, limit, metric: str, masks, method: str):
    """auto_prune's grounding constraint, checked now (before anything changes), or None
    when ``max_grounding_drop`` is not set (then ``grounding_masks`` is refused)."""
    if limit is None:
        if masks is not None:
            raise ConfigError.bad_value(call, "grounding_masks", "masks only together with "
                                        "max_grounding_drop=", "masks without a limit")
        return None
    return GroundingCheck(study, call, limit, metric, masks, method)
