"""Adaptive BatchNorm recalibration (issue 13, item 3): test accuracy of channel-pruned zoo
models before and after re-estimating the BatchNorm statistics, without any fine-tuning.

Every criterion x {30%, 50%} of channels (global scope) x every zoo model with BatchNorm, through
the public API; the recalibration uses 10 batches of 64 training digits (seed 0). Also: how the
recovered accuracy depends on the number of batches, on one case.

Run by hand: ``.venv/bin/python benchmarks/bench_recalibrate.py``; results go to
docs/benchmarks.md.
"""

from __future__ import annotations

import copy
import json
import platform
import statistics

import torch

torch.set_num_threads(1)

CRITERIA = ("magnitude", "random", "gradient", "taylor", "activation", "lrp")
AMOUNTS = (0.3, 0.5)


def accuracy(model, study) -> float:
    import xprune_nb as xp

    return xp.metrics.evaluate_model(model, study.data, study.forward, latency=False).accuracy


def bench_models() -> list[dict]:
    import xprune_nb as xp
    from xprune_nb.models.mechanisms.recalibrate import has_batchnorm, recalibrate_batchnorm

    data = xp.datasets.load("digits")
    rows = []
    for name in xp.zoo.available():
        if not has_batchnorm(xp.zoo.load(name)) or xp.zoo.info(name)["dataset"] != "digits":
            continue
        study = xp.Study(xp.zoo.load(name), data, seed=0)
        original = study.step.metrics["accuracy"]
        for crit in CRITERIA:
            study.goto(0)
            study.score(crit, granularity="channel")
            for amount in AMOUNTS:
                study.goto(0)
                study.prune(amount, recalibrate=False)   # measure before and after here
                model = copy.deepcopy(study.model)
                before = accuracy(model, study)
                seconds = []
                for _ in range(3):   # the cost, median of 3 (each run starts from scratch)
                    report = recalibrate_batchnorm(model, study.data.train.X,
                                                   forward=study.forward, seed=0)
                    seconds.append(report.seconds)
                rows.append({"model": name, "criterion": crit, "amount": amount,
                             "original": original, "before": before,
                             "after": accuracy(model, study),
                             "seconds": statistics.median(seconds),
                             "examples": report.examples, "bn_layers": len(report.layers)})
                print(json.dumps(rows[-1]), flush=True)
    return rows


def bench_batches() -> list[dict]:
    """digits_resnet, lrp, 30%: accuracy after recalibration with 1..17 batches of 64."""
    import xprune_nb as xp
    from xprune_nb.models.mechanisms.recalibrate import recalibrate_batchnorm

    study = xp.Study(xp.zoo.load("digits_resnet"), xp.datasets.load("digits"), seed=0)
    study.score("lrp", granularity="channel")
    study.prune(0.3, recalibrate=False)
    rows = []
    for batches in (1, 2, 5, 10, 17):
        model = copy.deepcopy(study.model)
        report = recalibrate_batchnorm(model, study.data.train.X, batches=batches,
                                       forward=study.forward, seed=0)
        rows.append({"batches": batches, "examples": report.examples,
                     "accuracy": accuracy(model, study), "seconds": report.seconds})
    return rows


if __name__ == "__main__":
    results = {
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "threads": torch.get_num_threads()},
        "models": bench_models(),
        "batches": bench_batches(),
    }
    print(json.dumps(results, indent=2))
