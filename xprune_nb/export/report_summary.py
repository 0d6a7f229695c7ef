"""The report's opening: a plain-language summary generated from the study.

Six short paragraphs, each from the study's own record and measurements: what was pruned and
by how much; size, compute and measured speed; accuracy overall and per class (the classes that
lost most named); what pruning forgot; how the explanations changed; what to watch. Every
number is one of the study's values (``Metrics``, the history, the drift table), formatted
once by :mod:`.report_format`.
"""

from __future__ import annotations

import html

from .report_context import ReportContext
from .report_format import fmt, num

__all__ = ["summary_html", "WATCH"]

#: thresholds of "what to watch" (a class losing this much, explanations moving this much)
WATCH = {"class_drop": 0.05, "accuracy_drop": 0.02, "agreement": 0.95,
         "saliency_rank_correlation": 0.5, "shapley_rank_correlation": 0.5}


def _units_removed(ctx: ReportContext) -> list[str]:
    """One phrase per granularity: units removed of the units there were."""
    study, out = ctx.study, []
    by_kind: dict[str, list[int]] = {}
    for step in ctx.prune_steps():
        kind = step.config.get("granularity", "?")
        removed = sum(len(v) for v in step.removed.values())
        first = by_kind.setdefault(kind, [0, 0])
        if first[1] == 0:
            scores = study.scores_at(step.parent)
            first[1] = sum(v.numel() for v in scores.values.values()) if scores else 0
        first[0] += removed
    for kind, (removed, total) in by_kind.items():
        noun = "weights" if kind == "weight" else f"{kind} units"
        if total:
            out.append(f"{num(removed, 'units_removed')} of {num(total, 'units')} {noun} "
                       f"({num(removed / total, 'units_removed_share')})")
        else:
            out.append(f"{num(removed, 'units_removed')} {noun}")
    return out


def _what_was_pruned(ctx: ReportContext) -> str:
    steps = ctx.prune_steps()
    if not steps:
        return ("Nothing has been pruned yet: the report compares the original model with "
                f"step {ctx.after} ({html.escape(ctx.step_after.label)}).")
    actions = "; ".join(f"step {s.index}: {html.escape(s.label)}"
                        for s in ctx.study.timeline.path(ctx.after) if s.index)
    return (f"The model was pruned in {len(steps)} step{'s' * (len(steps) > 1)}, removing "
            f"{', '.join(_units_removed(ctx))}. Its history: {actions}.")


def _change(before, after) -> str:
    if not before or before != before or after != after:
        return ""
    return f" ({(after - before) / before:+.1%})".replace("%", " %")


def _size_and_speed(ctx: ReportContext) -> str:
    ctx.terms.use("params", "macs", "size_bytes")
    b, a = ctx.step_before.metrics, ctx.step_after.metrics
    parts = [f"{label} {num(b.get(k), k)} → {num(a.get(k), k)}{_change(b.get(k), a.get(k))}"
             for k, label in (("params", "Parameters"), ("macs", "MACs"),
                              ("size_bytes", "size"))]
    if b.get("nonzero_params") != b.get("params") or a.get("nonzero_params") != a.get("params"):
        ctx.terms.use("nonzero_params")
        k = "nonzero_params"
        parts.append(f"non-zero parameters {num(b.get(k), k)} → {num(a.get(k), k)}"
                     f"{_change(b.get(k), a.get(k))}")
    text = "; ".join(parts) + "."
    if not ctx.latency:
        return text + " Speed was not measured (latency=False)."
    mb, ma = ctx.metrics("before"), ctx.metrics("after")
    if mb is None or ma is None:
        return text + " Speed: n/a: " + html.escape(ctx.missing.get("metrics_before")
                                                    or ctx.missing.get("metrics_after", ""))
    speed = []
    for bs in sorted(set(mb.latency_ms) & set(ma.latency_ms)):
        key = f"latency_b{bs}_ms"
        ctx.terms.use(key)
        lb, la = mb.latency_ms[bs], ma.latency_ms[bs]
        ratio = f", {lb / la:.2g}× as fast" if la and la == la else ""
        speed.append(f"batch {bs}: {num(lb, key)} → {num(la, key)}{ratio}")
    if speed:
        text += " Measured speed on this machine (median forward time) — " + "; ".join(
            speed) + "."
    if ctx.step_after.masked and not any(s.get("kind") != "weight"
                                         for s in ctx.step_after.structure):
        text += (" The pruning was unstructured (weights masked to zero): dense kernels run "
                 "no faster for it.")
    return text


def _accuracy(ctx: ReportContext) -> str:
    ctx.terms.use("accuracy", "per_class_accuracy", "pp")
    b, a = ctx.step_before.metrics["accuracy"], ctx.step_after.metrics["accuracy"]
    text = (f"Test accuracy {num(b, 'accuracy_before')} → {num(a, 'accuracy_after')} "
            f"({num(a - b, 'accuracy_change')}).")
    rows = sorted(ctx.per_class(), key=lambda r: r[2] - r[1])
    losers = [r for r in rows if r[2] - r[1] < 0][:3]
    if losers:
        text += " Classes that lost most: " + "; ".join(
            f"<b>{html.escape(name)}</b> {num(bb, f'accuracy_before[{name}]')} → "
            f"{num(aa, f'accuracy_after[{name}]')} ({num(aa - bb, f'accuracy_change[{name}]')})"
            for name, bb, aa in losers) + "."
    elif rows:
        text += " No class lost accuracy."
    return text


