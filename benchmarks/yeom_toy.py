"""Yeom et al. (2021), toy experiment: prune 1000 of the 3000 hidden neurons of an MLP at once.

Setup (their repository ``LRP_Pruning_toy_example``): 2-D ``moons``, ``circles`` and a 4-class
``spiral`` ("mult"); MLP 2-1000-1000-1000-C; the model is trained once per dataset; for every
seed a fresh reference set of ``n`` samples per class is drawn from the data distribution
(``make_moons(n * C, random_state=seed)`` etc., as they do); each criterion scores the 3000
hidden neurons on it; scores are normalised per layer; the 1000 lowest are pruned in one go
(global ranking), with no fine-tuning; we report training accuracy, the mean over seeds. The
stability figure: mean pairwise overlap, across seeds, of the first 125 neurons pruned (n = 10).

Criteria come from the xprune_nb registry; the selection and pruning are done here by zeroing
neurons (weights and bias), which for an MLP is exactly removing them.

Run: ``.venv/bin/python benchmarks/yeom_toy.py --seeds 50 --out yeom.json``
(about 1 s per seed on one core after training; see docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import time

import numpy as np
import torch
from sklearn.datasets import make_circles, make_moons
from torch import nn

from xprune_nb import criteria
from xprune_nb.core.scores import normalize_scores
from xprune_nb.criteria import ScoringContext

torch.set_num_threads(1)

SAMPLES = (1, 2, 5, 10, 50)
PRUNE = 1000
#: label -> (registry name, options, per-layer normalisation). The first four mirror the paper
#: (their LRP is z+ on signed relevance with L1 scaling; gradient and Taylor use L2 scaling;
#: "weight" is the L1 norm of each neuron's incoming weights, L1-scaled); "lrp (default)" is
#: the registry's default with the Study's default normalisation.
CRITERIA = {
    "lrp": ("lrp", {"rule": "zplus", "signed": True}, "l1"),
    "taylor": ("taylor", {}, "l2"),
    "gradient": ("gradient", {}, "l2"),
    "weight": ("magnitude", {"p": 1}, "l1"),
    "lrp (default)": ("lrp", {}, "mean"),
}
#: The paper's own gradient and Taylor scores (not in the registry): the signed gradient (times
#: the activation, for Taylor) summed over the reference set, then its absolute value; opposite
#: signs cancel, which the registry's per-example absolute values avoid.
AS_PUBLISHED = {"taylor (abs of sum, as published)": ("taylor", "l2"),
                "gradient (abs of sum, as published)": ("gradient", "l2")}
PUBLISHED = {   # training accuracy after pruning, mean of 50 seeds, Yeom et al. 2021 (toy table)
    ("moons", "lrp"): "99.9 (n >= 5)", ("moons", "taylor"): "84.8-91.3 (n = 5-10)",
    ("moons", "gradient"): "86.2-91.3 (n = 5-10)", ("moons", "weight"): "99.6 (every n)",
    ("circles", "lrp"): "100 (n >= 5)", ("circles", "taylor"): "90.5 (n = 10)",
    ("circles", "gradient"): "83.9 (n = 10)", ("circles", "weight"): "97.1 (every n)",
}


def spiral(n_per_class: int, seed: int, classes: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """The 4-class spiral ("mult") of the toy repository."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for j in range(classes):
        r = np.linspace(0.0, 1.0, n_per_class)
        t = np.linspace(j * 4, (j + 1) * 4, n_per_class) + rng.normal(size=n_per_class) * 0.2
        xs.append(np.c_[r * np.sin(t), r * np.cos(t)])
        ys.append(np.full(n_per_class, j))
    return np.concatenate(xs), np.concatenate(ys)


def draw(dataset: str, n_per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    if dataset == "moons":
        x, y = make_moons(n_samples=2 * n_per_class, noise=0.1, random_state=seed)
    elif dataset == "circles":
        x, y = make_circles(n_samples=2 * n_per_class, noise=0.1, factor=0.3, random_state=seed)
    else:
        x, y = spiral(n_per_class, seed)
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.long)


