"""Cost of a relevance-flow map (Study.pathways) against one zennit LRP pass.

One class, 8 inputs, the mid-size residual CNN of ``bench_core.py`` (64-128 channels, 32x32x3
inputs). Both are timed in alternation (median of ``--repeats``); the target is a ratio <= 3.
Usage: ``python benchmarks/bench_pathways.py [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_core import WideResNet  # noqa: E402

from xprune_nb.explain.pathways import NodeSpec, compute_flow  # noqa: E402
from xprune_nb.models.mechanisms.lrp import LRPRunner  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = WideResNet().eval()
    x = torch.randn(8, 3, 32, 32)
    forward = lambda m, v: m(v)   # noqa: E731
    specs = [NodeSpec(n, n, "out", m.out_channels if isinstance(m, nn.Conv2d)
                      else m.out_features)
             for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    runner = LRPRunner(model, forward)
    target = torch.full((len(x),), 3)
    lrp, flow = [], []
    for _ in range(args.repeats + 1):        # the first round warms up
        start = time.perf_counter()
        with runner.registered():
            runner.run(x, target, input_relevance=True)
        lrp.append(time.perf_counter() - start)
        start = time.perf_counter()
        result = compute_flow(model, forward, specs, {3: x})[3]
        flow.append(time.perf_counter() - start)
    lrp, flow = statistics.median(lrp[1:]), statistics.median(flow[1:])
    edges = sum(m.size for m in result.edges.values())
    print(f"columns {len(specs)}, edges {edges}")
    print(f"one zennit LRP pass: {lrp * 1000:.0f} ms; pathways (one class, 8 inputs): "
          f"{flow * 1000:.0f} ms; ratio {flow / lrp:.2f} (target <= 3)")


if __name__ == "__main__":
    main()
