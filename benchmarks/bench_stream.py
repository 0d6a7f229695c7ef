"""Data that streams: a study on a Dataset of 100,000 synthetic 224-px images against the same
study on 1,000 (issue 19). By hand, not in CI: ``python benchmarks/bench_stream.py``.

Each size runs in a fresh interpreter (so peak memory is its own): ``Study(...)`` with the
default sample sizes, a Taylor score and a prune, one evaluation. Reported: wall time, peak
resident memory above the loaded model, and ``__getitem__`` calls (total and distinct items)
against the size of the dataset. Items are generated from their index, so the dataset itself
holds nothing: any memory that grows with its length would be the study copying it.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def child(n: int) -> dict:
    import torch
    from torch import nn
    from torch.utils.data import Dataset

    import xprune_nb as xp

    torch.set_num_threads(1)

    class Synthetic(Dataset):
        """``n`` 3x224x224 images, each generated from its index; counts every read."""

        def __init__(self, n: int, offset: int = 0):
            self.n, self.offset, self.reads = n, offset, []

        def __len__(self):
            return self.n

        def __getitem__(self, i):
            self.reads.append(int(i))
            g = torch.Generator().manual_seed(self.offset + int(i))
            return torch.rand(3, 224, 224, generator=g), (self.offset + int(i)) % 10

    model = nn.Sequential(   # small on purpose: the data is what is measured here
        nn.Conv2d(3, 8, 7, stride=4), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    train, test = Synthetic(n), Synthetic(n, offset=10**7)
    start = time.perf_counter()
    study = xp.Study(model, train=train, test=test, seed=0)
    opened = time.perf_counter() - start
    study.score("taylor", samples=64)
    study.prune(0.3)
    study.evaluate(latency=False)
    total = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"n": n, "open_s": round(opened, 2), "total_s": round(total, 2),
            "peak_above_model_mb": round(peak - base, 1),
            "train_reads": len(train.reads), "train_distinct": len(set(train.reads)),
            "test_reads": len(test.reads), "test_distinct": len(set(test.reads)),
            "eval_rows": len(study.data.test), "accuracy": study.step.metrics["accuracy"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 100_000])
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child)))
        return
    rows = []
    for n in args.sizes:
        out = subprocess.run([sys.executable, __file__, "--child", str(n)], check=True,
                             capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