def toy_mlp(classes: int, width: int = 1000, as_their_code: bool = False) -> nn.Sequential:
    """ReLU after every hidden layer; ``as_their_code`` builds the network their repository
    actually trains: its ``OrderedDict`` reuses the key ``nonlin2``, so the third hidden layer
    has no ReLU, and a (train-time) dropout follows the first."""
    if as_their_code:
        return nn.Sequential(nn.Linear(2, width), nn.ReLU(), nn.Dropout(),
                             nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width),
                             nn.Linear(width, classes))
    return nn.Sequential(nn.Linear(2, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                         nn.Linear(width, width), nn.ReLU(), nn.Linear(width, classes))


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(100):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    model.eval()


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean()) * 100


def summed_then_abs(model: nn.Sequential, x: torch.Tensor, y: torch.Tensor,
                    kind: str) -> dict[str, torch.Tensor]:
    """Gradient or Taylor scores the way the toy repository computes them."""
    outputs, names = {}, hidden(model)
    handles = [model[int(k)].register_forward_hook(
        lambda m, i, o, k=k: outputs.__setitem__(k, o)) for k in names]
    try:
        logits = model(x)
        grads = torch.autograd.grad(nn.functional.cross_entropy(logits, y),
                                    [outputs[k] for k in names])
    finally:
        for h in handles:
            h.remove()
    scores = {}
    for k, g in zip(names, grads):
        term = g * outputs[k] if kind == "taylor" else g
        scores[k] = term.sum(dim=0).abs().detach() / len(x)
    return scores


def lowest(scores: dict[str, torch.Tensor], norm: str, count: int, live_only: bool = False
           ) -> list[tuple[str, int]]:
    """The ``count`` lowest-ranked neurons after per-layer normalisation (ties by position);
    ``live_only`` skips neurons scored exactly 0."""
    normed = normalize_scores(scores, norm)
    flat = torch.cat([normed[k].double() for k in normed])
    owners = [(k, i) for k in normed for i in range(len(normed[k]))]
    order = torch.argsort(flat, stable=True)
    if live_only:
        order = order[flat[order] != 0]
    return [owners[i] for i in order[:count].tolist()]


def hidden(model: nn.Sequential) -> list[str]:
    """Names of the hidden Linear layers (every Linear but the output)."""
    return [str(i) for i, m in enumerate(model) if isinstance(m, nn.Linear)][:-1]


def dead_share(model: nn.Sequential, x: torch.Tensor) -> float:
    """Share of hidden neurons whose output (after their ReLU, if any) is 0 on every training
    example."""
    alive, names = [], hidden(model)
    with torch.no_grad():
        h = x
        for i, layer in enumerate(model):
            h = layer(h)
            nxt = model[i + 1] if i + 1 < len(model) else None
            owner = str(i - 1) if isinstance(layer, nn.ReLU) else str(i)
            if owner in names and not (str(i) == owner and isinstance(nxt, nn.ReLU)):
                alive.append((h != 0).any(dim=0))
    return 1 - float(torch.cat(alive).float().mean())


def zero_share(score, model, layers, dataset, classes) -> float:
    """Share of neurons scored exactly 0 at n = 10 (seed 0): ties broken by position."""
    x_ref, y_ref = draw(dataset, 10, 0)
    ctx = ScoringContext(model, "channel", layers, x_ref, y_ref, None, classes,
                         lambda m, inp: m(inp), seed=0, batch_size=len(x_ref))
    values = torch.cat([v.flatten() for v in score(ctx).values()])
    return float((values == 0).float().mean())


def pruned_accuracy(model, removed, x, y) -> float:
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for layer, unit in removed:
            model[int(layer)].weight[unit] = 0
            model[int(layer)].bias[unit] = 0
    try:
        return accuracy(model, x, y)
    finally:
        model.load_state_dict(state)


