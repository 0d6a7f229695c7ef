"""Sensitivity analysis, auto_prune and the comparison of techniques (issue 13, items 1, 2, 5).

1. Sensitivity wall time per zoo model (taylor, channel, the default 9 amounts, one core).
2. auto_prune against a uniform per-layer ratio on digits_resnet at the same MACs (25 % of the
   original) and the same retraining (none inside the rounds, then the same fine-tuning), mean
   and sd over seeds.
3. auto_prune with max_drift set against the unconstrained run: drift saved, accuracy cost.
4. compare_techniques on digits_cnn and digits_resnet at half the MACs; the table is written
   small to notebooks/data/compare_results.csv for notebooks/06_compare_techniques.ipynb.

Run by hand: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_sensitivity_auto.py``
(``--only sensitivity,auto,drift,compare`` to run some parts); results go to
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
import warnings
from pathlib import Path

import torch

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parent.parent
CSV = ROOT / "notebooks" / "data" / "compare_results.csv"


def study_of(name: str, seed: int = 0):
    import xprune_nb as xp

    return xp.Study(xp.zoo.load(name), xp.datasets.load(xp.zoo.info(name)["dataset"]),
                    seed=seed)


def bench_sensitivity() -> list[dict]:
    import xprune_nb as xp
    from xprune_nb.pruning.sensitivity import sensitivity

    rows = []
    for name in xp.zoo.available():
        study = study_of(name)
        try:
            sens = sensitivity(study, "taylor")
        except xp.ModelError as exc:       # e.g. no channel can go: say so in the table
            rows.append({"model": name, "error": str(exc)[:120]})
            print(rows[-1], flush=True)
            continue
        top = sens.most_sensitive()
        rows.append({"model": name, "groups": len(sens.layers), "cells": len(sens.rows),
                     "seconds": round(sens.seconds, 2), "recalibrated": sens.recalibrated,
                     "most_sensitive": top.index[0], "least_sensitive": top.index[-1]})
        print(rows[-1], flush=True)
    return rows


def uniform_to_macs(study, fraction: float) -> float:
    """Same amount in every group (scope='layer'), the one whose MACs come closest."""
    study.score("taylor")
    m0 = study.step.metrics["macs"]
    lo, hi, best = 0.0, 0.95, None
    for _ in range(14):
        mid = (lo + hi) / 2
        after = study.preview(mid, scope="layer").macs[1]
        if best is None or abs(after - fraction * m0) < abs(best[1] - fraction * m0):
            best = (mid, after)
        lo, hi = (mid, hi) if after > fraction * m0 else (lo, mid)
    study.prune(best[0], scope="layer")
    return best[0]


def bench_auto(seeds: int, epochs: int, budget: float = 0.25) -> dict:
    from xprune_nb.pruning.auto import auto_prune

    out = {"auto": [], "uniform": []}
    for seed in range(seeds):
        for method in ("auto", "uniform"):
            study = study_of("digits_resnet", seed)
            m0 = study.step.metrics["macs"]
            start = time.perf_counter()
            if method == "auto":
                step = auto_prune(study, macs=budget, steps=5)
                extra = {"rounds": step.auto.rounds, "rejected": step.auto.rejected}
            else:
                extra = {"amount": round(uniform_to_macs(study, budget), 4)}
            pruned = study.step.metrics
            study.retrain(epochs=epochs, progress=False)
            final = study.step
            out[method].append({
                "seed": seed, "macs_fraction": pruned["macs"] / m0,
                "acc_before_finetune": pruned["accuracy"], "accuracy": final.metrics["accuracy"],
                "drift": 1 - final.drift["saliency_spearman"],
                "seconds": round(time.perf_counter() - start, 1), **extra})
            print(method, out[method][-1], flush=True)
    summary = {}
    for method, rows in out.items():
        for key in ("macs_fraction", "acc_before_finetune", "accuracy", "drift", "seconds"):
            vals = [r[key] for r in rows]
            summary[f"{method}_{key}"] = (statistics.mean(vals),
                                          statistics.stdev(vals) if len(vals) > 1 else 0.0)
    return {"runs": out, "summary": summary, "epochs": epochs, "budget": budget}


def bench_drift(budget: float = 0.5, share: float = 0.8) -> dict:
    """Unconstrained auto_prune, then max_drift = share x its drift, same seed and budget."""
    from xprune_nb.pruning.auto import auto_prune

    res = {}
    for label in ("unconstrained", "max_drift"):
        study = study_of("digits_resnet", 0)
        kwargs = {}
        if label == "max_drift":
            kwargs["max_drift"] = round(share * res["unconstrained"]["drift"], 4)
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            step = auto_prune(study, macs=budget, steps=5, **kwargs)
        res[label] = {"max_drift": kwargs.get("max_drift"),
                      "macs_fraction": step.auto.reached, "met": step.auto.met,
                      "accuracy": study.step.metrics["accuracy"],
                      "val_accuracy": study.step.metrics["val_accuracy"],
                      "drift": 1 - study.step.drift["saliency_spearman"],
                      "rounds": step.auto.rounds, "rejected": step.auto.rejected,
                      "seconds": round(step.auto.seconds, 1), "message": step.auto.message}
        print(label, res[label], flush=True)
    return res


def bench_compare(epochs: int) -> list[dict]:
    import xprune_nb as xp
    from xprune_nb.ui.compare import compare_techniques

    frames = []
    for name in ("digits_cnn", "digits_resnet"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            frame = compare_techniques(xp.zoo.load(name), xp.datasets.load("digits"),
                                       budget=0.5, retrain_epochs=epochs)
        frame.insert(0, "model", name)
        frames.append(frame)
        print(frame.to_string(), flush=True)
    import pandas as pd

    table = pd.concat(frames, ignore_index=True)
    CSV.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(CSV, index=False, float_format="%.5g")
    return table.to_dict(orient="records")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="sensitivity,auto,drift,compare")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "build" / "benchmarks" /
                                             "sensitivity_auto.json"))
    args = parser.parse_args()
    parts = set(args.only.split(","))
    result = {"machine": {"python": platform.python_version(), "torch": torch.__version__,
                          "threads": torch.get_num_threads(), "cpu": platform.processor()}}
    if "sensitivity" in parts:
        result["sensitivity"] = bench_sensitivity()
    if "auto" in parts:
        result["auto_vs_uniform"] = bench_auto(args.seeds, args.epochs)
    if "drift" in parts:
        result["max_drift"] = bench_drift()
    if "compare" in parts:
        result["compare"] = bench_compare(1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=str))
    print(json.dumps({k: v for k, v in result.items() if k != "compare"}, indent=1,
                     default=str))


if __name__ == "__main__":
    main()
