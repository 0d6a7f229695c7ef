"""Explained ViT pruning benchmarks (issue 11): time per explanation method on the zoo ViT, and
relevance mass inside the ground-truth box before vs after removing heads.

1. **Time per explanation method** on the zoo's ``digits_vit`` (8x8 digits, 16 tokens, 4 blocks
   of 4 heads): ``study.saliency(0, 0, method=...)`` on 32 test digits (both models explained,
   deletion/insertion included), ``study.attention_maps``-equivalent comparison, and the
   per-head ``attention`` criterion with ``relevance="gate"`` and ``"attention"``. Median of 3
   warm calls.
2. **Relevance on the evidence**: a :class:`~xprune_nb.models.case_study.BoxesViT` trained on
   ``digits_boxes`` (16x16 canvas, 2 distractors, 12 epochs); for each head criterion, remove 30%
   and 50% of the heads (real removal, no fine-tuning) and measure, on 128 test images, accuracy
   and the share of the gradient-weighted attention relevance (Chefer et al. 2021) inside the
   digit's box, before and after, and the pointing game. A criterion that cannot score heads of
   this model is reported with its error.

Run by hand: ``.venv/bin/python benchmarks/bench_vit_explain.py [--out results.json]``; results
go to docs/benchmarks.md. One thread.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

import xprune_nb as xp
from xprune_nb.data.ground_truth import load as load_boxes
from xprune_nb.explain.attention_compare import attention_maps
from xprune_nb.explain.grounding import grounding
from xprune_nb.models.case_study import BoxesViT, train_boxes_vit

torch.set_num_threads(1)

METHODS = ("saliency", "integrated_gradients", "attention_rollout", "attention_relevance",
           "occlusion", "lrp")
HEAD_CRITERIA = {"random": {}, "magnitude": {}, "taylor": {}, "attention (gate)": {},
                 "attention (relevance)": {"relevance": "attention"}, "lrp": {}}


def median_time(fn, repeats: int = 3) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def method_times(n: int = 32) -> dict:
    study = xp.Study(xp.zoo.load("digits_vit"), xp.datasets.load("digits"), seed=0)
    rows = list(range(n))
    out = {}
    for method in METHODS:
        try:
            out[method] = median_time(lambda m=method: study.saliency(0, 0, method=m,
                                                                      inputs=rows))
        except Exception as exc:   # noqa: BLE001 - a method that can't explain a ViT is a result
            out[method] = f"error: {type(exc).__name__}: {str(exc)[:120]}"
    out["attention_maps"] = median_time(lambda: attention_maps(study, 0, 0, inputs=rows))
    for name, opts in (("criterion attention (gate)", {}),
                       ("criterion attention (relevance)", {"relevance": "attention"})):
        try:
            out[name] = median_time(lambda o=opts: study.score(
                "attention", granularity="head", samples=256, **o), repeats=1)
        except Exception as exc:   # noqa: BLE001
            out[name] = f"error: {type(exc).__name__}: {str(exc)[:120]}"
    return out


def relevance_on_evidence(fractions=(0.3, 0.5), n: int = 128) -> dict:
    data = load_boxes(n_samples=2000, canvas=16, distractors=2)
    torch.manual_seed(0)
    model = BoxesViT(image_size=16, patch=4)
    t = time.perf_counter()
    curve = train_boxes_vit(model, data, epochs=12)
    train_s = time.perf_counter() - t
    study = xp.Study(model, data, seed=0)
    base = grounding(study, 0, 0, n=n, method="attention_relevance").summary()
    out = {"train_seconds": train_s, "test_accuracy": curve[-1],
           "mass_in_box_original": base["mass_in_box_before"],
           "pointing_original": base["pointing_before"], "box_fraction": base["box_fraction"],
           "criteria": {}}
    for label, opts in HEAD_CRITERIA.items():
        criterion = label.split(" ")[0]
        rows = {}
        for frac in fractions:
            try:
                study.score(criterion, granularity="head", samples=256, **opts)
                step = study.prune(frac)
                g = grounding(study, 0, -1, n=n, method="attention_relevance").summary()
                rows[str(frac)] = {"accuracy": step.metrics["accuracy"],
                                   "mass_in_box": g["mass_in_box_after"],
                                   "pointing": g["pointing_after"]}
            except Exception as exc:   # noqa: BLE001 - reported, not hidden
                rows[str(frac)] = f"error: {type(exc).__name__}: {str(exc)[:120]}"
            finally:
                study.goto(0)
        out["criteria"][label] = rows
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    results = {"machine": platform.platform(), "torch": torch.__version__,
               "threads": torch.get_num_threads(), "method_seconds": method_times(),
               "evidence": relevance_on_evidence()}
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)


if __name__ == "__main__":
    main()