def _forgotten(ctx: ReportContext) -> str:
    report = ctx.forgotten
    if report is None:
        return "What pruning forgot: n/a: " + html.escape(ctx.missing.get("forgotten", ""))
    ctx.terms.use("forgotten", "learned")
    s = report.summary()
    text = (f"{num(s['changed'], 'changed')} test examples "
            f"({num(s['changed_fraction'], 'changed_fraction')}) changed their prediction: "
            f"{num(s['forgotten'], 'forgotten')} forgotten (right before, wrong after) and "
            f"{num(s['learned'], 'learned')} learned.")
    per = report.per_class()
    per = per[per["forgotten"] > 0].sort_values("forgotten", ascending=False, kind="stable")
    if len(per):
        text += " Forgotten per class: " + ", ".join(
            f"{html.escape(str(r['class']))} "
            f"{num(int(r['forgotten']), 'forgotten[' + str(r['class']) + ']')}"
            for _, r in per.head(5).iterrows()) + "."
    return text


def _explanations(ctx: ReportContext) -> str:
    row = ctx.drift_row
    names = [k for k in ("agreement", "saliency_rank_correlation", "saliency_topk_iou")
             if k in row]
    from ..explain.glossary import label

    parts = []
    note = row.get("saliency_reason")
    note = note if isinstance(note, str) and note else None
    for k in names:
        ctx.terms.use(k)
        why = note if k.startswith("saliency") else None
        parts.append(f"{html.escape(label(k))} {num(row[k], k, reason=why)}")
    if note and all(row[k] == row[k] for k in names):   # some probe inputs left out, and why
        parts.append(f"saliency numbers: {html.escape(note)}")
    text = ""
    if parts:
        ctx.terms.use("probe")
        text = ("Compared with the original on the probe set of "
                f"{num(len(ctx.study.probe_y), 'probe_size')} test inputs: "
                + "; ".join(parts) + ".")
    shap = ctx.shapley
    if shap is not None:
        ctx.terms.use("shapley_rank_correlation")
        value = getattr(shap, "rank_correlation", float("nan"))
        gone = getattr(shap, "not_available", dict)()
        why = gone.get("rank_correlation") if isinstance(gone, dict) else None
        # a number of these rows, not of the probe: named so (study.shapley(n=...) differs)
        text += (" Global feature importance (Shapley): "
                 f"{html.escape(label('shapley_rank_correlation'))} on these "
                 f"{len(shap.fx_before)} test rows "
                 f"{num(value, 'shapley_rank_correlation', reason=why)}.")
    return text or "Explanation drift: n/a: " + html.escape(ctx.missing.get("drift", ""))


def _watch(ctx: ReportContext) -> list[str]:
    out = []
    b, a = ctx.step_before.metrics["accuracy"], ctx.step_after.metrics["accuracy"]
    if b - a >= WATCH["accuracy_drop"]:
        out.append(f"Overall accuracy fell by {fmt(b - a, 'accuracy_change').lstrip('+')}: "
                   "check it against the accuracy your use needs.")
    for name, bb, aa in ctx.per_class():
        if bb - aa >= WATCH["class_drop"]:
            out.append(f"Class <b>{html.escape(name)}</b> lost "
                       f"{fmt(bb - aa, 'accuracy_change').lstrip('+')}: look at its "
                       "forgotten examples before relying on the pruned model for it.")
    row = ctx.drift_row
    if row.get("agreement", 1.0) < WATCH["agreement"]:
        out.append("The pruned model disagrees with the original on "
                   f"{fmt(1 - row['agreement'], 'agreement')} of the probe inputs.")
    if row.get("saliency_rank_correlation", 1.0) < WATCH["saliency_rank_correlation"]:
        out.append("The saliency maps moved a lot (rank correlation "
                   f"{fmt(row['saliency_rank_correlation'])}): the pruned model may rely on "
                   "other parts of the input.")
    shap = ctx.shapley
    corr = getattr(shap, "rank_correlation", 1.0) if shap is not None else 1.0
    if corr == corr and corr < WATCH["shapley_rank_correlation"]:
        out.append("The features' global importance reordered (Shapley rank correlation "
                   f"{fmt(corr)}).")
    if any(s.stopped for s in ctx.study.timeline.path(ctx.after)):
        out.append("A retraining was stopped before its end.")
    mb, ma = (ctx.metrics("before"), ctx.metrics("after")) if ctx.latency else (None, None)
    if mb is not None and ma is not None and 1 in mb.latency_ms and 1 in ma.latency_ms \
            and ma.latency_ms[1] >= mb.latency_ms[1] and ctx.prune_steps():
        out.append("The pruned model was not faster at batch 1 on this machine.")
    return out or ["Nothing crossed the thresholds this report watches (a class losing "
                   f"{fmt(WATCH['class_drop'], 'accuracy')} or more, overall accuracy losing "
                   f"{fmt(WATCH['accuracy_drop'], 'accuracy')}, agreement under "
                   f"{fmt(WATCH['agreement'], 'agreement')}, rank correlations under "
                   f"{fmt(WATCH['saliency_rank_correlation'])})."]


def summary_html(ctx: ReportContext) -> str:
    """The summary section (``<section id='summary'>``)."""
    items = [("What was pruned", _what_was_pruned(ctx)),
             ("Size, compute and speed", _size_and_speed(ctx)),
             ("Accuracy", _accuracy(ctx)),
             ("What pruning forgot", _forgotten(ctx)),
             ("How the explanations changed", _explanations(ctx))]
    body = "".join(f"<p><b>{title}.</b> {text}</p>" for title, text in items)
    watch = "".join(f"<li>{w}</li>" for w in _watch(ctx))
    return (f"<section id='summary' class='xprune-summary'><h2>Summary</h2>"
            f"<p class='xprune-steps'>Original model (step {ctx.before}) compared with step "
            f"{ctx.after} ({html.escape(ctx.step_after.label)}).</p>{body}"
            f"<p><b>What to watch.</b></p><ul class='xprune-watch'>{watch}</ul></section>")
