"""Saliency maps of two models on the same inputs, and how far they drifted apart.

Methods: ``saliency`` (absolute input gradient, Simonyan et al. 2014), ``integrated_gradients``
(Sundararajan et al. 2017), ``gradcam`` (Selvaraju et al. 2017, on the last convolution),
``occlusion`` (Zeiler & Fergus 2014) through captum with captum's defaults, and ``lrp`` through
zennit (the same propagation as the ``lrp`` criterion). ``saliency`` is computed directly in
torch — it is one gradient, identical to ``captum.attr.Saliency`` (tested) — so the default
comparison does not pay captum's two-second import.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..core.errors import ConfigError, MissingDependencyError, ModelError
from ..models.mechanisms.model_tools import eval_mode, logits_of
from .compare import (
    Curve,
    PerInputDrift,
    deletion_insertion_auc,
    rank_correlation,
    topk_iou,
)

__all__ = ["METHODS", "CURVES", "gradient_saliency", "attribute", "compare_saliency",
           "SaliencyComparison", "conserved_share", "saliency_curves"]

Forward = Callable[[nn.Module, torch.Tensor], torch.Tensor]

#: Method name -> the options it accepts (passed on to captum / zennit).
METHODS: dict[str, tuple[str, ...]] = {
    "saliency": ("abs",),
    "integrated_gradients": ("n_steps", "baselines", "method", "internal_batch_size"),
    "gradcam": ("layer", "relu_attributions", "attr_dim_summation", "interpolate_mode"),
    "lrp": ("rule", "epsilon", "gamma", "alpha"),
    "occlusion": ("sliding_window_shapes", "strides", "baselines", "perturbations_per_eval"),
    # transformers only (explain/attention.py): Chefer et al. 2021 and Abnar & Zuidema 2020
    "attention_relevance": ("pool", "token_grid"),
    "attention_rollout": ("pool", "token_grid", "head_fusion"),
}


def _default_forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return logits_of(model(x))


def gradient_saliency(model: nn.Module, x: torch.Tensor, targets: torch.Tensor,
                      forward: Forward | None = None, *, abs: bool = True
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient of each input's target logit w.r.t. the input (absolute by default), and the
    logits. Same numbers as ``captum.attr.Saliency(f).attribute(x, target=targets)``."""
    forward = forward or _default_forward
    x = x.detach().clone().requires_grad_(True)
    with eval_mode(model), torch.enable_grad():
        logits = forward(model, x)
        chosen = logits.gather(1, targets.view(-1, 1).long()).sum()
        (grad,) = torch.autograd.grad(chosen, x)
    return (grad.abs() if abs else grad), logits.detach()


def check_method(method, options: dict, call: str) -> None:
    """Refuse an unknown saliency ``method`` or an option it does not take, naming ``call``
    (checked before anything runs, also where no map ends up being computed)."""
    if not isinstance(method, str) or method not in METHODS:
        raise ConfigError.unknown_name(call, "method", METHODS, method)
    unknown = sorted(set(options) - set(METHODS[method]))
    if unknown:
        raise ConfigError(
            f"{call}(method={method!r}): unknown option(s) {unknown}; options of "
            f"{method!r} are: {', '.join(METHODS[method]) or 'none'}.")


def _captum():
    try:
        import captum.attr as attr
    except ImportError as exc:
        raise MissingDependencyError.for_package("captum", "This saliency method",
                                                 "explain") from exc
    return attr


def _last_conv(model: nn.Module, x: torch.Tensor, forward: Forward) -> nn.Module:
    """The convolution that runs last in the forward pass (definition order can differ)."""
    ran: list[nn.Module] = []
    handles = [m.register_forward_hook(lambda mod, i, o: ran.append(mod))
               for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd)]
    try:
        with torch.no_grad():
            forward(model, x[:1])
    finally:
        for h in handles:
            h.remove()
    if not ran:
        raise ConfigError.bad_value("study.saliency", "method",
                                    "a method other than 'gradcam' (the model has no "
                                    "convolution)", "gradcam")
    return ran[-1]