def run(seeds: int, epochs: int, datasets: list[str], as_their_code: bool = False) -> dict:
    results: dict = {"machine": platform.platform(), "torch": torch.__version__, "seeds": seeds,
                     "epochs": epochs, "as_their_code": as_their_code, "datasets": {}}
    for dataset in datasets:
        classes = 4 if dataset == "spiral" else 2
        x_train, y_train = draw(dataset, 500 if classes == 2 else 250, seed=10_000)
        torch.manual_seed(0)
        model = toy_mlp(classes, as_their_code=as_their_code)
        t = time.perf_counter()
        train(model, x_train, y_train, epochs, seed=0)
        entry = {"train_seconds": time.perf_counter() - t,
                 "accuracy_before": accuracy(model, x_train, y_train), "after": {},
                 "after_std": {}, "first125": {}, "first125_live": {}, "zero_scores": {},
                 "dead_on_train": dead_share(model, x_train)}
        t = time.perf_counter()
        scorers = {label: (criteria.create(name, **options).score, norm)
                   for label, (name, options, norm) in CRITERIA.items()}
        scorers.update({label: ((lambda ctx, kind=kind: summed_then_abs(
            ctx.model, ctx.inputs, ctx.targets, kind)), norm)
            for label, (kind, norm) in AS_PUBLISHED.items()})
        layers = {k: model[int(k)] for k in hidden(model)}
        for label, (score, norm) in scorers.items():
            accs = {n: [] for n in SAMPLES}
            first, first_live = [], []
            for n, seed in itertools.product(SAMPLES, range(seeds)):
                x_ref, y_ref = draw(dataset, n, seed)
                ctx = ScoringContext(model, "channel", layers, x_ref, y_ref, None, classes,
                                     lambda m, inp: m(inp), seed=seed, batch_size=len(x_ref))
                values = score(ctx)
                removed = lowest(values, norm, PRUNE)
                accs[n].append(pruned_accuracy(model, removed, x_train, y_train))
                if n == 10:
                    first.append(set(removed[:125]))
                    first_live.append(set(lowest(values, norm, 125, live_only=True)))
            entry["after"][label] = {n: float(np.mean(v)) for n, v in accs.items()}
            entry["after_std"][label] = {n: float(np.std(v)) for n, v in accs.items()}
            for key, sets in (("first125", first), ("first125_live", first_live)):
                pairs = [len(a & b) / 125 for a, b in itertools.combinations(sets, 2)]
                entry[key][label] = float(np.mean(pairs)) if pairs else float("nan")
            entry["zero_scores"][label] = zero_share(score, model, layers, dataset, classes)
        entry["prune_seconds"] = time.perf_counter() - t
        results["datasets"][dataset] = entry
        print(f"{dataset}: trained in {entry['train_seconds']:.0f} s "
              f"(train acc {entry['accuracy_before']:.1f}%), pruning runs "
              f"{entry['prune_seconds']:.0f} s", flush=True)
    return results


def markdown(results: dict) -> str:
    lines = []
    for dataset, entry in results["datasets"].items():
        lines += [f"**{dataset}** (training accuracy before pruning "
                  f"{entry['accuracy_before']:.1f}%; {results['seeds']} seeds; "
                  f"{100 * entry['dead_on_train']:.0f}% of hidden neurons never fire on the "
                  "training set)", "",
                  "| criterion | " + " | ".join(f"n={n}" for n in SAMPLES)
                  + " | overlap first 125 (n=10) | same, non-zero scores only | scored 0 (n=10) "
                  "| published |",
                  "|---" * (len(SAMPLES) + 5) + "|"]
        for label, accs in entry["after"].items():
            std = entry["after_std"][label]
            cells = " | ".join(f"{accs[n]:.1f} ± {std[n]:.1f}" for n in SAMPLES)
            pub = PUBLISHED.get((dataset, label), "")
            lines.append(f"| {label} | {cells} | {entry['first125'][label]:.2f} | "
                         f"{entry['first125_live'][label]:.2f} | "
                         f"{100 * entry['zero_scores'][label]:.0f}% | {pub} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--datasets", nargs="+", default=["moons", "circles", "spiral"])
    parser.add_argument("--as-their-code", action="store_true",
                        help="train the network their repository builds (see toy_mlp)")
    parser.add_argument("--out", help="write the raw results as JSON here")
    args = parser.parse_args()
    results = run(args.seeds, args.epochs, args.datasets, args.as_their_code)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)
    print(markdown(results))


if __name__ == "__main__":
    main()
