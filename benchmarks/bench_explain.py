"""Explainability benchmarks (issue 3): cost of every criterion, speed of the comparisons and of
the drift probe, and accuracy-vs-fraction-pruned curves for every criterion against
torch-pruning's own importances.

Run by hand: ``.venv/bin/python benchmarks/bench_explain.py [--out results.json]``; results go
to docs/benchmarks.md. One thread (``torch.set_num_threads(1)``), timings are the median
of repeated warm calls; imports are measured separately in fresh interpreters.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import subprocess
import sys
import time

import torch
import torch_pruning as tp
from torch import nn

import xprune_nb as xp
from xprune_nb import criteria, explain
from xprune_nb.criteria import ScoringContext
from xprune_nb.measure.training import evaluate_split

torch.set_num_threads(1)

CRITERIA = {
    "magnitude": {}, "random": {}, "activation": {}, "gradient": {}, "taylor": {},
    "lrp": {}, "lrp (zplus)": {"rule": "zplus"}, "lrp (alphabeta)": {"rule": "alphabeta"},
    "lrp (gamma)": {"rule": "gamma"}, "conductance": {}, "shapley": {"permutations": 20},
}
FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


def median_time(fn, repeats: int = 3) -> float:
    fn()                                    # warm: imports, caches
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def criterion_costs(samples: int = 256, batch: int = 64) -> dict:
    """Seconds per scoring of digits_cnn, and the same in forward+backward equivalents: the
    time of one plain forward+backward pass over the same reference batches."""
    data = xp.datasets.load("digits")
    model = xp.zoo.load("digits_cnn").eval()
    layers = {n: m for n, m in model.named_modules()
              if isinstance(m, (nn.Conv2d, nn.Linear)) and n != "head"}
    x, y = data.train.X[:samples], data.train.y[:samples]

    def ctx():
        return ScoringContext(model, "channel", layers, x, y, None, 10, lambda m, inp: m(inp),
                              seed=0, batch_size=batch)

    def fwd_bwd():
        for xb, yb in ctx().batches():
            model.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(xb), yb, reduction="sum").backward()
        model.zero_grad(set_to_none=True)

    unit = median_time(fwd_bwd, repeats=10)
    rows = {}
    for label, options in CRITERIA.items():
        name = label.split(" ")[0]
        seconds = median_time(
            lambda name=name, options=options: criteria.create(name, **options).score(ctx()),
            repeats=1 if name == "shapley" else 3)
        rows[label] = {"seconds": seconds, "fwd_bwd_equivalents": seconds / unit}
    return {"samples": samples, "batch_size": batch, "fwd_bwd_seconds": unit, "criteria": rows}


def comparison_speed() -> dict:
    """Saliency comparison of 16 digits (two models), Shapley comparison of 50 tabular rows
    (two models), and the drift probe the Study runs after every step."""
    out: dict = {}
    digits = xp.datasets.load("digits")
    before = xp.zoo.load("digits_cnn")
    after = copy.deepcopy(before)
    with torch.no_grad():
        after.conv2.weight[::3] = 0
    x, y = digits.test.X[:16], digits.test.y[:16]
    out["saliency_16_digits"] = {
        method: median_time(lambda m=method: explain.compare_saliency(before, after, x, labels=y,
                                                                      method=m))
        for method in explain.METHODS}
    out.update(shapley_speed())
    for n in (32, 200):
        px, py = digits.test.X[:n], digits.test.y[:n]
        out[f"probe_drift_{n}_digits"] = median_time(
            lambda px=px, py=py: explain.probe_drift(before, after, px, py), repeats=20)
    return out


SHAPLEY_COLD = """
import copy, time, torch
torch.set_num_threads(1)
import shap, xprune_nb as xp
from xprune_nb import explain
cancer = xp.datasets.load("breast_cancer")
model = xp.zoo.load("tabular_mlp")
t = time.perf_counter()
explain.compare_shapley(model, copy.deepcopy(model), cancer.test.X[:50], cancer.train.X[:50])
print(time.perf_counter() - t)
"""


def _wine_mlp(seed: int = 0) -> nn.Module:
    """A 13-64-32-3 MLP on wine, trained briefly (the zoo has no wine model; the time of an
    exact explanation depends on the layer sizes, not on the weights)."""
    wine = xp.datasets.load("wine")
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(13, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(),
                          nn.Linear(32, 3))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(100):
        opt.zero_grad()
        nn.functional.cross_entropy(model(wine.train.X), wine.train.y).backward()
        opt.step()
    return model.eval()


def shapley_speed() -> dict:
    """Shapley comparisons of two models, all by shap's explainers (Independent masker, every
    background row): ``permutation`` (the default 16 permutations, each also reversed) on
    tabular_mlp, 50 test rows, 50 and 100 background rows; ``exact`` on a 13-feature wine MLP
    (2**13 coalitions per row), the Study's default 20 rows and all 36 test rows, 50 background
    rows. Warm medians; ``cold`` is the first call in a fresh interpreter (shap's numba
    functions compile then, once per process), shap's import excluded."""
    out: dict = {}
    cancer = xp.datasets.load("breast_cancer")
    tab_b = xp.zoo.load("tabular_mlp")
    tab_a = copy.deepcopy(tab_b)
    with torch.no_grad():
        tab_a.hidden[0].weight[::3] = 0
    rows = cancer.test.X[:50]
    for n_bg in (50, 100):
        background = cancer.train.X[:n_bg]
        key = "shapley_50_rows_tabular_mlp" + ("" if n_bg == 100 else f"_{n_bg}_background")
        out[key] = median_time(
            lambda background=background: explain.compare_shapley(tab_b, tab_a, rows,
                                                                  background), repeats=3)
    out["shapley_50_rows_tabular_mlp_cold"] = statistics.median(
        float(subprocess.run([sys.executable, "-c", SHAPLEY_COLD], capture_output=True,
                             text=True, check=True).stdout) for _ in range(2))
    wine = xp.datasets.load("wine")
    wine_b = _wine_mlp()
    wine_a = copy.deepcopy(wine_b)
    with torch.no_grad():
        wine_a[0].weight[::3] = 0
    for n in (20, 36):
        x, background = wine.test.X[:n], wine.train.X[:50]
        out[f"shapley_exact_{n}_rows_wine"] = median_time(
            lambda x=x, background=background: explain.compare_shapley(
                wine_b, wine_a, x, background, explainer="exact"), repeats=1)
        out[f"shapley_permutation_{n}_rows_wine"] = median_time(
            lambda x=x, background=background: explain.compare_shapley(
                wine_b, wine_a, x, background, explainer="permutation"), repeats=3)
    return out


