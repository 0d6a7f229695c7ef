"""Real models at real size (issue 19): xprune_nb against its anchors on ResNet-50, ViT-B/16 and
BERT-base built from Hugging Face configs at their default sizes with random weights.

By hand, not in CI (minutes per task on two CPU cores)::

    python benchmarks/bench_scale.py open_prune --model resnet50 --runs 5
    python benchmarks/bench_scale.py open --model resnet50 --runs 3
    python benchmarks/bench_scale.py taylor --model resnet50 --runs 3
    python benchmarks/bench_scale.py round_to --model resnet50 --runs 3
    python benchmarks/bench_scale.py speedup --model resnet50 --runs 3 --samples 32

``speedup`` prunes 50 % of the channels with ours and with Torch-Pruning in the same child and
times the dense model and both pruned models in alternation (rounds of the three, medians), so
that load changes hit all three alike; ``round_to`` times them in separate children.

Every measurement runs in a fresh subprocess (so its peak memory is its own): the child builds
the model, records its resident memory, runs the work once untimed (warm-up: imports, first
kernels) and once timed, and reports the wall time and the peak resident memory above the
loaded model (``ru_maxrss``). Ours and the anchor alternate, ``--runs`` times each, with torch
pinned to ``--threads`` threads; the table gives medians. Inputs are synthetic: 224-px images
or 128-token sequences.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

TASKS = ("open_prune", "open", "taylor", "round_to", "speedup")
MODELS = ("resnet50", "vit_b16", "bert_base")


# ------------------------------------------------------------------ the child's side
def _build(name: str):
    import torch
    import transformers

    torch.manual_seed(0)
    if name == "resnet50":
        model = transformers.ResNetForImageClassification(transformers.ResNetConfig(
            num_labels=10))
    elif name == "vit_b16":
        model = transformers.ViTForImageClassification(transformers.ViTConfig(num_labels=10))
    else:
        model = transformers.BertForSequenceClassification(transformers.BertConfig(
            num_labels=10))
    return model.eval()


def _inputs(name: str, n: int):
    import torch

    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 10
    if name == "bert_base":
        return torch.randint(1000, 2000, (n, 128), generator=g), y
    return torch.randn(n, 3, 224, 224, generator=g), y


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mb() -> float:
    """Peak resident memory since the start, or since the last :func:`_reset_peak`."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak() -> None:
    """Start the peak over from the memory in use now (Linux), so a call that times only its
    own part (scoring on an open study) also measures only its own peak."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _tp_forward(model, x):
    return model(x).logits


def _work(task: str, who: str, name: str, n: int):
    """The function timed: the same work for ours and for the anchor."""
    import copy
    import gc

    import torch

    model0 = _build(name)
    X, y = _inputs(name, n)
    classifier = "classifier"

    def ours_open_prune():
        import xprune_nb as xp

        study = xp.Study(model0, train=(X, y), test=(X, y), probe_size=n)
        study.score("magnitude", samples=n)
        study.prune(0.3, round_to=args_round_to)
        return study.model

    def tp_open_prune():
        import torch_pruning as tp

        model = copy.deepcopy(model0)
        pruner = tp.pruner.MetaPruner(
            model, X, importance=tp.importance.MagnitudeImportance(p=2), pruning_ratio=0.3,
            global_pruning=True, ignored_layers=[getattr(model, classifier)],
            forward_fn=_tp_forward, round_to=args_round_to)
        pruner.step()
        return model

    def ours_open():
        import xprune_nb as xp

        return xp.Study(model0, train=(X, y), test=(X, y), probe_size=n)

    def anchor_open():   # the target: one forward of the probe + torch-pruning's graph
        import torch_pruning as tp

        with torch.no_grad():
            model0(X)
        tp.DependencyGraph().build_dependency(model0, example_inputs=X[:1],
                                              forward_fn=_tp_forward)

    def ours_taylor():
        import xprune_nb as xp

        study = xp.Study(model0, train=(X, y), test=(X, y), probe_size=n)
        # the groups are found once per study (graph + trial); TP's graph is also built
        # before its timer starts
        study.score("magnitude")
        gc.collect()
        _reset_peak()
        start = time.perf_counter()
        study.score("taylor", samples=n, batch_size=8)
        return time.perf_counter() - start

    def tp_taylor():
        import torch_pruning as tp

        model = copy.deepcopy(model0)
        imp = tp.importance.TaylorImportance()
        pruner = tp.pruner.MetaPruner(model, X[:1], importance=imp, pruning_ratio=0.3,
                                      global_pruning=True, forward_fn=_tp_forward,
                                      ignored_layers=[getattr(model, classifier)])
        gc.collect()
        _reset_peak()
        start = time.perf_counter()
        model.zero_grad()
        for i in range(0, n, 8):
            loss = torch.nn.functional.cross_entropy(model(X[i:i + 8]).logits, y[i:i + 8])
            loss.backward()
        for group in pruner.DG.get_all_groups(ignored_layers=pruner.ignored_layers,
                                              root_module_types=pruner.root_module_types):
            imp(group)
        return time.perf_counter() - start

    table = {("open_prune", "ours"): ours_open_prune, ("open_prune", "anchor"): tp_open_prune,
             ("open", "ours"): ours_open, ("open", "anchor"): anchor_open,
             ("taylor", "ours"): ours_taylor, ("taylor", "anchor"): tp_taylor}
    return model0, table[(task, who)]


args_round_to = None


def child(task: str, who: str, name: str, n: int, threads: int, round_to: int | None) -> dict:
    import torch

    global args_round_to
    args_round_to = round_to
    torch.set_num_threads(threads)
    if task == "round_to":
        return _round_to_child(who, name, n, round_to)
    if task == "speedup":
        return _speedup_child(name, n, round_to)
    import gc

    model0, fn = _work(task, who, name, n)
    base = _rss_mb()
    fn()   # warm-up: imports and first kernels are not what is compared
    gc.collect()   # the warm-up's objects (a study holds reference cycles) are not the timed run's
    start = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - start
    if isinstance(out, float):   # the call timed its own part (scoring, not the study's open)
        seconds = out
    return {"seconds": seconds, "peak_above_model_mb": _peak_mb() - base}


def _round_to_child(who: str, name: str, n: int, round_to: int | None) -> dict:
    """Speed-up / MAC reduction of the model with 50 % of its channels removed."""
    import copy

    import torch
    import torch_pruning as tp

    import xprune_nb as xp
    from xprune_nb.measure.metrics import count_macs

    model0 = _build(name)
    X, y = _inputs(name, n)
    if who == "ours":
        study = xp.Study(model0, train=(X[:8], y[:8]), test=(X[:8], y[:8]), probe_size=2)
        study.score("magnitude", samples=8)
        study.prune(0.5, round_to=round_to, recalibrate=False)
        pruned = study.model
    else:
        pruned = copy.deepcopy(model0)
        tp.pruner.MetaPruner(pruned, X[:1], importance=tp.importance.MagnitudeImportance(p=2),
                             pruning_ratio=0.5, global_pruning=True, forward_fn=_tp_forward,
                             ignored_layers=[pruned.classifier], round_to=round_to).step()

    def fwd(m, x):
        return m(x).logits

    def timed(m):
        with torch.inference_mode():
            fwd(m, X)
            times = []
            for _ in range(3):
                start = time.perf_counter()
                fwd(m, X)
                times.append(time.perf_counter() - start)
        return statistics.median(times)

    t0, t1 = timed(model0), timed(pruned)
    m0, m1 = count_macs(model0, X[:1], fwd), count_macs(pruned, X[:1], fwd)
    return {"seconds": t1, "speedup": t0 / t1, "mac_reduction": m0 / m1,
            "ratio": (t0 / t1) / (m0 / m1), "peak_above_model_mb": float("nan")}


def _speedup_child(name: str, n: int, round_to: int | None, rounds: int = 5) -> dict:
    """Speed-up / MAC reduction of ours and of Torch-Pruning's 50 % pruned models, timed in
    alternation with the dense model in one process."""
    import copy

    import torch
    import torch_pruning as tp

    import xprune_nb as xp
    from xprune_nb.measure.metrics import count_macs

    model0 = _build(name)
    X, y = _inputs(name, n)
    study = xp.Study(model0, train=(X[:8], y[:8]), test=(X[:8], y[:8]), probe_size=2)
    study.score("magnitude", samples=8)
    study.prune(0.5, round_to=round_to, recalibrate=False)
    theirs = copy.deepcopy(model0)
    tp.pruner.MetaPruner(theirs, X[:1], importance=tp.importance.MagnitudeImportance(p=2),
                         pruning_ratio=0.5, global_pruning=True, forward_fn=_tp_forward,
                         ignored_layers=[theirs.classifier], round_to=round_to).step()
    models = {"dense": model0, "ours": study.model, "anchor": theirs}
    times: dict = {k: [] for k in models}
    with torch.inference_mode():
        for m in models.values():
            _tp_forward(m, X)   # warm-up
        for r in range(rounds):
            keys = list(models)[r % 3:] + list(models)[:r % 3]   # rotate the order
            for k in keys:
                start = time.perf_counter()
                _tp_forward(models[k], X)
                times[k].append(time.perf_counter() - start)
    t = {k: statistics.median(v) for k, v in times.items()}
    macs = {k: count_macs(m, X[:1], _tp_forward) for k, m in models.items()}
    out = {}
    for who in ("ours", "anchor"):
        out[f"{who}_speedup"] = t["dense"] / t[who]
        out[f"{who}_mac_reduction"] = macs["dense"] / macs[who]
        out[f"{who}_ratio"] = out[f"{who}_speedup"] / out[f"{who}_mac_reduction"]
    out["ours_over_anchor"] = out["ours_ratio"] / out["anchor_ratio"]
    out["seconds_dense_ours_anchor"] = [t["dense"], t["ours"], t["anchor"]]
    return out


# ------------------------------------------------------------------ the parent's side
def measure(task: str, name: str, runs: int, n: int, threads: int, round_to) -> dict:
    results = {"ours": [], "anchor": []} if task != "speedup" else {"both": []}
    for i in range(runs):
        order = ("ours", "anchor") if i % 2 == 0 else ("anchor", "ours")
        for who in order if task != "speedup" else ("both",):
            cmd = [sys.executable, __file__, "_child", task, who, name, str(n), str(threads),
                   str(round_to or 0)]
            env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
            out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
            if out.returncode != 0:
                raise SystemExit(f"{who} failed:\n{out.stderr[-3000:]}")
            found = json.loads(out.stdout.strip().splitlines()[-1])
            results[who].append(found)
            print(f"  {task} {name} {who} run {i + 1}: {found}", file=sys.stderr, flush=True)
    summary = {}
    if task == "speedup":
        rows = results["both"]
        return {key: statistics.median(r[key] for r in rows) for key in rows[0]
                if not isinstance(rows[0][key], list)}
    for who, rows in results.items():
        for key in rows[0]:
            summary[f"{who}_{key}"] = statistics.median(r[key] for r in rows)
    summary["time_ratio"] = summary["ours_seconds"] / summary["anchor_seconds"]
    return summary


def main(argv=None) -> None:
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] == "_child":
        task, who, name, n, threads, round_to = argv[1:7]
        print(json.dumps(child(task, who, name, int(n), int(threads), int(round_to) or None)))
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("task", choices=TASKS)
    p.add_argument("--model", choices=MODELS, default="resnet50")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--samples", type=int, default=8, help="images or sequences")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--round-to", type=int, default=0)
    a = p.parse_args(argv)
    load = os.getloadavg()
    print(f"# {a.task} on {a.model}: {a.runs} runs each, {a.samples} inputs, {a.threads} "
          f"thread(s), load average at start {load[0]:.1f}", flush=True)
    summary = measure(a.task, a.model, a.runs, a.samples, a.threads, a.round_to or None)
    summary["load_average_end"] = os.getloadavg()[0]
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
