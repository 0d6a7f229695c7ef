"""Grounding vs accuracy frontier of head pruning on the zoo's ``boxes_vit`` (issue 22).

For every head criterion, and for ``auto_prune`` with the grounding constraint, remove 30 %,
50 % and 70 % of the heads of ``xp.zoo.load("boxes_vit")`` (real removal, no fine-tuning) and
measure, on the whole held-out test split of ``digits_boxes`` (400 images), accuracy and the
relevance mass in the digit's box of the ``attention_relevance`` maps (Chefer et al. 2021) of
the true class, with 3 seeds (the study's seed: reference samples of the scoring criteria,
random scores, xmask's jitter).

The constraint runs ``auto_prune(macs=..., granularity="head", criterion="attention",
max_grounding_drop=..., grounding_method="attention_relevance")`` with the MACs budget of the
head fraction (each head of this model is the same share of MACs); it judges grounding on the
validation split only, and the test numbers here are held out from it. It may stop short of
the budget (then the fraction of heads it removed is reported).

Run by hand: ``.venv/bin/python benchmarks/bench_grounding.py [--out results.csv]
[--seeds 0 1 2] [--criteria ...] [--limits 0.02] [--accuracy-drops none 0.05]``; one thread
(about 20 minutes on a busy 2-core machine). Results go to docs/benchmarks.md and
notebooks/data/grounding_frontier.csv (read by notebook 05).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

import pandas as pd
import torch

import xprune_nb as xp
from xprune_nb.data.ground_truth import boxes as truth_boxes
from xprune_nb.explain.grounding import relevance_mass_in_box
from xprune_nb.explain.saliency import attribute
from xprune_nb.measure.training import evaluate_split

torch.set_num_threads(1)

CRITERIA = {"random": ("random", {}), "magnitude": ("magnitude", {}),
            "taylor": ("taylor", {}), "attention (gate)": ("attention", {}),
            "attention (relevance)": ("attention", {"relevance": "attention"}),
            "attention (evidence)": ("attention", {"relevance": "evidence"}),
            "lrp": ("lrp", {}), "xmask": ("xmask", {})}
FRACTIONS = (0.3, 0.5, 0.7)
METHOD = "attention_relevance"


def test_numbers(study, model) -> tuple[float, float]:
    """Accuracy and mean relevance mass in the box on the whole test split."""
    test = study.data.test
    acc, _ = evaluate_split(model, test, study.forward)
    maps = []
    for i in range(0, len(test), 100):
        idx = torch.arange(i, min(i + 100, len(test)))
        maps.append(attribute(model, test.X[idx], test.y[idx], METHOD, forward=study.forward)[0])
    import numpy as np

    mass = relevance_mass_in_box(np.concatenate(maps), truth_boxes(study.data, "test"))
    return float(acc), float(np.nanmean(mass))


def heads_left(model) -> int:
    return sum(int(m.num_heads) for m in model.modules() if hasattr(m, "num_heads"))


def run(seeds, fractions, criteria, limits, out, accuracy_drops=(None,)) -> pd.DataFrame:
    data = xp.datasets.load("digits_boxes", n_samples=2000, canvas=16, distractors=2)
    rows = []

    def emit(**row):
        rows.append(row)
        print(row, flush=True)
        pd.DataFrame(rows).to_csv(out, index=False)

    for seed in seeds:
        study = xp.Study(xp.zoo.load("boxes_vit"), data, seed=seed)
        total = heads_left(study.model)
        acc0, mass0 = test_numbers(study, study.model)
        emit(seed=seed, method="original", fraction=0.0, heads_removed=0.0, accuracy=acc0,
             mass_in_box=mass0, seconds=0.0, note="")
        for label, (name, opts) in criteria.items():
            for frac in fractions:
                t = time.perf_counter()
                try:
                    study.score(name, granularity="head", samples=256, **opts)
                    study.prune(frac)
                    acc, mass = test_numbers(study, study.model)
                    note = ""
                except Exception as exc:   # noqa: BLE001 - a criterion that fails is a result
                    acc = mass = float("nan")
                    note = f"error: {type(exc).__name__}: {str(exc)[:100]}"
                emit(seed=seed, method=label, fraction=frac,
                     heads_removed=1 - heads_left(study.model) / total, accuracy=acc,
                     mass_in_box=mass, seconds=time.perf_counter() - t, note=note)
                study.goto(0)
        macs0 = study.history[0].metrics["macs"]
        for limit, accuracy_drop in ((g, a) for g in limits for a in accuracy_drops):
            for frac in fractions:
                # the MACs budget of removing `frac` of the heads, measured on a copy
                study.score("magnitude", granularity="head")
                study.prune(frac)
                budget = study.step.metrics["macs"] / macs0
                study.goto(0)
                t = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    step = study.auto_prune(macs=budget, granularity="head",
                                            criterion="attention", max_grounding_drop=limit,
                                            max_accuracy_drop=accuracy_drop,
                                            grounding_method=METHOD, steps=2, samples=256)
                acc, mass = test_numbers(study, study.model)
                label = f"auto_prune, max_grounding_drop={limit}" + (
                    f", max_accuracy_drop={accuracy_drop}" if accuracy_drop is not None else "")
                emit(seed=seed, method=label,
                     fraction=frac, heads_removed=1 - heads_left(study.model) / total,
                     accuracy=acc, mass_in_box=mass, seconds=time.perf_counter() - t,
                     note="" if step.auto.met else "stopped short of the budget")
                study.goto(0)
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="notebooks/data/grounding_frontier.csv")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--criteria", nargs="*", default=list(CRITERIA))
    parser.add_argument("--limits", type=float, nargs="*", default=[0.02])
    parser.add_argument("--accuracy-drops", nargs="*", default=["none", "0.05"],
                        help="max_accuracy_drop of the constraint runs ('none': no limit)")
    args = parser.parse_args()
    frame = run(args.seeds, FRACTIONS, {k: CRITERIA[k] for k in args.criteria}, args.limits,
                args.out, [None if a == "none" else float(a) for a in args.accuracy_drops])
    summary = frame.groupby(["method", "fraction"])[["heads_removed", "accuracy",
                                                      "mass_in_box"]].agg(["mean", "std"])
    print(summary.round(3).to_string(), file=sys.stdout)


if __name__ == "__main__":
    main()
