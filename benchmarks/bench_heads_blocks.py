"""Heads and blocks removed for real (issue 10): latency and MACs after removing 50% of the
attention heads and 50% of the blocks, on the zoo's digits_vit and on a Hugging Face ViT config
(random init, 32x32 inputs, 6 heads, 4 layers), next to torch-pruning's own head pruning; and
digits_vit's accuracy against the fraction of heads / blocks removed, without fine-tuning.

Run by hand: ``.venv/bin/python benchmarks/bench_heads_blocks.py [--quick]``; results go to
docs/benchmarks.md ("Heads and blocks"). Models compared are timed in alternation.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from xprune_nb.data import public as datasets
from xprune_nb.measure.metrics import count_macs
from xprune_nb.models import zoo
from xprune_nb.models.mechanisms.attention import find_heads, head_magnitude, remove_heads
from xprune_nb.models.mechanisms.blocks import (
    block_gates,
    block_magnitude,
    find_blocks,
    remove_blocks,
    skip_drop,
)

torch.set_num_threads(1)


def interleaved_latency(models, x, forward, repeats):
    """Median forward time (ms) of each model, timed in alternation."""
    times = [[] for _ in models]
    with torch.inference_mode():
        for m in models:
            for _ in range(3):
                forward(m, x)
        for _ in range(repeats):
            for i, m in enumerate(models):
                start = time.perf_counter()
                forward(m, x)
                times[i].append(time.perf_counter() - start)
    return [statistics.median(t) * 1000 for t in times]


def half_heads(model):
    """Plan removing the half of each layer's heads with the smallest weight norm."""
    groups, _ = find_heads(model)
    scores = head_magnitude(model, groups)
    return {g.name: scores[g.name].argsort()[: g.num_heads // 2].tolist() for g in groups}


def variants(model, example, forward):
    heads, blocks = copy.deepcopy(model), copy.deepcopy(model)
    remove_heads(heads, half_heads(heads))
    found, _ = find_blocks(blocks, example, forward)
    remove_blocks(blocks, [b.name for b in found[1::2]], blocks=found)
    return {"dense": model, "heads 50%": heads, "blocks 50%": blocks}


def hf_vit():
    import transformers as hf

    config = hf.ViTConfig(image_size=32, patch_size=4, num_channels=3, hidden_size=192,
                          num_hidden_layers=4, num_attention_heads=6, intermediate_size=768,
                          num_labels=10)
    torch.manual_seed(0)
    return hf.ViTForImageClassification(config).eval()


def torch_pruning_heads(model, example):
    """torch-pruning's own head pruning on the HF ViT (50% of heads, magnitude importance)."""
    import torch_pruning as tp

    model = copy.deepcopy(model)
    num_heads = {}
    for layer in model.vit.layers:
        attn = layer.attention
        for proj in (attn.q_proj, attn.k_proj, attn.v_proj):
            num_heads[proj] = attn.num_attention_heads
    # torch-pruning removes heads only inside its width-pruning pass (pruning_ratio > 0), so
    # every layer but the attention projections is ignored and head dims are kept
    attention = set(num_heads) | {layer.attention.o_proj for layer in model.vit.layers}
    ignored = [m for m in model.modules()
               if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)) and m not in attention]
    pruner = tp.pruner.BasePruner(
        model, example, importance=tp.importance.GroupMagnitudeImportance(p=2),
        pruning_ratio=0.5, ignored_layers=ignored, num_heads=num_heads,
        prune_num_heads=True, prune_head_dims=False, head_pruning_ratio=0.5,
        output_transform=lambda out: out.logits)
    pruner.step()
    for layer in model.vit.layers:   # torch-pruning changes shapes; the head count is ours
        attn = layer.attention
        attn.num_attention_heads = attn.q_proj.out_features // attn.head_dim
    return model


def bench_speed(name, model, example, batch, forward, repeats, extra=None):
    models = variants(model, example, forward)
    if extra:
        models.update(extra)
    rows = {}
    macs = {k: count_macs(m, example[:1], forward) for k, m in models.items()}
    params = {k: sum(p.numel() for p in m.parameters()) for k, m in models.items()}
    lat = {}
    for bs in (1, 64):
        x = batch[:bs]
        lat[bs] = dict(zip(models, interleaved_latency(list(models.values()), x, forward,
                                                       repeats)))
    for k in models:
        mac_ratio = macs["dense"] / macs[k]
        speed = {bs: lat[bs]["dense"] / lat[bs][k] for bs in lat}
        rows[k] = {"params": params[k], "macs": macs[k], "mac_ratio": round(mac_ratio, 3),
                   "ms_b1": round(lat[1][k], 3), "ms_b64": round(lat[64][k], 3),
                   "speedup_b1": round(speed[1], 3), "speedup_b64": round(speed[64], 3),
                   "speedup_over_mac_b64": round(speed[64] / mac_ratio, 3)}
    print(f"\n{name}")
    print(f"{'variant':<22}{'params':>9}{'MACs':>12}{'MAC x':>7}{'b1 ms':>8}{'b64 ms':>9}"
          f"{'b1 x':>7}{'b64 x':>7}{'x/MACx':>8}")
    for k, r in rows.items():
        print(f"{k:<22}{r['params']:>9}{r['macs']:>12}{r['mac_ratio']:>7.2f}{r['ms_b1']:>8.2f}"
              f"{r['ms_b64']:>9.2f}{r['speedup_b1']:>7.2f}{r['speedup_b64']:>7.2f}"
              f"{r['speedup_over_mac_b64']:>8.2f}")
    return rows


# ----------------------------------------------------------------- accuracy sweeps on digits_vit

