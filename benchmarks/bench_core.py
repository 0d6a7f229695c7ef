"""Core benchmarks (issue 2): real speedup of structured pruning, our score+prune step against
torch-pruning's own pruner, import cost, and the memory of a long study.

Run by hand: ``.venv/bin/python benchmarks/bench_core.py``; results go to docs/benchmarks.md.
Every comparison is made in the same run, as a ratio.
"""

from __future__ import annotations

import copy
import json
import platform
import statistics
import subprocess
import sys
import time

import torch
from torch import nn

torch.set_num_threads(1)


class WideResNet(nn.Module):
    """A CNN wide enough for pruning to matter: 64-128 channels, 32x32 inputs, residual adds."""

    def __init__(self, width: int = 64, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width),
                                  nn.ReLU())
        blocks = []
        for _ in range(2):
            blocks.append(nn.Sequential(
                nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width)))
        self.blocks = nn.ModuleList(blocks)
        self.act = nn.ReLU()
        self.down = nn.Sequential(nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
                                  nn.BatchNorm2d(2 * width), nn.ReLU(),
                                  nn.Conv2d(2 * width, 2 * width, 3, padding=1),
                                  nn.BatchNorm2d(2 * width), nn.ReLU())
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        x = self.stem(x)
        for block in self.blocks:
            x = self.act(x + block(x))
        x = self.down(x)
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def latency(model, x, repeats=30):
    return interleaved_latency([model], x, repeats)[0]


def interleaved_latency(models, x, repeats=40):
    """Median forward time (ms) of each model, timed in alternation so that load changes on
    the machine hit every model alike."""
    times = [[] for _ in models]
    with torch.inference_mode():
        for m in models:
            for _ in range(3):
                m(x)
        for _ in range(repeats):
            for i, m in enumerate(models):
                t = time.perf_counter()
                m(x)
                times[i].append(time.perf_counter() - t)
    return [statistics.median(t) * 1000 for t in times]


def bench_speedup():
    import xprune_nb as xp

    torch.manual_seed(0)
    n = 512
    X = torch.randn(n, 3, 32, 32)
    y = torch.randint(0, 10, (n,))
    study = xp.Study(WideResNet(), train=(X, y), test=(X[:128], y[:128]))
    study.score("magnitude", granularity="channel")
    study.prune(0.5, scope="layer")
    study.goto(0)
    study.score("magnitude", granularity="weight")
    study.prune(0.5, scope="layer")
    dense, pruned, masked = study.model_at(0), study.model_at(1), study.model_at(2)
    rows = {}
    for bs in (64, 1):
        x = torch.randn(bs, 3, 32, 32)
        t_dense, t_pruned, t_masked = interleaved_latency([dense, pruned, masked], x)
        macs_d = xp.metrics.count_macs(dense, x[:1], lambda m, v: m(v))
        macs_p = xp.metrics.count_macs(pruned, x[:1], lambda m, v: m(v))
        mac_ratio = macs_d / macs_p
        rows[bs] = {
            "dense_ms": t_dense, "pruned_ms": t_pruned, "masked_ms": t_masked,
            "mac_ratio": mac_ratio, "latency_ratio": t_dense / t_pruned,
            "latency_over_mac_ratio": (t_dense / t_pruned) / mac_ratio,
            "masked_speedup": t_dense / t_masked,
        }
    return rows


