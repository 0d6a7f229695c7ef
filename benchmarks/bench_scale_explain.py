"""Real models at real size (issue 19), the explanation and head rows: xprune_nb against its
anchors on ResNet-50, ViT-B/16 and BERT-base built from Hugging Face configs at their default
sizes with random weights.

By hand, not in CI (minutes per task on two CPU cores)::

    python benchmarks/bench_scale_explain.py lrp --runs 3             # ResNet-50, 32 images
    python benchmarks/bench_scale_explain.py ig --runs 2 --steps 16   # ResNet-50, 8 images
    python benchmarks/bench_scale_explain.py shapley --runs 2 --nsamples 8   # ResNet-50
    python benchmarks/bench_scale_explain.py heads --model vit_b16 --runs 3
    python benchmarks/bench_scale_explain.py heads --model bert_base --runs 3

- ``lrp``: ``study.score("lrp", samples=32, batch_size=8)`` on an open study against zennit's
  ``Gradient`` attributor with the same rules (epsilon on Linear/Conv, pass-through on
  activations, BatchNorm merged by zennit's canonizer) on the same 32 images in batches of 8.
  Both warm up on 8 images first; the timed call is the study's second ``score``.
- ``ig``: ``study.saliency(0, -1, method="integrated_gradients", n=8, n_steps=S,
  internal_batch_size=8)`` on a study pruned by 30 % (untimed) against captum's
  ``IntegratedGradients`` of the same 8 images and targets on the same two models (the
  original, ``study.original``, and the pruned one, as they are: no copies). Both warm up on
  one image, 2 steps.
  Ours leaves the deletion/insertion curves for the first ask (``curves="lazy"``, the
  default); ``--curves`` times ``curves=True`` instead (the maps and the curves).
- ``shapley``: ``study.shapley(0, -1, inputs=X, background=B, nsamples=S)`` (8 images, 8
  background images; the default ``classes="auto"`` explains the classes the original
  predicts on the rows) on the same pruned study against shap's ``GradientExplainer(f,
  B).shap_values(X, nsamples=S, rseed=0)`` on both models, ``f`` the same classes' logits.
  Both warm up on one image, 2 samples.
- ``heads``: open + magnitude-score + prune 30 % of the attention heads
  (``Study``; ``score("magnitude", granularity="head")``; ``prune(0.3)``) against
  Torch-Pruning's ``MetaPruner`` with ``num_heads`` for every q/k/v projection,
  ``prune_num_heads=True``, ``prune_head_dims=False``, ``head_pruning_ratio=0.3`` and
  ``pruning_ratio=0.3`` with every layer but q/k/v ignored (heads only; Torch-Pruning
  removes heads inside a group's width step, which a ratio of 0 skips); local, 30 % per
  layer. Timed twice in the child (warm-up, then timed).

Every measurement is a fresh subprocess (its peak memory is its own, ``ru_maxrss`` above the
loaded model); ours and the anchor alternate, ``--runs`` times each, torch pinned to
``--threads``; the summary gives medians. Helpers (model builders, inputs, memory) come from
``bench_scale.py``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_scale import _build, _inputs, _peak_mb, _rss_mb, _tp_forward  # noqa: E402

TASKS = ("lrp", "ig", "shapley", "heads")
MODELS = ("resnet50", "vit_b16", "bert_base")


# ------------------------------------------------------------------ the child's side
def _lrp(who: str, name: str, n: int) -> dict:
    import torch

    model0 = _build(name)
    X, y = _inputs(name, n)
    base = _rss_mb()
    if who == "ours":
        import xprune_nb as xp

        study = xp.Study(model0, train=(X, y), test=(X[:8], y[:8]), probe_size=8)

        def run(k):
            study.score("lrp", samples=k, batch_size=8)
    else:
        from xprune_nb.models.mechanisms.lrp import (
            detached_copy,
            import_zennit,
            make_composite,
            make_rule,
        )

        zennit = import_zennit()

        class Logits(torch.nn.Module):   # zennit calls model(x) and needs a tensor out
            def __init__(self, inner):
                super().__init__()
                self.inner = inner

            def forward(self, x):
                return self.inner(x).logits

        def run(k):
            model = Logits(detached_copy(model0))
            composite = make_composite(make_rule("epsilon"), 1e-6)
            with zennit.attribution.Gradient(model, composite) as attributor:
                for i in range(0, k, 8):
                    xb, yb = X[i:i + 8], y[i:i + 8]

                    def start(out, yb=yb):   # the target logit, as ours starts from
                        one = torch.zeros_like(out)
                        return one.scatter_(1, yb.view(-1, 1), out.gather(1, yb.view(-1, 1)))

                    attributor(xb, start)
    run(8)
    t = time.perf_counter()
    run(n)
    return {"seconds": time.perf_counter() - t, "peak_above_model_mb": _peak_mb() - base}


def _pruned_study(name: str, n: int):
    import xprune_nb as xp

    model0 = _build(name)
    X, y = _inputs(name, n)
    study = xp.Study(model0, train=(X, y), test=(X, y), probe_size=n)
    study.score("magnitude", samples=n)
    study.prune(0.3, recalibrate=False)
    return study, X, y


def _ig(who: str, name: str, n: int, steps: int, curves: bool = False) -> dict:
    study, X, y = _pruned_study(name, n)
    base = _rss_mb()
    if who == "ours":
        def run(k, s):
            study.saliency(0, -1, method="integrated_gradients", inputs=X[:k],
                           labels=y[:k].tolist(), n_steps=s, internal_batch_size=8,
                           curves=True if curves else "lazy")
    else:
        import captum.attr

        def run(k, s):
            for model in (study.original, study.model):   # the two models as they are
                model.eval()
                captum.attr.IntegratedGradients(lambda x, m=model: m(x).logits).attribute(
                    X[:k], target=y[:k], n_steps=s, internal_batch_size=8,
                    return_convergence_delta=True)
    run(1, 2)
    t = time.perf_counter()
    run(n, steps)
    return {"seconds": time.perf_counter() - t, "peak_above_model_mb": _peak_mb() - base}


def _shapley(who: str, name: str, n: int, nsamples: int) -> dict:
    import torch

    study, X, _ = _pruned_study(name, 2 * n)
    X, B = X[:n], X[n:]
    base = _rss_mb()
    if who == "ours":
        def run(k, s):
            return len(study.shapley(0, -1, inputs=X[:k], background=B,
                                     nsamples=s).class_names)
    else:
        import shap

        def run(k, s):
            models = [study.original, study.model]   # the two models as they are
            with torch.no_grad():   # the classes ours explains: the original's predictions
                classes = sorted(set(models[0].eval()(X[:k]).logits.argmax(1).tolist()))
            for model in models:
                model.eval()

                class Picked(torch.nn.Module):
                    def __init__(self, inner):
                        super().__init__()
                        self.inner = inner

                    def forward(self, x):
                        return self.inner(x).logits[:, classes]

                shap.GradientExplainer(Picked(model), B).shap_values(X[:k], nsamples=s,
                                                                      rseed=0)
            return len(classes)
    run(1, 2)
    t = time.perf_counter()
    classes = run(n, nsamples)
    return {"seconds": time.perf_counter() - t, "peak_above_model_mb": _peak_mb() - base,
            "classes": classes}


def _attention_projections(model):
    """(attention module, [q, k, v]) for every self-attention block of a HF ViT/BERT."""
    found = []
    for m in model.modules():
        names = [("q_proj", "k_proj", "v_proj"), ("query", "key", "value")]
        for q, k, v in names:
            if all(hasattr(m, a) for a in (q, k, v)) and hasattr(m, "num_attention_heads"):
                found.append((m, [getattr(m, q), getattr(m, k), getattr(m, v)]))
    return found


def _heads(who: str, name: str, n: int) -> dict:
    model0 = _build(name)
    X, y = _inputs(name, n)
    base = _rss_mb()
    if who == "ours":
        import xprune_nb as xp

        def run():
            study = xp.Study(model0, train=(X, y), test=(X, y), probe_size=n)
            study.score("magnitude", granularity="head", samples=n)
            study.prune(0.3)
            return study.model
    else:
        import torch
        import torch_pruning as tp

        def run():
            model = copy.deepcopy(model0)
            attention = _attention_projections(model)
            heads = {p: m.num_attention_heads for m, ps in attention for p in ps}
            # heads only: Torch-Pruning prunes heads inside a group's width step, so the
            # ratio is > 0 and every layer outside q/k/v is ignored (no MLP or hidden width)
            ignored = [m for m in model.modules() if isinstance(m, (torch.nn.Linear,
                       torch.nn.Conv2d, torch.nn.Embedding)) and m not in heads]
            pruner = tp.pruner.MetaPruner(
                model, X[:1], importance=tp.importance.MagnitudeImportance(p=2),
                pruning_ratio=0.3, global_pruning=False, ignored_layers=ignored,
                forward_fn=_tp_forward, num_heads=heads, prune_num_heads=True,
                prune_head_dims=False, head_pruning_ratio=0.3)
            pruner.step()
            for m, ps in attention:   # as Torch-Pruning's HF examples do after a head prune
                m.num_attention_heads = pruner.num_heads[ps[0]]
            return model
    run()
    import gc
    gc.collect()   # the warm-up's objects (a study holds reference cycles) are not the timed run's
    t = time.perf_counter()
    model = run()
    seconds = time.perf_counter() - t
    heads_left = sum(m.num_attention_heads if who == "anchor" else
                     ps[0].out_features // (model0.config.hidden_size
                                            // model0.config.num_attention_heads)
                     for m, ps in _attention_projections(model))
    return {"seconds": seconds, "peak_above_model_mb": _peak_mb() - base,
            "heads_left": heads_left}


def child(task: str, who: str, name: str, n: int, threads: int, steps: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    if task == "lrp":
        return _lrp(who, name, n)
    if task == "ig":
        return _ig(who, name, n, steps, curves=os.environ.get("BENCH_CURVES") == "1")
    if task == "shapley":
        return _shapley(who, name, n, steps)
    return _heads(who, name, n)


# ------------------------------------------------------------------ the parent's side
def measure(task: str, name: str, runs: int, n: int, threads: int, steps: int) -> dict:
    results = {"ours": [], "anchor": []}
    for i in range(runs):
        for who in ("ours", "anchor") if i % 2 == 0 else ("anchor", "ours"):
            cmd = [sys.executable, __file__, "_child", task, who, name, str(n), str(threads),
                   str(steps)]
            env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
            out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
            if out.returncode != 0:
                raise SystemExit(f"{who} failed:\n{out.stderr[-3000:]}")
            found = json.loads(out.stdout.strip().splitlines()[-1])
            results[who].append(found)
            print(f"  {task} {name} {who} run {i + 1}: {found} load "
                  f"{os.getloadavg()[0]:.1f}", file=sys.stderr, flush=True)
    summary = {}
    for who, rows in results.items():
        for key in rows[0]:
            summary[f"{who}_{key}"] = statistics.median(r[key] for r in rows)
    summary["time_ratio"] = summary["ours_seconds"] / summary["anchor_seconds"]
    summary["memory_ratio"] = (summary["ours_peak_above_model_mb"]
                               / summary["anchor_peak_above_model_mb"])
    return summary


def main(argv=None) -> None:
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] == "_child":
        task, who, name, n, threads, steps = argv[1:7]
        print(json.dumps(child(task, who, name, int(n), int(threads), int(steps))))
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("task", choices=TASKS)
    p.add_argument("--model", choices=MODELS, default="resnet50")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--samples", type=int, default=None,
                   help="images or sequences (default: 32 for lrp, 8 otherwise)")
    p.add_argument("--steps", type=int, default=16, help="integrated-gradient steps (ig)")
    p.add_argument("--nsamples", type=int, default=8,
                   help="shap samples per row and class (shapley)")
    p.add_argument("--curves", action="store_true",
                   help="ig: ours computes the deletion/insertion curves too (curves=True)")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    n = a.samples or (32 if a.task == "lrp" else 8)
    load = os.getloadavg()
    print(f"# {a.task} on {a.model}: {a.runs} runs each, {n} inputs, {a.threads} thread(s), "
          f"load average at start {load[0]:.1f}", flush=True)
    if a.curves:
        os.environ["BENCH_CURVES"] = "1"   # read by the children (inherit the environment)
    steps = a.nsamples if a.task == "shapley" else a.steps
    summary = measure(a.task, a.model, a.runs, n, a.threads, steps)
    summary["load_average_end"] = os.getloadavg()[0]
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
