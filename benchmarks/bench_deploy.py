"""Deployment export (issue 13, item 4): latency of folded-BatchNorm pruned models in eager
PyTorch and in onnxruntime, and the size on disk of compressed masked models.

1. ``WideResNet`` of ``bench_core.py`` (32x32x3 inputs, 64-128 channels, residual adds), 50%
   of the channels of every group removed (``scope="layer"``, magnitude), as in the core
   benchmark. Dense and pruned models are timed in alternation at batch 1 and 64 as: eager
   with BatchNorm, eager with BatchNorm folded, and onnxruntime (BatchNorm folded, one
   intra-op thread like torch). The figure of merit is the latency ratio per MAC saved:
   (dense time / pruned time) / (dense MACs / pruned MACs); 1.0 means the time falls as
   fast as the arithmetic. Time is the median thread CPU time of a forward pass (the work
   done, robust to other processes on shared cores), with the median wall time beside it.
2. Masked models at 50, 80 and 90% weight sparsity (global magnitude, the output layer kept):
   bytes on disk of ``save_compressed`` against the same weights stored densely, against the
   masked state dict (weights + masks) and against the dense file compressed with zlib.

Run by hand: ``.venv/bin/python benchmarks/bench_deploy.py``; results go to
docs/benchmarks.md.
"""

from __future__ import annotations

import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import zlib
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
torch.set_num_threads(1)

from bench_core import WideResNet  # noqa: E402


def _interleaved(runners, repeats: int = 40) -> list[tuple[list[float], list[float]]]:
    """Wall and thread CPU times (ms) of each zero-argument callable over ``repeats`` runs,
    timed in alternation so that load changes on the machine hit every runner alike.

    With one intra-op thread, torch and onnxruntime compute in the calling thread, so its CPU
    time is the work done, unaffected by other processes waiting for the same cores; wall time
    also counts the waiting (on the shared development VM it was 2-4 times the CPU time).
    """
    times = [([], []) for _ in runners]
    for run in runners:
        for _ in range(3):
            run()
    for _ in range(repeats):
        for i, run in enumerate(runners):
            w, c = time.perf_counter(), time.thread_time()
            run()
            times[i][1].append((time.thread_time() - c) * 1000)
            times[i][0].append((time.perf_counter() - w) * 1000)
    return times


def _study():
    import xprune_nb as xp

    torch.manual_seed(0)
    X = torch.randn(512, 3, 32, 32)
    y = torch.randint(0, 10, (512,))
    study = xp.Study(WideResNet(), train=(X, y), test=(X[:128], y[:128]), probe_size=10)
    # BatchNorm statistics of a trained network, not the initial (0, 1): a few train passes
    study.model.train()
    with torch.no_grad():
        for i in range(0, 512, 64):
            study.model(X[i:i + 64])
    study.model.eval()
    study.original.load_state_dict(study.model.state_dict())
    return study


