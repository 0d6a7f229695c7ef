"""Dynamic (DyFiP-style) pruning benchmarks (issue 12).

A residual CNN with 64-128 channels on 3x32x32 inputs (the bundled 8x8 digits upsampled
bilinearly and replicated over three channels), trained briefly, then:

* ``defaults``: the dynamic net with the default settings against the dense model: accuracy,
  mean batch-1 latency and early-exit share, and (``confidence=1.0``, same net) the longest
  path's batch-1 median and 95th-percentile latency; batch-64 throughput;
* ``grid``: the trade-off sweep (k x keep x confidence, and the branch point) that picked the
  defaults, with a static channel-pruning row at the same mean MACs;
* ``static``: static channel pruning at the default net's mean and longest-path MACs;
* ``zoo``: the zoo's small digits models with the defaults (where overhead dominates).

Run by hand: ``.venv/bin/python benchmarks/bench_dynamic.py [--only defaults,grid,zoo]``; raw
results go to ``build/benchmarks/dynamic.json``, figures to ``docs/img/dynamic_tradeoff.png``.
Dense and dynamic models are timed in alternation, example by example, one thread.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from torch import nn

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "build" / "benchmarks"


class BenchResNet(nn.Module):
    """Stem (64 channels, stride 2), two stages of two basic blocks (64, then 128 channels at
    half the resolution), global pooling, linear head: ~72 M MACs per 3x32x32 input."""

    def __init__(self, width: int = 64, num_classes: int = 10) -> None:
        super().__init__()
        from xprune_nb.models import BasicBlock

        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, stride=2, padding=1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU())
        self.stage1 = nn.Sequential(BasicBlock(width, width), BasicBlock(width, width))
        self.stage2 = nn.Sequential(BasicBlock(width, 2 * width, stride=2),
                                    BasicBlock(2 * width, 2 * width))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage2(self.stage1(self.stem(x)))
        return self.head(torch.flatten(self.pool(x), 1))


def upsampled_digits():
    """The digits splits as 3x32x32 images."""
    from xprune_nb.data import public as datasets

    data = datasets.load("digits")

    def up(X: torch.Tensor) -> torch.Tensor:
        big = nn.functional.interpolate(X, size=(32, 32), mode="bilinear", align_corners=False)
        return big.repeat(1, 3, 1, 1).contiguous()

    return {name: (up(s.X), s.y) for name, s in
            (("train", data.train), ("val", data.val), ("test", data.test))}


def trained_model(data, epochs: int = 6, seed: int = 0) -> nn.Module:
    """BenchResNet trained with Adam on the upsampled digits (cached under build/)."""
    path = OUT / f"dynamic_benchresnet_e{epochs}_s{seed}.pt"
    torch.manual_seed(seed)
    model = BenchResNet()
    if path.is_file():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval()
    X, y = data["train"]
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for epoch in range(epochs):
        perm = torch.randperm(len(X), generator=gen)
        for i in range(0, len(X), 64):
            idx = perm[i:i + 64]
            loss = nn.functional.cross_entropy(model(X[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        print(f"  epoch {epoch + 1}: loss {loss.item():.3f}", flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return model.eval()


def fmt(row: dict, keys: tuple[str, ...]) -> str:
    return "  ".join(f"{k}={row[k]:.4g}" if isinstance(row[k], float) else f"{k}={row[k]}"
                     for k in keys if k in row)


def bench_defaults(model, data, scores, samples: int, repeats: int) -> dict:
    from xprune_nb.pruning.dynamic.build import DEFAULTS, build_dynamic
    from xprune_nb.pruning.dynamic.eval import compare_dense

    (Xtr, ytr), (X, y) = data["train"], data["test"]
    t = time.perf_counter()
    net = build_dynamic(model, train_X=Xtr, train_y=ytr, per_class_scores=scores)
    build_s = time.perf_counter() - t
    out = {"settings": {**DEFAULTS, "at": net.plan["at"]}, "build_s": build_s,
           "paths": net.num_paths}
    for conf in (net.confidence, 1.0):
        net.confidence = conf
        for clock in ("wall", "cpu"):
            frame = compare_dense(net, model, X, y, samples=samples, repeats=repeats,
                                  clock=clock)
            out[f"confidence={conf}, clock={clock}"] = frame.to_dict(orient="index")
            print(f"confidence={conf}, clock={clock}:\n{frame.T.to_string()}\n", flush=True)
    return out


def bench_grid(model, data, scores, samples: int, repeats: int) -> dict:
    from xprune_nb.pruning.dynamic.build import auto_branch_point
    from xprune_nb.pruning.dynamic.sweep import plot_sweep, sweep
    from xprune_nb.ui.compare import static_at_macs

    (Xtr, ytr), (X, y) = data["train"], data["test"]
    points = auto_branch_point(model, X[:1], 0.35)
    print("branch points by closeness to 35% of MACs:", points[:6], flush=True)
    frames = []
    for at in ("stage1.0", "stage1"):
        t = time.perf_counter()
        frame = sweep(model, train_X=Xtr, train_y=ytr, X=X, y=y, per_class_scores=scores,
                      at=at, confidence=(0.8, 0.9, 0.95, 1.0), k=(2, 3),
                      keep=(0.25, 0.5, 0.75), samples=samples, repeats=repeats, clock="cpu")
        print(f"at={at}: sweep {time.perf_counter() - t:.0f}s", flush=True)
        frames.append(frame if not frames else frame[frame["technique"] == "dynamic"])
    import pandas as pd

    frame = pd.concat(frames, ignore_index=True)
    dyn = frame[frame["technique"] == "dynamic"]
    best = dyn[dyn["accuracy"] >= frame.iloc[0]["accuracy"] - 0.01]
    target = float(best["macs_mean"].min()) if len(best) else float(dyn["macs_mean"].median())
    static = static_at_macs(model, target, train=data["train"], val=data["val"],
                            test=data["test"], samples=samples, repeats=repeats, clock="cpu")
    frame = pd.concat([frame, pd.DataFrame([static]).drop(columns=["path_share"])],
                      ignore_index=True)
    cols = ["technique", "at", "k", "keep", "confidence", "accuracy", "macs_mean",
            "macs_longest", "exit_share", "paths", "latency_b1_mean_ms", "latency_b1_p95_ms",
            "amount"]
    print(frame[[c for c in cols if c in frame]].to_string(), flush=True)
    fig, _ = plot_sweep(frame[(frame["technique"] != "dynamic") | (frame["at"] == "stage1.0")])
    fig.axes[0].set_title("BenchResNet on 3x32x32 digits, branch at stage1.0 (lines: confidence)")
    img = ROOT / "docs" / "img" / "dynamic_tradeoff.png"
    fig.savefig(img, dpi=110, bbox_inches="tight")
    return {"rows": frame.to_dict(orient="records"), "figure": str(img.relative_to(ROOT))}


def bench_static(model, data, samples: int) -> dict:
    """Static channel pruning (taylor) at the default dynamic net's mean and longest-path MACs,
    without and with 3 epochs of retraining (the paths get 3 epochs of fine-tuning)."""
    from xprune_nb.ui.compare import static_at_macs

    grid = json.loads((OUT / "dynamic_defaults.json").read_text())["defaults"]
    dyn = grid["confidence=0.9, clock=cpu"]["dynamic"]
    rows = []
    for what in ("macs_mean", "macs_longest"):
        for retrain in (0, 3):
            row = static_at_macs(model, float(dyn[what]), train=data["train"], val=data["val"],
                                 test=data["test"], samples=samples, repeats=3, clock="cpu",
                                 retrain=retrain)
            row["target"] = what
            rows.append(row)
            print(fmt(row, ("target", "retrain", "amount", "accuracy", "macs_mean",
                            "latency_b1_p50_ms", "latency_b1_p95_ms")), flush=True)
    return {"rows": rows}


def bench_zoo(samples: int, repeats: int) -> dict:
    from xprune_nb.data import public as datasets
    from xprune_nb.models import zoo
    from xprune_nb.pruning.dynamic.build import build_dynamic
    from xprune_nb.pruning.dynamic.eval import compare_dense
    from xprune_nb.pruning.dynamic.sweep import per_class_scores

    data = datasets.load("digits")
    out = {}
    for name in ("digits_cnn", "digits_resnet"):
        model = zoo.load(name)
        scores = per_class_scores(model, data.train.X, data.train.y)
        net = build_dynamic(model, train_X=data.train.X, train_y=data.train.y,
                            per_class_scores=scores)
        out[name] = {"at": net.plan["at"]}
        for conf in (net.confidence, 1.0):
            net.confidence = conf
            for clock in ("wall", "cpu"):
                frame = compare_dense(net, model, data.test.X, data.test.y, samples=samples,
                                      repeats=repeats, clock=clock)
                out[name][f"confidence={conf}, clock={clock}"] = frame.to_dict(orient="index")
                print(f"{name} at={net.plan['at']} confidence={conf} clock={clock}:\n"
                      f"{frame.T.to_string()}\n", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="defaults,grid,zoo")
    parser.add_argument("--samples", type=int, default=200, help="examples timed at batch 1")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(OUT / "dynamic.json"))
    args = parser.parse_args()
    parts = set(args.only.split(","))
    results: dict = {"machine": {"python": platform.python_version(), "torch": torch.__version__,
                                 "threads": torch.get_num_threads()}}
    if parts & {"defaults", "grid", "static"}:
        from xprune_nb.pruning.dynamic.sweep import per_class_scores

        data = upsampled_digits()
        model = trained_model(data)
        scores = per_class_scores(model, *data["train"], samples=200)
        if "defaults" in parts:
            results["defaults"] = bench_defaults(model, data, scores, args.samples,
                                                 args.repeats)
        if "static" in parts:
            results["static"] = bench_static(model, data, min(args.samples, 100))
        if "grid" in parts:
            results["grid"] = bench_grid(model, data, scores, min(args.samples, 60), 3)
    if "zoo" in parts:
        results["zoo"] = bench_zoo(args.samples, args.repeats)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1, default=str))
    print("wrote", args.out)


if __name__ == "__main__":
    main()