def _occlusion_defaults(shape: Sequence[int]) -> dict:
    if len(shape) == 3:
        c, h, w = shape
        wh, ww = max(1, round(h / 4)), max(1, round(w / 4))
        return {"sliding_window_shapes": (c, wh, ww),
                "strides": (c, max(1, wh // 2), max(1, ww // 2))}
    return {"sliding_window_shapes": (1,) * len(shape), "strides": 1}


def attribute(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, method: str = "saliency",
              *, forward: Forward | None = None, **options
              ) -> tuple[np.ndarray, np.ndarray | None]:
    """Attributions shaped like ``x`` for ``targets``, and the signed completeness gap of the
    methods that promise one (``None`` for the others), per input:

    - Integrated Gradients: ``sum of attributions - (f(x) - f(baseline))`` (captum's
      convergence delta); 0 up to the integration error.
    - LRP: ``sum of input relevance - f(x)``, where ``f(x)`` is the explained logit LRP starts
      from. 0 only for layers without biases and without BatchNorm (epsilon rule up to its
      stabiliser, z+, gamma); biases and merged BatchNorm shifts absorb relevance, so the gap
      is usually not 0 (:func:`compare_saliency` reports the conserved share).

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(3, 2))
    >>> maps, _ = attribute(net, torch.ones(2, 3), torch.tensor([0, 1]))
    >>> maps.shape
    (2, 3)
    """
    check_method(method, options, "study.saliency")
    forward = forward or _default_forward
    x = x.detach().float()
    targets = targets.long()
    completeness = None
    if method == "saliency":
        maps, _ = gradient_saliency(model, x, targets, forward, abs=options.get("abs", True))
        return maps.numpy(), None
    if method in ("attention_relevance", "attention_rollout"):
        from ..models.mechanisms.attention import maps as attention

        explain = getattr(attention, method)
        return explain(model, x, targets, forward=forward, **options).detach().numpy(), None
    if method == "lrp":
        from ..models.mechanisms.lrp import LRPRunner

        runner = LRPRunner(model, forward, call="study.saliency(method='lrp')", **options)
        out = runner.run(x, targets, input_relevance=True)
        start = out.logits.double().gather(1, targets.view(-1, 1)).squeeze(1)
        gap = out.input_relevance.double().flatten(1).sum(1) - start
        return out.input_relevance.numpy(), gap.numpy()
    attr = _captum()

    def f(inp: torch.Tensor) -> torch.Tensor:
        return forward(model, inp)

    with eval_mode(model):
        if method == "integrated_gradients":
            maps, delta = attr.IntegratedGradients(f).attribute(
                x, target=targets, return_convergence_delta=True, **options)
            completeness = delta.detach().double().numpy()
        elif method == "gradcam":
            opts = dict(options)
            layer = opts.pop("layer", None) or _last_conv(model, x, forward)
            if isinstance(layer, str):
                layer = dict(model.named_modules())[layer]
            mode = opts.pop("interpolate_mode", "nearest")
            cam = attr.LayerGradCam(f, layer).attribute(x, target=targets, **opts)
            if x.dim() != 4 or cam.dim() != 4:
                raise ConfigError.bad_value("study.saliency", "method",
                                            "'gradcam' only for image inputs (N, C, H, W)",
                                            method)
            cam = attr.LayerAttribution.interpolate(cam, tuple(x.shape[2:]), mode)
            maps = cam.expand_as(x)
        else:
            opts = {**_occlusion_defaults(x.shape[1:]), "perturbations_per_eval": 16, **options}
            maps = attr.Occlusion(f).attribute(x, target=targets, **opts)
    return maps.detach().numpy().astype(np.float32), completeness


def conserved_share(gap, start) -> np.ndarray:
    """Share of the relevance LRP started from that reached the input: ``(start + gap) /
    start`` per input (``gap`` = sum of input relevance - start); NaN where the explained
    logit is 0 (nothing to conserve).

    Examples
    --------
    >>> conserved_share(np.array([-0.5, 0.0, 1.0]), np.array([2.0, 3.0, 0.0])).tolist()
    [0.75, 1.0, nan]
    """
    gap, start = np.asarray(gap, dtype=np.float64), np.asarray(start, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(start != 0, (start + gap) / np.where(start != 0, start, 1), np.nan)


@dataclass
class SaliencyComparison(PerInputDrift):
    """Saliency maps of two models on the same inputs for the same targets, with drift numbers.

    Attributes
    ----------
    method : str
    inputs, before, after : ndarray
        The inputs and both models' maps, all shaped like the inputs.
    targets, pred_before, pred_after : ndarray of int
    spearman, topk_iou : ndarray
        Per input: rank correlation of the two maps, and intersection-over-union of their top
        ``top_k`` fraction of features (pixels for images).
    deletion_before, deletion_after, insertion_before, insertion_after : ndarray
        Per input, each model's deletion (lower is better) and insertion (higher is better)
        AUC with its own map. Computed on first ask when the comparison was made with
        ``curves="lazy"`` (``study.saliency``'s default): reading one, :meth:`to_frame`,
        :meth:`summary` or :meth:`measure_curves` computes all four; the displays show "not
        measured yet" until then (:attr:`curves_pending`).
    completeness_before, completeness_after : ndarray or None
        Signed completeness gap per input (Integrated Gradients: ``sum(map) - (f(x) -
        f(baseline))``; LRP: ``sum(map) - f(x)``); ``None`` for methods that promise none.
    conserved_share_before, conserved_share_after : ndarray or None
        LRP only: ``sum(map) / f(x)``, the share of the explained logit that reached the
        input (1 = conserved).
    absorbed_share_before, absorbed_share_after : ndarray or None
        LRP only: ``1 - conserved share``, what biases, merged BatchNorm shifts and the
        stabiliser took (negative when they added relevance).
    """

    method: str
    inputs: np.ndarray
    targets: np.ndarray
    before: np.ndarray
    after: np.ndarray
    pred_before: np.ndarray
    pred_after: np.ndarray
    spearman: np.ndarray
    topk_iou: np.ndarray
    # descriptor fields: a deferred computation fills them on first read (compare.Curve)
    deletion_before: np.ndarray | None = Curve()
    deletion_after: np.ndarray | None = Curve()
    insertion_before: np.ndarray | None = Curve()
    insertion_after: np.ndarray | None = Curve()
    completeness_before: np.ndarray | None = None
    completeness_after: np.ndarray | None = None
    class_names: list[str] | None = None
    feature_names: list[str] | None = None
    conserved_share_before: np.ndarray | None = None
    conserved_share_after: np.ndarray | None = None
    absorbed_share_before: np.ndarray | None = None
    absorbed_share_after: np.ndarray | None = None
    steps: tuple = (0, -1)
    top_k: float = 0.1
    options: dict = field(default_factory=dict)

    def plot(self, ax=None, max_inputs: int = 8):
        """Images: a grid input / before / after / difference (returns the figure). Tabular:
        mean absolute attribution per feature before vs after (returns the axes)."""
        from .plots import plot_saliency

        return plot_saliency(self, ax=ax, max_inputs=max_inputs)

    def __repr__(self) -> str:
        return (f"SaliencyComparison(method={self.method!r}, inputs={len(self.targets)}, "
                f"steps={self.steps}, "
                f"{self._summary_text('saliency_rank_correlation', 'agreement')})")

    def _repr_html_(self) -> str:
        return self._summary_html(f"Saliency comparison ({self.method}), step {self.steps[0]} "
                                  f"vs {self.steps[1]}, {len(self.targets)} inputs")


#: what ``curves=`` takes: compute the deletion/insertion curves now, or on first ask
CURVES = (True, "lazy")


def check_curves(curves, call: str) -> None:
    """Refuse a ``curves=`` value other than ``True`` or ``"lazy"``, naming ``call``."""
    if not (curves is True or (isinstance(curves, str) and curves == "lazy")):
        raise ConfigError.bad_value(call, "curves", "True (now) or 'lazy' (on first ask)",
                                    curves)


def saliency_curves(model_before: nn.Module, model_after: nn.Module, x: torch.Tensor, before,
                    after, targets, forward: Forward | None = None) -> tuple:
    """Deletion and insertion AUCs of both models with their own maps: ``(deletion_before,
    deletion_after, insertion_before, insertion_after)``, the order of
    :data:`~xprune_nb.explain.compare.CURVE_COLUMNS`."""
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    targets = torch.as_tensor(np.asarray(targets)).long()
    del_b, ins_b = deletion_insertion_auc(model_before, x, before, targets, forward=forward)
    del_a, ins_a = deletion_insertion_auc(model_after, x, after, targets, forward=forward)
    return del_b, del_a, ins_b, ins_a


def compare_saliency(model_before: nn.Module, model_after: nn.Module, inputs, *, labels=None,
                     method: str = "saliency", forward: Forward | None = None,
                     class_names: Sequence[str] | None = None, steps: tuple = (0, -1),
                     top_k: float = 0.1, feature_names: Sequence[str] | None = None,
                     curves: bool | str = True, **method_options) -> SaliencyComparison:
    """Compare two models' saliency maps on the same inputs, for the same target classes.

    The target of each input is its label when ``labels`` are given, else the prediction of
    ``model_before``; both models are explained for that same class. Method options default to
    captum's (e.g. Integrated Gradients: zero baseline, 50 steps).

    ``curves=True`` computes the deletion/insertion curves (``2 x 21`` forward passes per input
    and model) now; ``curves="lazy"`` on first ask, with these two model objects, which must
    then be unchanged until that ask (``study.saliency`` instead rebuilds its steps' models
    then). Token inputs always compute them now.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> a = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    >>> b = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    >>> comp = compare_saliency(a, b, torch.randn(5, 4), labels=torch.tensor([0, 1, 2, 0, 1]))
    >>> comp.before.shape, comp.spearman.shape
    ((5, 4), (5,))
    """
    if not 0 < top_k <= 1:
        raise ConfigError.bad_value("study.saliency", "top_k", "a fraction in (0, 1]", top_k)
    check_curves(curves, "study.saliency")
    if isinstance(inputs, Mapping):   # a dict / BatchEncoding of token inputs
        from .token_compare import compare_token_saliency

        return compare_token_saliency(model_before, model_after, inputs, labels=labels,
                                      method=method, forward=forward, class_names=class_names,
                                      steps=steps, top_k=top_k, **method_options)
    forward = forward or _default_forward
    x = torch.as_tensor(np.asarray(inputs) if not isinstance(inputs, torch.Tensor) else inputs)
    if not (x.is_floating_point() or x.is_complex()):
        # token ids: attributed to tokens through the embedding layer, never cast to float
        from .token_compare import compare_token_saliency

        return compare_token_saliency(model_before, model_after, x, labels=labels,
                                      method=method, forward=forward, class_names=class_names,
                                      steps=steps, top_k=top_k, **method_options)
    from .tokens import check_float_inputs

    check_float_inputs(model_before, x, forward)
    x = x.detach().float()
    if x.dim() < 2 or len(x) == 0:
        raise ConfigError.bad_value("study.saliency", "inputs", "a non-empty batch (N, ...)",
                                    tuple(x.shape))
    with torch.no_grad(), eval_mode(model_before), eval_mode(model_after):
        logits_b, logits_a = forward(model_before, x), forward(model_after, x)
    if logits_b.dim() != 2:
        raise ModelError(f"study.saliency: expected logits (batch, classes), got "
                         f"{tuple(logits_b.shape)}.")
    pred_b, pred_a = logits_b.argmax(1), logits_a.argmax(1)
    targets = pred_b if labels is None else torch.as_tensor(np.asarray(labels)).long().view(-1)
    if len(targets) != len(x):
        raise ConfigError.bad_value("study.saliency", "labels", f"{len(x)} labels", len(targets))
    before, comp_b = attribute(model_before, x, targets, method, forward=forward,
                               **method_options)
    after, comp_a = attribute(model_after, x, targets, method, forward=forward, **method_options)
    shares = {}
    if method == "lrp":
        for side, gap, logits in (("before", comp_b, logits_b), ("after", comp_a, logits_a)):
            shares[f"conserved_share_{side}"] = conserved_share(
                gap, logits.double().gather(1, targets.view(-1, 1)).squeeze(1).numpy())
            shares[f"absorbed_share_{side}"] = 1.0 - shares[f"conserved_share_{side}"]
    comparison = SaliencyComparison(**shares,
        method=method, inputs=x.numpy(), targets=targets.numpy(), before=before, after=after,
        pred_before=pred_b.numpy(), pred_after=pred_a.numpy(),
        spearman=rank_correlation(before, after), topk_iou=topk_iou(before, after, top_k),
        completeness_before=comp_b, completeness_after=comp_a,
        class_names=list(class_names) if class_names is not None else None,
        feature_names=list(feature_names) if feature_names is not None else None,
        steps=tuple(steps), top_k=top_k, options=dict(method_options))
    comparison.defer_curves(lambda: saliency_curves(model_before, model_after, x, before, after,
                                                    targets, forward))
    if curves is True:
        comparison.measure_curves()
    return comparison
