"""Shapley values of two models on the same rows and background, and what changed between them.

Every explainer is shap's own. Tabular models get interventional Shapley values from shap's
``ExactExplainer`` (``exact``) or ``PermutationExplainer`` (``permutation``) with an
``Independent`` masker over all the background rows given: the value of a coalition ``S`` for
row ``x`` is the mean model output over the background rows with the features in ``S`` taken from
``x``. The model function shap calls converts its NumPy batch to a tensor once and runs it under
``torch.no_grad()``; shap's tabular masker hands it every coalition of a row (``exact``) or every
step of a permutation and its reverse (``permutation``) in one batch of ``coalitions x
background`` rows, so a 50-row, 30-feature comparison of two models takes one to three seconds
(plus a few seconds of numba compilation inside shap on the first call of a process); the
model function splits larger batches into forward passes of ``_ROWS_PER_FORWARD`` rows to bound
memory. ``kernel`` and, for images, ``gradient`` (expected gradients) and ``deep`` (DeepSHAP)
are shap's too. Results are ``shap.Explanation`` objects, usable with ``shap.plots.*``.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..core.errors import ConfigError, MissingDependencyError
from ..models.mechanisms.model_tools import logits_of
from .compare import rank_correlation
from .shapley_options import (
    CLASS_CHOICES,
    auto_nsamples,
    check_classes_choice,
    check_nsamples,
    pick_classes,
)

__all__ = ["EXPLAINERS", "OUTPUTS", "CLASS_CHOICES", "shapley_values", "compare_shapley",
           "ShapleyComparison"]

EXPLAINERS = ("auto", "exact", "permutation", "kernel", "gradient", "deep")
OUTPUTS = ("logits", "probability")
_EXACT_MAX_FEATURES = 14        # explainer="exact": 2**14 coalitions per row at most
_AUTO_EXACT_FEATURES = 12       # explainer="auto": exact up to here, permutation above
_ROWS_PER_FORWARD = 1 << 17     # largest batch the model function runs in one forward pass
_MASKS_PER_CALL = 1 << 16       # shap's batch_size (masks per model call); the Independent
                                # masker (delta masking) sends all of a call's masks at once

Forward = Callable[[nn.Module, torch.Tensor], torch.Tensor]


def _shap():
    try:
        import shap
    except ImportError as exc:
        raise MissingDependencyError.for_package("shap", "Shapley comparisons", "explain") from exc
    return shap


class _Output(nn.Module):
    """The model as shap sees it: inputs -> logits or probabilities, of the ``classes``
    explained only (all when ``None``; probabilities are a softmax over all classes first)."""

    def __init__(self, model: nn.Module, forward: Forward, output: str,
                 classes: Sequence[int] | None = None) -> None:
        super().__init__()
        self.model, self.forward_fn, self.output = model, forward, output
        self.classes = None if classes is None else list(classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.forward_fn(self.model, x)
        out = torch.softmax(out, dim=1) if self.output == "probability" else out
        return out if self.classes is None else out[:, self.classes]


def _numpy_model(f: nn.Module, dtype: torch.dtype) -> Callable[[np.ndarray], np.ndarray]:
    """The function shap's explainers call: one NumPy->torch conversion per call, no autograd,
    forward passes of up to ``_ROWS_PER_FORWARD`` rows, float64 out."""

    def call(a: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(np.ascontiguousarray(a)).to(dtype)
        with torch.no_grad():
            outs = [f(t[i:i + _ROWS_PER_FORWARD]) for i in range(0, len(t), _ROWS_PER_FORWARD)]
        return torch.cat(outs).double().numpy()

    return call


def _tabular(shap, f: nn.Module, dtype: torch.dtype, x: np.ndarray, background: np.ndarray,
             explainer: str, permutations: int, seed: int):
    """shap's Exact or Permutation explainer, Independent masker over every background row."""
    features = x.shape[1]
    masker = shap.maskers.Independent(background, max_samples=len(background))
    fn = _numpy_model(f, dtype)
    if explainer == "exact":
        if features > _EXACT_MAX_FEATURES:
            raise ConfigError.bad_value(
                "study.shapley", "explainer",
                f"'permutation' or 'kernel' for {features} features ('exact' enumerates all "
                f"2**features coalitions; at most {_EXACT_MAX_FEATURES} features)", "exact")
        return shap.explainers.Exact(fn, masker)(
            x, max_evals=max(2 ** features, 2), batch_size=_MASKS_PER_CALL, silent=True)
    if (isinstance(permutations, bool) or not isinstance(permutations, numbers.Integral)
            or permutations < 1):
        raise ConfigError.bad_value("study.shapley", "permutations", "an integer >= 1",
                                    permutations)
    # shap's PermutationExplainer seeds NumPy's global generator in its constructor and shuffles
    # with it; keep the caller's global state as it was.
    state = np.random.get_state()
    try:
        explainer_ = shap.explainers.Permutation(fn, masker, seed=int(seed))
        return explainer_(x, max_evals=int(permutations) * (2 * features + 1),
                          batch_size=_MASKS_PER_CALL, silent=True)
    finally:
        np.random.set_state(state)


