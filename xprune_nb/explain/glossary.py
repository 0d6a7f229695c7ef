"""One name and one plain meaning for every explanation-drift number.

The history table, the panel (tooltips), the figures and the report all take their labels from
:data:`GLOSSARY`, so a number is called the same everywhere and a person can read what it means.

Examples
--------
>>> label("saliency_rank_correlation")
'saliency rank correlation'
>>> "1 = the same" in meaning("saliency_rank_correlation")
True
"""

from __future__ import annotations

import html

__all__ = ["GLOSSARY", "TERMS", "label", "meaning", "glossary_html", "PROBE_NOTE"]

#: name -> (label, one-line plain meaning)
GLOSSARY: dict[str, tuple[str, str]] = {
    "saliency_rank_correlation": (
        "saliency rank correlation",
        "Mean Spearman correlation between the two models' saliency maps of the same inputs "
        "(ties share their mean rank): 1 = the same inputs matter in the same order, 0 = "
        "unrelated, -1 = reversed (a map whose sign flipped scores -1). An input whose map "
        "ranks nothing (all zero, constant or not finite) is left out of the mean and counted "
        "as n/a with its reason."),
    "saliency_topk_iou": (
        "saliency top-k overlap",
        "Overlap (intersection over union) of the most relevant features of the two maps, "
        "ranked by absolute value (the top 10% unless top_k says otherwise): 1 = the same "
        "most important pixels or features, 0 = none shared. A sign flip scores 1. Ties at "
        "the cut are all kept and features of zero relevance never count, so pixel order "
        "never matters; a map that ranks nothing is n/a."),
    "agreement": (
        "prediction agreement",
        "Share of inputs on which the two models predict the same class."),
    "deletion_auc": (
        "deletion AUC",
        "Area under the curve of the target class's probability (the true label when labels "
        "are given, else the first model's prediction) as the most relevant inputs (by signed "
        "relevance) are set to 0 first, in [0, 1]; lower = the map found the inputs the model "
        "really needs."),
    "insertion_auc": (
        "insertion AUC",
        "Area under the curve of the target class's probability as the most relevant inputs "
        "are put back first into an all-zero input (token models: a sequence of the baseline "
        "token), in [0, 1]; higher = the map found the inputs the model really needs."),
    "completeness": (
        "completeness",
        "Signed: sum of the attributions minus what they should add up to. Integrated "
        "gradients: minus f(x) - f(baseline), 0 up to the integration error. Shapley values: "
        "the same (efficiency), 0 up to rounding. LRP: minus the explained logit, 0 only for "
        "layers without biases and BatchNorm (see conserved share)."),
    "conserved_share": (
        "LRP conserved share",
        "Sum of the LRP input relevance divided by the explained logit it started from: 1 = "
        "conserved. Exactly 1 only without biases and BatchNorm (epsilon rule up to its "
        "stabiliser, z+, gamma); alpha-beta conserves only approximately."),
    "absorbed_share": (
        "LRP absorbed share",
        "1 - conserved share: the part of the logit that biases, merged BatchNorm shifts and "
        "the stabiliser took instead of passing it to the input (negative when they added "
        "relevance)."),
    "mass_in_box": (
        "relevance mass in box",
        "Share of a map's positive relevance inside the ground-truth box (relevance mass "
        "accuracy), in [0, 1]; a uniform map scores the box's share of the image."),
    "rank_accuracy": (
        "relevance rank accuracy",
        "Share of the K most relevant pixels (K = the box's size, signed relevance) that lie "
        "in the box, in [0, 1]; pixels tied at the cut share the remaining places."),
    "pointing": (
        "pointing game",
        "1 when a most relevant pixel lies in the box (any of them when several tie), else "
        "0; a constant map points nowhere (n/a)."),
    "macs_longest": (
        "longest-path MACs",
        "Multiply-accumulates of the most expensive path an input can take through a dynamic "
        "model (no early exit, the largest sliced path): the worst case; its MACs column is "
        "then the mean per example."),
    "exit_share": (
        "early exits",
        "Share of test inputs that a dynamic model answers at its early branch, without "
        "running the later layers."),
    "paths": (
        "sliced paths",
        "How many precomputed, smaller versions of the later layers a dynamic model has (one "
        "per cluster of predicted class subsets)."),
    "latency_b1_mean_ms": (
        "mean batch-1 latency",
        "Average time of one input on its own, in milliseconds (dynamic models: over the test "
        "inputs, each taking its own path)."),
    "latency_b1_p95_ms": (
        "worst-case batch-1 latency (p95)",
        "The time 95% of single inputs stay under: how slow the slow inputs are."),
    "shapley_rank_correlation": (
        "Shapley rank correlation",
        "Spearman correlation of the features' global importance (mean |Shapley value| over "
        "the explained rows and outputs) before and after, on the rows of that comparison: "
        "1 = the model ranks its features the same way."),
}

