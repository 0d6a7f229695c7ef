"""Recurrent hidden units (issue 10, item 4): digits_lstm's test accuracy after removing 25%, 50%
and 75% of its LSTM's hidden units with each criterion (no fine-tuning; random over 5 seeds),
parameters, and latency at batch 64 on one thread.

Run by hand: ``.venv/bin/python benchmarks/bench_recurrent.py``; results go to
docs/heads_and_blocks.md ("Recurrent layers").
"""

from __future__ import annotations

import json
import statistics

import torch

import xprune_nb as xp
from xprune_nb.measure.metrics import measure_latency

torch.set_num_threads(1)

CRITERIA = ("random", "magnitude", "taylor", "lrp")
SHARES = (0.25, 0.5, 0.75)
RANDOM_SEEDS = (0, 1, 2, 3, 4)


def main() -> dict:
    data = xp.datasets.load("digits")
    study = xp.Study(xp.zoo.load("digits_lstm"), data, seed=0)
    x64 = data.test.X[:64]

    def latency() -> float:
        return measure_latency(study.model, x64, study.forward, repeats=50)

    base = study.history[0].metrics
    out = {"original": {"accuracy": base["accuracy"], "params": base["params"],
                        "latency64_ms": latency()}, "shares": {}}
    for share in SHARES:
        row = {}
        for name in CRITERIA:
            accs = []
            for seed in RANDOM_SEEDS if name == "random" else (0,):
                study.goto(0)
                study.seed = seed   # the random draw (and the reference rows) of this seed
                study.score(name, granularity="recurrent")
                step = study.prune(share)
                accs.append(step.metrics["accuracy"])
            row[name] = {"mean": statistics.mean(accs), "min": min(accs), "max": max(accs)}
        row["params"] = step.metrics["params"]
        row["latency64_ms"] = latency()
        out["shares"][str(share)] = row
    return out


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))