def import_costs() -> dict:
    """Seconds to import in a fresh interpreter (the heavy optional packages load lazily)."""
    stmts = {"xprune_nb": "import xprune_nb",
             "xprune_nb.explain": "import xprune_nb.explain",
             "zennit (via xprune_nb.models.mechanisms.lrp)":
                 "from xprune_nb.models.mechanisms.lrp import import_zennit; import_zennit()",
             "captum.attr": "import captum.attr", "shap": "import shap"}
    out = {}
    for label, stmt in stmts.items():
        code = f"import time; t = time.perf_counter(); {stmt}; print(time.perf_counter() - t)"
        runs = [float(subprocess.run([sys.executable, "-c", code], capture_output=True,
                                     text=True, check=True).stdout) for _ in range(3)]
        out[label] = statistics.median(runs)
    return out


def pruned_share(model: nn.Module, original: dict[str, int]) -> float:
    """Fraction of the prunable channels/neurons (all Conv/Linear outputs but the head's) that
    are gone: what was really pruned, whatever fraction was asked for."""
    now = {n: m.weight.shape[0] for n, m in model.named_modules()
           if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)) and n in original}
    return 1 - sum(now.values()) / sum(original.values())


def channel_counts(model: nn.Module) -> dict[str, int]:
    return {n: m.weight.shape[0] for n, m in model.named_modules()
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)) and n != "head"}


