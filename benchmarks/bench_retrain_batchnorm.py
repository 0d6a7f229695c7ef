"""BatchNorm recalibration after retraining (issue 18, item 5): test accuracy after
``study.retrain`` with and without the closing BatchNorm pass, 3 seeds.

Cases: every zoo model with BatchNorm (digits), and a residual/concat CNN defined here (a
residual add and a channel concatenation, BatchNorm after every convolution, about 14k
parameters) trained from scratch for 8 epochs by a plain Adam loop. Each case: Taylor scores,
50% of the channels removed (global scope; the prune's own recalibration on), then
``retrain(epochs=5, lr=3e-3)`` twice from the same pruned step — ``recalibrate=False`` (the
running averages training leaves behind) and the default (one pass over at most 2048 training
examples in train mode, no gradients, cumulative averaging).

Run by hand: ``.venv/bin/python benchmarks/bench_retrain_batchnorm.py``; results go to
docs/benchmarks.md.
"""

from __future__ import annotations

import json
import platform
import statistics
import time

import torch
from torch import nn

torch.set_num_threads(1)

SEEDS = (0, 1, 2)
EPOCHS, LR, AMOUNT = 5, 3e-3, 0.5


class ResConcatCNN(nn.Module):
    """A residual block and a concatenation of two branches, BatchNorm after each conv."""

    def __init__(self, num_classes: int = 10):
        super().__init__()

        def cbr(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout),
                                 nn.ReLU())

        self.stem = cbr(1, 24)
        self.res = nn.Sequential(cbr(24, 24), nn.Conv2d(24, 24, 3, padding=1),
                                 nn.BatchNorm2d(24))
        self.left, self.right = cbr(24, 16), cbr(24, 16)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(32, num_classes)

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(x + self.res(x))
        x = torch.cat([self.left(x), self.right(x)], dim=1)
        return self.head(torch.flatten(self.pool(x), 1))


def accuracy(study) -> float:
    import xprune_nb as xp

    return xp.metrics.evaluate_model(study.model, study.data, study.forward,
                                     latency=False).accuracy


def train_from_scratch(model: nn.Module, data, seed: int, epochs: int = 8) -> nn.Module:
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    X, y = data.train.X, data.train.y
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(X)).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(X[idx]), y[idx]).backward()
            opt.step()
    return model.eval()


def one_case(name: str, model: nn.Module, data, seed: int) -> dict:
    import xprune_nb as xp

    study = xp.Study(model, data, seed=seed, probe_size=8)
    study.score("taylor", granularity="channel", samples=256)
    pruned = study.prune(AMOUNT)
    row = {"model": name, "seed": seed, "params_before": study.history[0].metrics["params"],
           "params_after": pruned.metrics["params"], "pruned_acc": pruned.metrics["accuracy"]}
    start = time.perf_counter()
    study.retrain(EPOCHS, lr=LR, progress=False, recalibrate=False)
    row["stale_acc"] = accuracy(study)
    row["seconds_retrain"] = round(time.perf_counter() - start, 2)
    study.goto(pruned.index)
    step = study.retrain(EPOCHS, lr=LR, progress=False)
    row["recalibrated_acc"] = accuracy(study)
    row["recalibration_examples"] = step.config["recalibration"]["examples"]
    return row


def main() -> None:
    import xprune_nb as xp
    from xprune_nb.models.mechanisms.recalibrate import has_batchnorm

    data = xp.datasets.load("digits")
    rows = []
    for seed in SEEDS:
        for name in xp.zoo.available():
            if xp.zoo.info(name)["dataset"] != "digits" or not has_batchnorm(xp.zoo.load(name)):
                continue
            rows.append(one_case(name, xp.zoo.load(name), data, seed))
            print(json.dumps(rows[-1]), flush=True)
        torch.manual_seed(seed)
        net = train_from_scratch(ResConcatCNN(), data, seed)
        rows.append(one_case("res_concat_cnn", net, data, seed))
        print(json.dumps(rows[-1]), flush=True)
    print("\n| model | params before → after | pruned | retrained, stale BN | retrained + "
          "recalibrated | seeds |")
    print("|---|---|---|---|---|---|")
    for name in dict.fromkeys(r["model"] for r in rows):
        rs = [r for r in rows if r["model"] == name]

        def span(key, rs=rs):
            vals = [r[key] for r in rs]
            return (f"{statistics.mean(vals):.3f} ({min(vals):.3f}–{max(vals):.3f})")

        print(f"| {name} | {rs[0]['params_before']:,} → {rs[0]['params_after']:,} | "
              f"{span('pruned_acc')} | {span('stale_acc')} | {span('recalibrated_acc')} | "
              f"{len(rs)} |")
    print(f"\n{platform.processor() or platform.machine()}, torch {torch.__version__}, "
          "1 thread")


if __name__ == "__main__":
    main()