def bench_vs_torch_pruning():
    import torch_pruning as tp

    import xprune_nb as xp

    data = xp.datasets.load("digits")
    out = {}
    for imp_name in ("magnitude", "taylor"):
        ours, core, steady, theirs, params = [], [], [], [], None
        for _ in range(5):
            study = xp.Study(xp.zoo.load("digits_cnn"), data)
            t = time.perf_counter()
            scores = study.score(imp_name, granularity="channel", samples=256)
            step = study.prune(0.5, scope="layer")
            ours.append(time.perf_counter() - t)
            # scoring + selection + surgery, without the step's bookkeeping (evaluation on
            # val/test, MACs, drift probe, snapshot) that torch-pruning does not do
            core.append(scores.seconds + step.seconds)
            # a later round on the same study: the one-time analysis of which groups can be
            # pruned safely (a trial removal on a copy) is cached by then
            study.goto(0)
            scores = study.score(imp_name, granularity="channel", samples=256)
            step = study.prune(0.5, scope="layer")
            steady.append(scores.seconds + step.seconds)
            ours_params = study.step.metrics["params"]

            model = copy.deepcopy(xp.zoo.load("digits_cnn"))
            example = data.train.X[:2]
            t = time.perf_counter()
            if imp_name == "magnitude":
                imp = tp.importance.GroupMagnitudeImportance(p=1)
            else:
                imp = tp.importance.GroupTaylorImportance()
            pruner = tp.pruner.BasePruner(model, example, importance=imp, pruning_ratio=0.5,
                                          ignored_layers=[model.head])
            if imp_name == "taylor":
                from xprune_nb.data import stratified_indices
                idx = stratified_indices(data.train.y, 256, seed=0)
                model.zero_grad()
                nn.functional.cross_entropy(model(data.train.X[idx]), data.train.y[idx]).backward()
            pruner.step()
            theirs.append(time.perf_counter() - t)
            params = (ours_params, sum(p.numel() for p in model.parameters()))
        out[imp_name] = {"ours_s": statistics.median(ours),
                         "ours_without_bookkeeping_s": statistics.median(core),
                         "ratio_without_bookkeeping": statistics.median(core)
                         / statistics.median(theirs),
                         "ours_later_round_without_bookkeeping_s": statistics.median(steady),
                         "ratio_later_round": statistics.median(steady)
                         / statistics.median(theirs),
                         "torch_pruning_s":
                         statistics.median(theirs), "ratio": statistics.median(ours)
                         / statistics.median(theirs), "params_ours": params[0],
                         "params_torch_pruning": params[1]}
    return out


def bench_import():
    code = ("import time, torch; t = time.perf_counter(); import xprune_nb; "
            "print(time.perf_counter() - t); import sys; "
            "print(sorted(m for m in ('captum', 'shap', 'ipywidgets', 'torch_pruning', 'zennit')"
            " if m in sys.modules))")
    times = []
    for _ in range(5):
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True)
        lines = res.stdout.split("\n")
        times.append(float(lines[0]))
        loaded = lines[1]
    return {"import_s_median": statistics.median(times), "heavy_modules_loaded": loaded}


def bench_memory():
    code = """
import os, resource, torch, xprune_nb as xp
torch.set_num_threads(1)
page = os.sysconf("SC_PAGE_SIZE") / 2**20
def rss():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * page
data = xp.datasets.load("digits")
study = xp.Study(xp.zoo.load("digits_resnet"), data, max_snapshots=8)
study.score("magnitude"); study.prune(0.1); study.undo()   # warm up every code path once
start = rss()
for i in range(10):
    study.score("magnitude", granularity="channel" if i % 2 == 0 else "weight")
    study.prune(0.1)
    study.retrain(epochs=1, progress=False)
end = rss()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(len(study.history) - 2, start, end, peak, len(study.timeline.snapshots.on_disk))
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    steps, start, end, peak, disk = res.stdout.split()
    return {"steps": int(steps), "rss_after_warmup_mib": float(start),
            "rss_after_steps_mib": float(end), "growth_mib": float(end) - float(start),
            "peak_rss_mib": float(peak), "snapshots_on_disk": int(disk)}


if __name__ == "__main__":
    results = {
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "cpu": platform.processor() or platform.machine(),
                    "threads": torch.get_num_threads()},
        "speedup": bench_speedup(),
        "vs_torch_pruning": bench_vs_torch_pruning(),
        "import": bench_import(),
        "memory": bench_memory(),
    }
    print(json.dumps(results, indent=2))