def _finetune(model, data, seed: int = 0) -> None:
    """One epoch, the Study's retrain defaults (Adam, lr 1e-3, batch 64)."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()
    for idx in torch.randperm(len(data.train), generator=gen).split(64):
        opt.zero_grad()
        nn.functional.cross_entropy(model(data.train.X[idx]), data.train.y[idx]).backward()
        opt.step()
    model.eval()


def torch_pruning_curve(model_name: str, data, importance: str) -> dict:
    """torch-pruning's own MetaPruner, global ranking, output layer ignored."""
    out = {}
    for fraction in FRACTIONS:
        model = xp.zoo.load(model_name).eval()
        example = data.train.X[:2]
        imp = (tp.importance.MagnitudeImportance(p=1) if importance == "magnitude"
               else tp.importance.TaylorImportance())
        pruner = tp.pruner.MetaPruner(model, example, importance=imp, pruning_ratio=fraction,
                                      global_pruning=True, ignored_layers=[model.head])
        if importance == "taylor":
            idx = torch.arange(0, len(data.train), max(1, len(data.train) // 256))[:256]
            nn.functional.cross_entropy(model(data.train.X[idx]), data.train.y[idx]).backward()
        counts = channel_counts(model)
        pruner.step()
        model.zero_grad(set_to_none=True)
        acc = evaluate_split(model, data.test, lambda m, inp: m(inp))[0]
        share = pruned_share(model, counts)
        _finetune(model, data)
        out[fraction] = (acc, evaluate_split(model, data.test, lambda m, inp: m(inp))[0], share)
    return out


def accuracy_curves(model_names=("digits_cnn", "tabular_mlp")) -> dict:
    """Test accuracy after one-shot channel pruning of each fraction from the original model,
    without and with one epoch of fine-tuning."""
    curves: dict = {}
    for model_name in model_names:
        meta = xp.zoo.info(model_name)
        data = xp.datasets.load(meta["dataset"], **meta.get("dataset_options", {}))
        study = xp.Study(xp.zoo.load(model_name), data, seed=0)
        base = study.history[0].metrics["accuracy"]
        counts = channel_counts(study.model)
        per_model = {"original": base}
        for label in ("magnitude", "random", "activation", "gradient", "taylor", "lrp",
                      "conductance", "shapley"):
            study.goto(0)
            study.score(label, **CRITERIA[label])
            points = {}
            for fraction in FRACTIONS:
                study.goto(0)
                pruned = study.prune(fraction)
                share = pruned_share(study.model, counts)
                tuned = study.retrain(epochs=1, progress=False)
                points[fraction] = (pruned.metrics["accuracy"], tuned.metrics["accuracy"], share)
            per_model[label] = points
        for importance in ("magnitude", "taylor"):
            per_model[f"torch-pruning {importance}"] = torch_pruning_curve(model_name, data,
                                                                           importance)
        curves[model_name] = per_model
        print(f"curves for {model_name} done", file=sys.stderr, flush=True)
    return curves


def markdown(results: dict) -> str:
    lines = ["### Cost per criterion (digits_cnn, 256 reference digits, batches of 64)", "",
             f"One plain forward+backward pass over the reference set: "
             f"{1000 * results['costs']['fwd_bwd_seconds']:.1f} ms.", "",
             "| criterion | seconds | forward+backward equivalents |", "|---|---|---|"]
    for label, row in results["costs"]["criteria"].items():
        lines.append(f"| {label} | {row['seconds']:.3f} | {row['fwd_bwd_equivalents']:.1f} |")
    speed = results["speed"]
    lines += ["", "### Comparisons and drift probe (warm, median)", "",
              "| what | seconds |", "|---|---|"]
    for method, sec in speed["saliency_16_digits"].items():
        lines.append(f"| saliency comparison, 16 digits, 2 models, `{method}` | {sec:.3f} |")
    lines += [
        f"| Shapley comparison, tabular_mlp, 50 rows, 2 models (shap permutation, 16 "
        f"permutations each also reversed, 100 background rows) | "
        f"{speed['shapley_50_rows_tabular_mlp']:.2f} |",
        f"| the same, 50 background rows (the Study's default) | "
        f"{speed['shapley_50_rows_tabular_mlp_50_background']:.2f} |",
        f"| the same, 50 background rows, first call of a process (shap's numba compiles) | "
        f"{speed['shapley_50_rows_tabular_mlp_cold']:.2f} |"]
    for n in (20, 36):
        lines.append(f"| Shapley comparison, wine MLP (13 features), {n} rows, 2 models, 50 "
                     f"background rows: shap exact / permutation | "
                     f"{speed[f'shapley_exact_{n}_rows_wine']:.2f} / "
                     f"{speed[f'shapley_permutation_{n}_rows_wine']:.2f} |")
    for n in (32, 200):
        lines.append(f"| probe_drift, {n} digits | {speed[f'probe_drift_{n}_digits']:.4f} |")
    lines += ["", "### Import cost (fresh interpreter, median of 3)", "",
              "| import | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.2f} |" for k, v in results["imports"].items()]
    for model_name, per_model in results.get("curves", {}).items():
        lines += ["", f"### Accuracy vs fraction of channels pruned: {model_name} "
                  f"(original {100 * per_model['original']:.1f}%; test accuracy %, "
                  "no fine-tuning / 1 epoch; in brackets the share of channels really removed "
                  "where it differs from the one asked for by more than 2 points)", "",
                  "| criterion | " + " | ".join(f"{int(100 * f)}%" for f in FRACTIONS) + " |",
                  "|---" * (len(FRACTIONS) + 1) + "|"]
        for label, points in per_model.items():
            if label == "original":
                continue
            cells = " | ".join(
                f"{100 * points[f][0]:.0f} / {100 * points[f][1]:.0f}"
                + (f" ({100 * points[f][2]:.0f}%)" if abs(points[f][2] - f) > 0.02 else "")
                for f in FRACTIONS)
            lines.append(f"| {label} | {cells} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="write the raw results as JSON here")
    parser.add_argument("--skip-curves", action="store_true")
    args = parser.parse_args()
    results = {"machine": platform.platform(), "python": platform.python_version(),
               "torch": torch.__version__, "threads": torch.get_num_threads(),
               "costs": criterion_costs(), "speed": comparison_speed(),
               "imports": import_costs()}
    if not args.skip_curves:
        results["curves"] = accuracy_curves()
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1, default=str)
    print(markdown(results))


if __name__ == "__main__":
    main()