def bench_latency() -> dict:
    import xprune_nb as xp
    from xprune_nb.export.fold import fold_batchnorm
    from xprune_nb.export.onnx import export_onnx, onnx_session

    study = _study()
    study.score("magnitude", granularity="channel")
    study.prune(0.5, scope="layer")
    dense, pruned = study.original, study.model
    example = study.data.train.X[:2]
    out = {"export": {}}
    folded, sessions = {}, {}
    folder = Path(tempfile.mkdtemp())
    for name, model in (("dense", dense), ("pruned", pruned)):
        folded[name] = fold_batchnorm(model, example)
        t = time.perf_counter()
        path = export_onnx(model, example, folder / f"{name}.onnx")
        out["export"][name] = {"seconds": time.perf_counter() - t,
                               "bytes": path.stat().st_size,
                               "bn_folded": len(folded[name].xprune_fold.pairs)}
        sessions[name] = onnx_session(path, threads=1)
    macs = {n: xp.metrics.count_macs(m, example[:1], lambda m, v: m(v))
            for n, m in (("dense", dense), ("pruned", pruned))}
    mac_ratio = macs["dense"] / macs["pruned"]
    out["mac_ratio"] = mac_ratio
    for bs in (64, 1):
        x = torch.randn(bs, 3, 32, 32)
        xn = x.numpy()

        def eager(m, x=x):
            def run():
                with torch.inference_mode():
                    m(x)
            return run

        def ort(s, xn=xn):
            name = s.get_inputs()[0].name
            return lambda: s.run(None, {name: xn})

        runners = {"eager": (eager(dense), eager(pruned)),
                   "eager_folded": (eager(folded["dense"]), eager(folded["pruned"])),
                   "onnxruntime": (ort(sessions["dense"]), ort(sessions["pruned"]))}
        flat = [r for pair in runners.values() for r in pair]
        times = [(statistics.median(w), statistics.median(c)) for w, c in _interleaved(flat)]
        row = {}
        for i, key in enumerate(runners):
            (d_wall, d_cpu), (p_wall, p_cpu) = times[2 * i], times[2 * i + 1]
            row[key] = {"dense_cpu_ms": d_cpu, "pruned_cpu_ms": p_cpu,
                        "cpu_ratio_per_mac_ratio": (d_cpu / p_cpu) / mac_ratio,
                        "dense_wall_ms": d_wall, "pruned_wall_ms": p_wall,
                        "wall_ratio_per_mac_ratio": (d_wall / p_wall) / mac_ratio}
        out[f"batch_{bs}"] = row
        print(json.dumps({bs: row}), flush=True)
    return out


def _dense_zlib(model) -> int:
    state = {}
    sd = model.state_dict()
    for k, v in sd.items():
        if k.endswith("_mask") and k[:-5] + "_orig" in sd:
            continue
        state[k[:-5] if k.endswith("_orig") else k] = (
            v * sd[k[:-5] + "_mask"] if k.endswith("_orig") else v)
    buf = io.BytesIO()
    torch.save(state, buf)
    return len(zlib.compress(buf.getvalue(), 6))


def bench_sizes() -> list[dict]:
    import xprune_nb as xp
    from xprune_nb.export.compressed import load_compressed, save_compressed

    rows = []
    folder = Path(tempfile.mkdtemp())
    cases = [("WideResNet", _study), ("digits_cnn", lambda: xp.Study(
        xp.zoo.load("digits_cnn"), xp.datasets.load("digits"), seed=0, probe_size=10))]
    for label, make in cases:
        study = make()
        study.score("magnitude", granularity="weight")
        for amount in (0.5, 0.8, 0.9):
            study.goto(0)
            study.prune(amount)
            model = study.model
            path = folder / f"{label}_{amount}.xpz"
            t = time.perf_counter()
            size = save_compressed(model, path)
            save_s = time.perf_counter() - t
            buf = io.BytesIO()
            torch.save(model.state_dict(), buf)
            fresh = study.model_at(0)
            t = time.perf_counter()
            load_compressed(path, fresh)
            load_s = time.perf_counter() - t
            x = study.data.test.X[:8]
            with torch.no_grad():
                exact = bool(torch.equal(fresh(x), model(x)))
            rows.append({"model": label, "amount": amount, "sparsity": size.sparsity,
                         "compressed_bytes": size.bytes, "dense_bytes": size.dense_bytes,
                         "ratio": size.ratio, "masked_state_dict_bytes": len(buf.getvalue()),
                         "dense_zlib_bytes": _dense_zlib(model), "save_s": save_s,
                         "load_s": load_s, "outputs_identical": exact})
            print(json.dumps(rows[-1]), flush=True)
    return rows


if __name__ == "__main__":
    # ``bench_deploy.py latency`` or ``bench_deploy.py sizes`` runs one part only
    parts = sys.argv[1:] or ["latency", "sizes"]
    results = {"machine": {"python": platform.python_version(), "torch": torch.__version__,
                           "threads": torch.get_num_threads(),
                           "load_average": list(os.getloadavg())}}
    if "latency" in parts:
        results["latency"] = bench_latency()
    if "sizes" in parts:
        results["sizes"] = bench_sizes()
    try:
        import onnxruntime

        results["machine"]["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    print(json.dumps(results, indent=2))