#: name -> (label, plain meaning) for the other numbers and words a report shows
TERMS: dict[str, tuple[str, str]] = {
    "accuracy": ("accuracy", "Share of the test examples the model classifies correctly."),
    "val_accuracy": ("validation accuracy",
                     "Share of the validation examples classified correctly."),
    "per_class_accuracy": ("accuracy per class", "Accuracy on the test examples of one class "
                           "only: shows a class the overall number hides."),
    "pp": ("pp (percentage points)", "The difference of two percentages: 92 % to 90 % is "
           "-2 pp (not -2 %)."),
    "params": ("parameters", "Number of weights and biases the model stores."),
    "nonzero_params": ("non-zero parameters", "Parameters that are not zero; masked "
                       "(unstructured) pruning zeroes weights without removing them."),
    "macs": ("MACs", "Multiply-accumulate operations for one input: the compute the model "
             "needs (dynamic models: the mean per example)."),
    "size_bytes": ("size", "Bytes of the model's parameters and buffers in memory (32-bit "
                   "floats)."),
    "sparsity": ("sparsity", "Share of zero weights in the prunable layers."),
    "latency_b1_ms": ("latency, batch 1", "Median time of one forward pass on a single "
                      "input, measured on this machine when the report was written."),
    "latency_b64_ms": ("latency, batch 64", "Median time of one forward pass on 64 inputs, "
                       "measured on this machine when the report was written."),
    "forgotten": ("forgotten example", "A test example the original model classified "
                  "correctly and the pruned one does not (a pruning-identified exemplar, "
                  "Hooker et al. 2019)."),
    "learned": ("learned example", "A test example the pruned model classifies correctly and "
                "the original did not."),
    "score": ("score", "How important the criterion found a unit (higher = more important); "
              "the least important units are removed first."),
    "normalized": ("normalized score", "The score divided by its layer's mean, so layers of "
                   "different scale can be ranked together."),
    "rank": ("rank", "Position of a unit among all units, 0 = least important (removed "
             "first)."),
    "percentile": ("percentile", "Where a unit's rank lies among all units, 0 to 100."),
    "relied_on_by": ("relied on by", "The classes for which the unit's relevance was within "
                     "80 % of its largest (class-aware criteria only)."),
    "probe": ("probe set", "A fixed set of test inputs, chosen when the study starts, on "
              "which every step's explanation drift is measured."),
    "relevance_flow": ("relevance flow", "How much of a class's evidence (its logit, split "
                       "by layer-wise relevance propagation) passes from one unit to a unit of "
                       "the next layer."),
    "cut_share": ("cut share", "Share of a class's relevance flow, before pruning, that went "
                  "through units the pruning removed."),
    "recovered": ("recovered", "The class's mean logit after pruning as a fraction of before: "
                  "1 = its evidence is as strong as before (re-routed through kept units)."),
}

#: why the history's drift and a comparison's drift differ
PROBE_NOTE = ("The history measures drift against the original model, with gradient saliency, "
              "on a fixed probe set of test inputs chosen when the study starts (shown as "
              "'probe'); a comparison measures it between the two steps you pick, with the "
              "method and inputs you pick (shown as 'these rows'). Both use the same "
              "definitions, so they differ only by what is compared; on the probe's inputs "
              "they agree exactly.")


def label(name: str) -> str:
    """The label of a drift number or report term (its name when it has none)."""
    return GLOSSARY.get(name, TERMS.get(name, (name, "")))[0]


def meaning(name: str) -> str:
    """The one-line plain meaning of a drift number or report term ('' when unknown)."""
    return GLOSSARY.get(name, TERMS.get(name, (name, "")))[1]


def glossary_html(names=None) -> str:
    """A definition list of drift numbers (``names``: only these, drift numbers or report
    terms, in that order), for reports and the panel."""
    names = list(GLOSSARY) if names is None else [n for n in names
                                                    if n in GLOSSARY or n in TERMS]
    items = "".join(f"<dt><b>{html.escape(label(n))}</b></dt><dd>{html.escape(meaning(n))}</dd>"
                    for n in names)
    return (f"<dl class='xprune-glossary'>{items}</dl>"
            f"<p class='xprune-glossary-note'>{html.escape(PROBE_NOTE)}</p>")