class _Ctx:
    def __init__(self, model, layers, x, y):
        self.model, self.layers, self.x, self.y = model, layers, x, y

    def forward(self, model, x):
        return model(x)

    def batches(self):
        for i in range(0, len(self.x), 64):
            yield self.x[i:i + 64], self.y[i:i + 64]


def head_scores(model, criterion, x, y, seed=0):
    from xprune_nb.models.mechanisms.attention.gates import per_example_head_gates

    groups, _ = find_heads(model)
    if criterion == "random":
        gen = torch.Generator().manual_seed(seed)
        return {g.name: torch.rand(g.num_heads, generator=gen) for g in groups}
    if criterion == "magnitude":
        return head_magnitude(model, groups)
    ctx = _Ctx(model, {g.name: None for g in groups}, x, y)
    target = "loss" if criterion == "taylor" else "logit"
    return {k: v.abs().mean(0).float()
            for k, v in per_example_head_gates(ctx, target=target).items()}


def block_scores(model, criterion, x, y, blocks, seed=0):
    if criterion == "random":
        gen = torch.Generator().manual_seed(seed)
        return {b.name: float(torch.rand(1, generator=gen)) for b in blocks}
    if criterion == "magnitude":
        return block_magnitude(model, blocks)
    if criterion == "skip_drop":
        return skip_drop(model, blocks, x, y, lambda m, t: m(t))
    # taylor: mean over examples of |d loss / d gate| (a batch gradient nearly cancels on
    # training data the model fits, and its sign says little about a jump from g=1 to g=0)
    total = {b.name: 0.0 for b in blocks}
    for i in range(len(x)):
        with block_gates(model, blocks) as gates:
            F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]).backward()
        for k, g in gates.items():
            total[k] += abs(float(g.grad)) / len(x)
    model.zero_grad(set_to_none=True)
    return total


def accuracy(model, split):
    with torch.no_grad():
        return (model(split.X).argmax(1) == split.y).float().mean().item()


def sweep_heads(data, criteria, fractions):
    base = zoo.load("digits_vit")
    ref = data.train
    out = {}
    for criterion in criteria:
        scores = head_scores(base, criterion, ref.X[:256], ref.y[:256])
        flat = sorted((float(s), name, h) for name, v in scores.items()
                      for h, s in enumerate(v.tolist()))
        sizes = {name: len(v) for name, v in scores.items()}
        row = {}
        for fraction in fractions:
            k = round(fraction * sum(sizes.values()))
            plan, taken = {n: [] for n in sizes}, 0
            for _, name, head in flat:   # global ranking; at least one head per layer stays
                if taken == k:
                    break
                if len(plan[name]) < sizes[name] - 1:
                    plan[name].append(head)
                    taken += 1
            model = copy.deepcopy(base)
            remove_heads(model, plan)
            row[fraction] = accuracy(model, data.test)
        out[criterion] = row
    return out


def sweep_blocks(data, criteria, counts):
    base = zoo.load("digits_vit")
    ref = data.train
    blocks, _ = find_blocks(base, ref.X[:2], lambda m, t: m(t))
    out = {}
    for criterion in criteria:
        scores = block_scores(base, criterion, ref.X[:256], ref.y[:256], blocks)
        order = sorted(scores, key=scores.get)
        row = {}
        for count in counts:
            model = copy.deepcopy(base)
            remove_blocks(model, order[:count], blocks=blocks)
            row[count] = accuracy(model, data.test)
        out[criterion] = row
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer timing repeats")
    parser.add_argument("--out", default="build/benchmarks/heads_blocks.json")
    args = parser.parse_args()
    repeats = 10 if args.quick else 30
    results = {"machine": {"python": platform.python_version(), "torch": torch.__version__,
                           "threads": torch.get_num_threads()}}
    data = datasets.load("digits")
    vit = zoo.load("digits_vit")
    batch = data.train.X[:64]
    results["digits_vit"] = bench_speed("digits_vit (1x8x8, 16 tokens, dim 32, 4 heads, 4 blocks)",
                                        vit, batch[:2], batch, lambda m, t: m(t), repeats)
    try:
        hf = hf_vit()
    except ImportError:
        print("transformers is not installed: skipping the Hugging Face ViT")
    else:
        torch.manual_seed(0)
        images = torch.randn(64, 3, 32, 32)

        def logits(m, t):
            return m(t).logits

        extra = {"torch-pruning heads 50%": torch_pruning_heads(hf, images[:2])}
        results["hf_vit"] = bench_speed("HF ViT (3x32x32, patch 4, 65 tokens, dim 192, 6 heads, "
                                        "4 layers)", hf, images[:2], images, logits, repeats,
                                        extra)
    fractions = (0.25, 0.5, 0.75)
    results["heads_accuracy"] = sweep_heads(
        data, ("random", "magnitude", "taylor", "attention"), fractions)
    results["blocks_accuracy"] = sweep_blocks(
        data, ("random", "magnitude", "taylor", "skip_drop"), (1, 2, 3))
    results["original_accuracy"] = accuracy(vit, data.test)
    print("\ndigits_vit test accuracy (original {:.1%}) vs share of heads removed".format(
        results["original_accuracy"]))
    for crit, row in results["heads_accuracy"].items():
        print(f"  {crit:<10}" + "".join(f"{f:>6.0%}: {a:6.1%}" for f, a in row.items()))
    print("digits_vit test accuracy vs blocks removed (of 4)")
    for crit, row in results["blocks_accuracy"].items():
        print(f"  {crit:<10}" + "".join(f"{c:>4}: {a:6.1%}" for c, a in row.items()))
    import pathlib

    path = pathlib.Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=str))
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
