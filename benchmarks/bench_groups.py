"""Who pays for pruning: worst-group cost at equal size (issue 23).

A seeded synthetic tabular task with a built-in group imbalance: 10 % of the examples belong to
a minority whose label follows three features (6, 7, 8) the majority's label ignores; the
majority's label follows features 0-3. The model sees no group label, only a noisy proxy of it
(feature 15 is shifted for the minority, as a postcode or an age band would be), so it has to
learn both rules. A small MLP (16-64-64-2) is trained, then pruned by each method to the same
parameter count (the same fraction of hidden units removed from every layer, no fine-tuning),
and the worst-group accuracy drop and the gap between the groups are measured on held-out test
data:

- ``magnitude``, ``taylor``, ``lrp``: the usual criteria;
- ``group_relevance`` (default: units relied on mostly by the majority go first) and
  ``group_relevance target="any"`` (XTranPrune's direction: units tied to either group go first);
- ``auto_prune(params=..., max_group_drop=0.02)``: taylor rounds that may not cost any group
  more than 2 points of *validation* accuracy; it stops short of the budget when the limit binds
  (its parameter count is reported).

Run by hand (not in CI): ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_groups.py``
(``--seeds 0 1 2 --amount 0.3``, ``--methods magnitude "group_relevance strength=0.5"``: the
first method is the anchor whose size auto_prune targets). Prints a Markdown table (mean ± sd
over seeds) for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import ast
import copy
import statistics
import time
import warnings

import torch
from torch import nn

torch.set_num_threads(1)

FEATURES = 16
MINORITY = 0.10
SIZES = {"train": 4000, "val": 1500, "test": 4000}


def make_data(seed: int) -> dict:
    """``{split: (X, y, groups)}``: a 10 % minority whose label follows features 6-8."""
    g = torch.Generator().manual_seed(1000 + seed)
    out = {}
    for split, n in SIZES.items():
        X = torch.randn(n, FEATURES, generator=g)
        groups = (torch.rand(n, generator=g) < MINORITY).long()
        X[:, 15] += 4.0 * groups.float()      # a noisy proxy of the group, not the group
        majority = X[:, 0] + X[:, 1] - X[:, 2] + 0.5 * X[:, 3]
        minority = X[:, 6] - X[:, 7] + X[:, 8]
        y = torch.where(groups == 1, minority > 0, majority > 0).long()
        flip = torch.rand(n, generator=g) < 0.03   # a little label noise
        out[split] = (X, torch.where(flip, 1 - y, y), groups)
    return out


def train(data: dict, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(FEATURES, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                        nn.Linear(64, 2))
    X, y, _ = data["train"]
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(60):
        for idx in torch.randperm(len(y), generator=gen).split(128):
            opt.zero_grad()
            nn.functional.cross_entropy(net(X[idx]), y[idx]).backward()
            opt.step()
    return net.eval()


def test_state(model: nn.Module, data: dict) -> dict:
    X, y, groups = data["test"]
    with torch.no_grad():
        hit = (model(X).argmax(1) == y).double()
    by_group = [float(hit[groups == k].mean()) for k in (0, 1)]
    return {"accuracy": float(hit.mean()), "majority": by_group[0], "minority": by_group[1],
            "worst": min(by_group), "gap": max(by_group) - min(by_group),
            "params": sum(p.numel() for p in model.parameters())}


METHODS = ("magnitude", "taylor", "lrp", "auto_prune max_group_drop=0.02", "group_relevance",
           "group_relevance strength=1.0", "group_relevance target='any'")


def run_method(method: str, net: nn.Module, data: dict, amount: float, budget: float,
               seed: int) -> nn.Module:
    import xprune_nb as xp

    study = xp.Study(copy.deepcopy(net), train=data["train"], val=data["val"],
                     test=data["test"], group_names=["majority", "minority"], seed=seed)
    if method.startswith("auto_prune"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # "budget not met" is read from the params
            study.auto_prune(params=budget, max_group_drop=0.02, samples=512)
        return study.model
    name, *option = method.split(" ")
    options = {}
    for text in option:   # "strength=0.5", "target=any"
        key, _, value = text.partition("=")
        try:
            options[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            options[key] = value
    study.score(name, samples=512, **options)
    study.prune(amount, scope="layer")
    return study.model


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=list(METHODS),
                        help='methods in order, magnitude first (e.g. "group_relevance '
                             'strength=0.5")')
    parser.add_argument("--amount", type=float, default=0.5,
                        help="fraction of each hidden layer's units removed")
    args = parser.parse_args()
    start = time.perf_counter()
    methods = args.methods
    results: dict[str, list[dict]] = {m: [] for m in methods}
    originals = []
    for seed in args.seeds:
        data = make_data(seed)
        net = train(data, seed)
        before = test_state(net, data)
        originals.append(before)
        budget = None
        for method in methods:
            t0 = time.perf_counter()
            # METHODS lists magnitude first: auto_prune's budget is magnitude's size
            model = run_method(method, net, data, args.amount, budget, seed)
            after = test_state(model, data)
            if budget is None and method == "magnitude":   # auto_prune's target: the same size
                budget = after["params"] / before["params"]
            after["worst_drop"] = before["worst"] - after["worst"]
            after["largest_drop"] = max(before[k] - after[k] for k in ("majority", "minority"))
            after["seconds"] = time.perf_counter() - t0
            results[method].append(after)
            print(f"seed {seed} {method:32s} params {after['params']:5d} acc "
                  f"{after['accuracy']:.3f} maj {after['majority']:.3f} min "
                  f"{after['minority']:.3f} worst drop {after['worst_drop']:+.3f} gap "
                  f"{after['gap']:.3f} ({after['seconds']:.1f} s)", flush=True)

    def cell(values, digits=3):
        mean = statistics.fmean(values)
        sd = statistics.stdev(values) if len(values) > 1 else float("nan")
        return f"{mean:.{digits}f} ± {sd:.{digits}f}"

    print(f"\noriginal (test): accuracy {cell([o['accuracy'] for o in originals])}, "
          f"majority {cell([o['majority'] for o in originals])}, minority "
          f"{cell([o['minority'] for o in originals])}, gap "
          f"{cell([o['gap'] for o in originals])}, params {originals[0]['params']}\n")
    print("| method | params kept | test accuracy | majority | minority | worst-group drop "
          "| largest group drop (max over seeds) | group gap | gap minus magnitude's (same "
          "seed) |")
    print("|---|---|---|---|---|---|---|---|---|")
    anchor = results[methods[0]]
    for method in methods:
        rows = results[method]
        kept = [r["params"] / o["params"] for r, o in zip(rows, originals)]
        paired = [r["gap"] - a["gap"] for r, a in zip(rows, anchor)]
        print(f"| {method} | {cell(kept, 2)} | {cell([r['accuracy'] for r in rows])} | "
              f"{cell([r['majority'] for r in rows])} | {cell([r['minority'] for r in rows])} "
              f"| {cell([r['worst_drop'] for r in rows])} | "
              f"{cell([r['largest_drop'] for r in rows])} "
              f"({max(r['largest_drop'] for r in rows):.3f}) | {cell([r['gap'] for r in rows])} "
              f"| {cell(paired)} |")
    print(f"\n{len(args.seeds)} seeds, {time.perf_counter() - start:.0f} s in all")


if __name__ == "__main__":
    main()
