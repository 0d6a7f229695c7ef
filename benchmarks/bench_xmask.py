"""The ``xmask`` criterion (issue 11, item 3): time to score, and what its masks prune.

1. **Time to score** with the default options (50 Adam steps, 256 reference digits), one
   thread: heads of the zoo's ``digits_vit`` (the target: <= 30 s), channels of ``digits_cnn``
   and blocks of ``digits_resnet``. The first call in the process and the median of 3 more.
2. **Accuracy of digits_vit against the share of heads removed** (real removal, no fine-tuning,
   scores from 256 training digits, ``study.prune(fraction)`` with its default global ranking
   after per-layer ``"mean"`` normalisation; xmask also with ``normalize=None``: its masks are
   on one 0-1 scale already) for random, magnitude, taylor, attention and xmask.
3. **Relevance on the evidence**: the BoxesViT of ``bench_vit_explain.py`` (``digits_boxes``,
   12 epochs), 30% and 50% of its heads removed by xmask, against magnitude and attention:
   accuracy, gradient-weighted attention relevance inside the digit's box, pointing game.

Run by hand: ``.venv/bin/python benchmarks/bench_xmask.py [--out results.json] [--quick]``;
results go to docs/benchmarks.md ("xmask").
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

import xprune_nb as xp

torch.set_num_threads(1)

HEAD_CRITERIA = [("random", {}, "mean"), ("magnitude", {}, "mean"), ("taylor", {}, "mean"),
                 ("attention", {}, "mean"), ("xmask", {}, "mean"), ("xmask", {}, None)]


def score_times(repeats: int) -> dict:
    out = {}
    for model, granularity in (("digits_vit", "head"), ("digits_cnn", "channel"),
                               ("digits_resnet", "block")):
        study = xp.Study(xp.zoo.load(model), xp.datasets.load("digits"), seed=0)
        t = time.perf_counter()
        study.score("xmask", granularity=granularity)
        first = time.perf_counter() - t
        warm = []
        for _ in range(repeats):
            t = time.perf_counter()
            study.score("xmask", granularity=granularity)
            warm.append(time.perf_counter() - t)
        out[f"{model}/{granularity}"] = {"first": first, "median": statistics.median(warm),
                                         "units": study.scores_.num_units}
    return out


def head_sweep(fractions) -> dict:
    study = xp.Study(xp.zoo.load("digits_vit"), xp.datasets.load("digits"), seed=0)
    out = {"original": study.history[0].metrics["accuracy"], "rows": {}}
    for criterion, opts, normalize in HEAD_CRITERIA:
        label = f"{criterion} (normalize={normalize})"
        row = {}
        for frac in fractions:
            study.goto(0)
            study.score(criterion, granularity="head", samples=256, **opts)
            row[str(frac)] = study.prune(frac, normalize=normalize).metrics["accuracy"]
        study.goto(0)
        out["rows"][label] = row
    return out


def relevance_on_evidence(fractions=(0.3, 0.5), n: int = 128) -> dict:
    from xprune_nb.data.ground_truth import load as load_boxes
    from xprune_nb.explain.grounding import grounding
    from xprune_nb.models.case_study import BoxesViT, train_boxes_vit

    data = load_boxes(n_samples=2000, canvas=16, distractors=2)
    torch.manual_seed(0)
    model = BoxesViT(image_size=16, patch=4)
    curve = train_boxes_vit(model, data, epochs=12)
    study = xp.Study(model, data, seed=0)
    base = grounding(study, 0, 0, n=n, method="attention_relevance").summary()
    out = {"test_accuracy": curve[-1], "mass_in_box_original": base["mass_in_box_before"],
           "pointing_original": base["pointing_before"], "rows": {}}
    for criterion, opts, normalize in (("magnitude", {}, "mean"),
                                       ("attention", {"relevance": "attention"}, "mean"),
                                       ("xmask", {}, "mean"), ("xmask", {}, None)):
        label = f"{criterion} {opts or ''} (normalize={normalize})"
        rows = {}
        for frac in fractions:
            t = time.perf_counter()
            study.score(criterion, granularity="head", samples=256, **opts)
            seconds = time.perf_counter() - t
            step = study.prune(frac, normalize=normalize)
            g = grounding(study, 0, -1, n=n, method="attention_relevance").summary()
            rows[str(frac)] = {"accuracy": step.metrics["accuracy"], "score_seconds": seconds,
                               "mass_in_box": g["mass_in_box_after"],
                               "pointing": g["pointing_after"]}
            study.goto(0)
        out["rows"][label] = rows
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=None)
    parser.add_argument("--quick", action="store_true", help="timings only")
    args = parser.parse_args()
    results = {"machine": platform.platform(), "torch": torch.__version__,
               "threads": torch.get_num_threads(), "score_seconds": score_times(3)}
    if not args.quick:
        results["heads_removed"] = head_sweep((0.25, 0.5, 0.75))
        results["evidence"] = relevance_on_evidence()
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)


if __name__ == "__main__":
    main()