def shapley_values(model: nn.Module, inputs, background, *, explainer: str = "auto",
                   output: str = "logits", forward: Forward | None = None, seed: int = 0,
                   permutations: int = 16, nsamples: int | str = "auto",
                   classes: Sequence[int] | None = None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """Shapley values of ``model`` on ``inputs`` against ``background``, by shap's explainers.

    ``exact`` and ``permutation`` are shap's ``ExactExplainer`` and ``PermutationExplainer`` with
    ``shap.maskers.Independent(background, max_samples=len(background))``; ``permutations`` is
    the number of shap permutations, each evaluated forward and reversed (shap's
    ``max_evals = permutations * (2 * features + 1)``), drawn by shap from ``seed``. ``kernel``
    is shap's ``KernelExplainer`` (``nsamples``), ``gradient`` and ``deep`` shap's
    ``GradientExplainer`` (``nsamples`` expected-gradient samples per row and class, ``"auto"``:
    shap's 200 up to 4096 input values per row, 32 above; ``rseed=seed``) and
    ``DeepExplainer``. ``classes`` restricts the outputs explained (and returned) to those
    indices, in that order: each class costs a gradient explainer its own passes.

    Returns
    -------
    values : ndarray (n, *input_shape, K)
    expected : ndarray (K,)
        The base value: mean output over the background.
    fx : ndarray (n, K)
        The model's output on each row.
    explainer : str
        The explainer used (``auto`` resolved).
    """
    if explainer not in EXPLAINERS:
        raise ConfigError.unknown_name("study.shapley", "explainer", EXPLAINERS, explainer)
    if output not in OUTPUTS:
        raise ConfigError.unknown_name("study.shapley", "output", OUTPUTS, output)
    forward = forward or (lambda m, x: logits_of(m(x)))
    x = torch.as_tensor(np.asarray(inputs), dtype=torch.float32)
    bg = torch.as_tensor(np.asarray(background), dtype=torch.float32)
    if x.dim() < 2 or bg.dim() != x.dim() or bg.shape[1:] != x.shape[1:] or not len(bg):
        raise ConfigError.bad_value("study.shapley", "background",
                                    f"rows shaped like the inputs {tuple(x.shape[1:])}",
                                    tuple(bg.shape))
    tabular = x.dim() == 2
    if explainer == "auto":
        explainer = (("exact" if x.shape[1] <= _AUTO_EXACT_FEATURES else "permutation")
                     if tabular else "gradient")
    if explainer in ("exact", "permutation", "kernel") and not tabular:
        raise ConfigError.bad_value("study.shapley", "explainer",
                                    "'gradient' or 'deep' for non-tabular inputs", explainer)
    check_nsamples(nsamples)
    nsamples = auto_nsamples(explainer, int(x[0].numel()), nsamples)
    from ..models.mechanisms.copies import detached_copy, needs_detached_copy

    shap = _shap()
    # shap's gradient and model-agnostic explainers only run the model and take input
    # gradients: a plain model is explained as it is (a copy of a ViT-B's weights is 343 MB);
    # a masked one, or DeepExplainer (it hooks every module), gets a detached copy
    copied = explainer == "deep" or needs_detached_copy(model)
    was = model.training
    f = _Output(detached_copy(model) if copied else model, forward, output, classes).eval()
    try:
        return _explain(shap, f, x, bg, explainer, nsamples, permutations, seed)
    finally:
        model.train(was)   # shap sets eval mode on what it is given


def _explain(shap, f: nn.Module, x: torch.Tensor, bg: torch.Tensor, explainer: str,
             nsamples: int, permutations: int, seed: int):
    """Shapley values of ``f`` (the model as shap sees it) with the chosen explainer."""
    dtype = next(iter(f.parameters()), torch.zeros(())).dtype
    x, bg = x.to(dtype), bg.to(dtype)
    with torch.no_grad():
        fx = f(x).double()
        expected = f(bg).double().mean(dim=0)
    if explainer in ("exact", "permutation"):
        result = _tabular(shap, f, dtype, x.numpy(), bg.numpy(), explainer, permutations, seed)
        phi = result.values
        expected = torch.as_tensor(np.asarray(result.base_values, dtype=np.float64)
                                   .reshape(len(x), -1).mean(axis=0))
    elif explainer == "kernel":
        phi = shap.KernelExplainer(_numpy_model(f, dtype), bg.numpy()).shap_values(
            x.numpy(), nsamples=nsamples, silent=True)
    elif explainer == "gradient":
        phi = shap.GradientExplainer(f, bg).shap_values(x, nsamples=int(nsamples), rseed=seed)
    else:
        phi = shap.DeepExplainer(f, bg).shap_values(x, check_additivity=False)
    phi = np.asarray(phi, dtype=np.float64)
    if phi.ndim == x.dim():           # single-output models come back without the K axis
        phi = phi[..., None]
    return phi, expected.numpy(), fx.numpy(), explainer


@dataclass
class ShapleyComparison:
    """Shapley values of two models on the same rows and background.

    ``before`` and ``after`` are ``shap.Explanation`` objects with values shaped
    ``(rows, *input_shape, outputs)``: pass them to ``shap.plots.*`` (select an output first,
    e.g. ``comp.before[..., 1]``).
    """

    before: object
    after: object
    explainer: str
    output: str
    fx_before: np.ndarray
    fx_after: np.ndarray
    feature_names: list[str]
    class_names: list[str]
    steps: tuple = (0, -1)

    @staticmethod
    def _importance(expl, fx: np.ndarray) -> np.ndarray:
        v = np.abs(np.asarray(expl.values))
        imp = v.reshape(v.shape[0], -1, v.shape[-1]).mean(axis=(0, 2))
        # values at rounding level of the outputs (a model that ignores its inputs gives
        # 1e-17s) are no importance: ranking them would score noise, even 1.0
        scale = max(float(np.abs(fx).max(initial=0.0)),
                    float(np.abs(np.asarray(expl.base_values)).max(initial=0.0)))
        return np.where(imp <= 1e-9 * scale, 0.0, imp)

    @property
    def importance_before(self) -> np.ndarray:
        """Global importance of each feature: mean |SHAP value| over rows and outputs (0
        where it is at the rounding level of the model's outputs)."""
        return self._importance(self.before, self.fx_before)

    @property
    def importance_after(self) -> np.ndarray:
        return self._importance(self.after, self.fx_after)

    @property
    def rank_correlation(self) -> float:
        """Spearman correlation of the global importances before and after."""
        return float(rank_correlation(self.importance_before[None],
                                      self.importance_after[None])[0])

    @staticmethod
    def _efficiency(expl, fx: np.ndarray) -> float:
        v = np.asarray(expl.values)
        total = v.reshape(v.shape[0], -1, v.shape[-1]).sum(axis=1)
        return float(np.abs(total - (fx - np.asarray(expl.base_values))).max())

    @property
    def efficiency_gap(self) -> dict[str, float]:
        """Largest ``|sum of values - (f(x) - E f(background))|`` for each model (0 up to
        rounding for ``exact`` and ``permutation``; sampling error for the others)."""
        return {"before": self._efficiency(self.before, self.fx_before),
                "after": self._efficiency(self.after, self.fx_after)}

    def to_frame(self):
        """One row per feature: importance and rank (1 = most important) before and after, and
        the rank shift (positive = gained importance); sorted by importance before."""
        import pandas as pd

        ib, ia = self.importance_before, self.importance_after
        frame = pd.DataFrame({"feature": self.feature_names, "importance_before": ib,
                              "importance_after": ia})
        frame["rank_before"] = frame["importance_before"].rank(ascending=False,
                                                               method="first").astype(int)
        frame["rank_after"] = frame["importance_after"].rank(ascending=False,
                                                             method="first").astype(int)
        frame["rank_shift"] = frame["rank_before"] - frame["rank_after"]
        return frame.sort_values("rank_before").reset_index(drop=True)

    def moved_most(self, n: int = 10):
        """The ``n`` features whose importance rank changed most."""
        frame = self.to_frame()
        order = frame["rank_shift"].abs().sort_values(ascending=False, kind="stable").index
        return frame.loc[order[:n]].reset_index(drop=True)

    def summary(self) -> dict[str, float]:
        gaps = self.efficiency_gap
        return {"rank_correlation": self.rank_correlation,
                "efficiency_gap_before": gaps["before"], "efficiency_gap_after": gaps["after"],
                "rows": float(len(self.fx_before))}

    def plot(self, ax=None, output: int | None = None, max_display: int = 12):
        """Tabular: global importance before/after (bars) and a beeswarm per model for one
        output (default: class 1 of a binary model, else class 0). Images: input and both
        models' maps for each row's predicted class. Returns the figure."""
        from .plots import plot_shapley

        return plot_shapley(self, ax=ax, output=output, max_display=max_display)

    def not_available(self) -> dict[str, str]:
        """Why ``rank_correlation`` is NaN, when it is: a model whose importances are all
        equal (e.g. all zero) ranks no feature."""
        if self.rank_correlation == self.rank_correlation:
            return {}
        from .compare import pair_reasons

        why = pair_reasons(self.importance_before[None], self.importance_after[None])[0]
        return {"rank_correlation": f"global importance {why or 'not rankable'}"}

    def __repr__(self) -> str:
        from .numbers import shown

        value = shown(self.rank_correlation, self.not_available().get("rank_correlation"))
        return (f"ShapleyComparison(explainer={self.explainer!r}, output={self.output!r}, "
                f"rows={len(self.fx_before)}, rank_correlation={value})")

    def _repr_html_(self) -> str:
        from .plots import html_report

        title = (f"Shapley comparison ({self.explainer}, {self.output}), step {self.steps[0]} "
                 f"vs {self.steps[1]}, these {len(self.fx_before)} rows")
        return html_report(title, self.summary(), self.moved_most(),
                           notes=self.not_available())


def compare_shapley(model_before: nn.Module, model_after: nn.Module, inputs, background, *,
                    explainer: str = "auto", output: str = "logits",
                    forward: Forward | None = None,
                    feature_names: Sequence[str] | None = None,
                    class_names: Sequence[str] | None = None, seed: int = 0,
                    steps: tuple = (0, -1), permutations: int = 16,
                    nsamples: int | str = "auto",
                    classes: str | Sequence[int] = "auto") -> ShapleyComparison:
    """Shapley values of two models on the same rows, against the same background.

    ``explainer`` (all shap's): ``exact`` (ExactExplainer, every coalition, up to 14
    features), ``permutation`` (PermutationExplainer, ``permutations`` random orders each also
    evaluated reversed, i.e. ``max_evals = permutations * (2 * features + 1)``, seeded by
    ``seed``), ``kernel`` (KernelExplainer, ``nsamples``), ``gradient`` or ``deep`` (for images);
    ``auto`` picks ``exact`` up to 12 features, ``permutation`` above, and ``gradient`` for
    images. Tabular explainers use an ``Independent`` masker over every background row. Both
    models see the same permutations. ``output`` explains ``"logits"`` or ``"probability"``
    (softmax).

    ``classes`` are the outputs explained, the same for both models: ``"all"``,
    ``"predicted"`` (the distinct classes ``model_before`` predicts on these rows: what the
    image plot shows), a list of class indices, or ``"auto"``: all for tabular rows, the
    predicted ones for images (shap's gradient explainer pays ``nsamples`` passes per row
    **per class**, so 1000 classes cost 1000 times one). ``nsamples`` goes to shap's
    ``GradientExplainer`` / ``KernelExplainer`` (see :func:`shapley_values`). Token inputs
    explain all classes.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> a = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    >>> comp = compare_shapley(a, a, torch.randn(5, 3), torch.randn(8, 3))
    >>> comp.explainer, comp.before.values.shape, round(comp.rank_correlation, 6)
    ('exact', (5, 3, 2), 1.0)
    """
    ids = inputs if isinstance(inputs, (torch.Tensor, Mapping)) else torch.as_tensor(
        np.asarray(inputs))
    if isinstance(ids, Mapping) or not (ids.is_floating_point() or ids.is_complex()):
        # token ids: Shapley values of token positions against a baseline token (tokens.py)
        from .token_compare import compare_token_shapley

        return compare_token_shapley(model_before, model_after, ids, explainer=explainer,
                                     output=output, forward=forward, class_names=class_names,
                                     seed=seed, steps=steps, permutations=permutations)
    from .tokens import check_float_inputs

    check_float_inputs(model_before, ids, forward, call="study.shapley")
    check_nsamples(nsamples)
    chosen = pick_classes(check_classes_choice(classes, None), model_before, ids, forward)
    shap = _shap()
    common = dict(explainer=explainer, output=output, forward=forward, seed=seed,
                  permutations=permutations, nsamples=nsamples, classes=chosen)
    phi_b, base_b, fx_b, used = shapley_values(model_before, inputs, background, **common)
    phi_a, base_a, fx_a, _ = shapley_values(model_after, inputs, background, **common)
    data = np.asarray(inputs, dtype=np.float32)
    shape = data.shape[1:]
    k = phi_b.shape[-1]
    if feature_names is None or len(feature_names) != int(np.prod(shape)):
        feature_names = ([f"x{i}" for i in range(shape[0])] if len(shape) == 1 else
                         [str(idx) for idx in np.ndindex(*shape)])
    index = list(chosen) if chosen is not None else list(range(k))
    known = class_names is not None and (len(class_names) > max(index) if chosen is not None
                                         else len(class_names) == k)
    names = [str(class_names[i]) if known else str(i) for i in index]

    def explanation(phi, base):
        return shap.Explanation(
            values=phi, base_values=np.tile(base, (len(data), 1)), data=data,
            feature_names=list(feature_names) if len(shape) == 1 else None,
            output_names=names)

    return ShapleyComparison(
        before=explanation(phi_b, base_b), after=explanation(phi_a, base_a), explainer=used,
        output=output, fx_before=fx_b, fx_after=fx_a, feature_names=list(feature_names),
        class_names=names, steps=tuple(steps))
