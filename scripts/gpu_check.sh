#!/usr/bin/env bash
# Run xprune_nb's CUDA paths end to end on a machine with a GPU (a few minutes at most).
#
#   scripts/gpu_check.sh            # from the repository root; uses `python3` (or $PYTHON)
#
# It uses whatever Python, torch and transformers the machine has (no install, no download):
# the repository root goes first on PYTHONPATH. A Python package the check needs and the
# machine lacks is named at the start, and the check stops there. Exit status 0 means every
# CUDA path passed; record the summary it prints in docs/benchmarks.md ("GPU check").
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export MPLBACKEND=Agg

"$PY" - <<'EOF'
import importlib, sys
missing = [m for m in ("torch", "torch_pruning", "numpy", "pandas", "captum")
           if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"gpu_check: missing Python packages {missing}; install them "
             "(pip install -e '.[explain]') and run again.")
import torch
if not torch.cuda.is_available():
    sys.exit("gpu_check: torch.cuda.is_available() is False on this machine: nothing to check.")
print(f"gpu_check: python {sys.version.split()[0]}, torch {torch.__version__}, "
      f"{torch.cuda.get_device_name(0)}", flush=True)
EOF

# 1. the CUDA-only unit tests (skipped on machines without a GPU)
if "$PY" -c "import pytest" 2>/dev/null; then
  timeout 240 "$PY" -m pytest -q -x -p no:cacheprovider tests/test_scale.py -k "cuda_only or device"
fi

# 2. one study end to end on the GPU, a tiny CNN and (when transformers is there) a tiny ViT
timeout 240 "$PY" - <<'EOF'
import importlib.util, tempfile, time, sys
import torch
from torch import nn
import xprune_nb as xp

torch.manual_seed(0)
results = []


def check(name, fn):
    start = time.perf_counter()
    try:
        fn()
        results.append((name, "ok", time.perf_counter() - start))
    except Exception as exc:  # noqa: BLE001 - report every path, then fail at the end
        results.append((name, f"FAILED {type(exc).__name__}: {exc}", time.perf_counter() - start))


def on_cuda(model):
    return all(p.is_cuda for p in model.parameters())


def run(label, model, X, y):
    study = xp.Study(model, train=(X, y), test=(X[:64], y[:64]), device="cuda", probe_size=8)
    check(f"{label}: Study(device='cuda')", lambda: (on_cuda(study.model) and on_cuda(
        study.original)) or sys.exit("models not on CUDA"))
    check(f"{label}: score taylor", lambda: study.score("taylor", samples=64))
    check(f"{label}: prune 30%", lambda: study.prune(0.3))
    check(f"{label}: model on CUDA after surgery", lambda: on_cuda(study.model) or sys.exit(
        "pruned model left CUDA"))
    check(f"{label}: retrain", lambda: study.retrain(epochs=1, progress=False))
    check(f"{label}: evaluate(latency=True)", lambda: study.evaluate(latency=True))
    check(f"{label}: drift", lambda: study.drift())
    check(f"{label}: saliency", lambda: study.saliency(0, -1))
    check(f"{label}: sensitivity", lambda: study.sensitivity("magnitude", amounts=(0.2,)))
    check(f"{label}: goto/model_at", lambda: study.goto(1) and on_cuda(study.model_at(2)))
    check(f"{label}: auto_prune(latency=)", lambda: study.auto_prune(latency=0.9, steps=1))
    with tempfile.TemporaryDirectory() as tmp:
        def save_load():
            study.save(f"{tmp}/s.xprune")
            back = xp.Study.load(f"{tmp}/s.xprune", model=model_fresh(label), data=study.data,
                                 device="cpu")
            assert back.device.type == "cpu" and not on_cuda(back.model)
        check(f"{label}: saved on CUDA, loaded on CPU", save_load)


class Cnn(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.c2, self.r1, self.r2 = nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.ReLU()
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        x = self.r2(self.c2(self.r1(self.b1(self.c1(x)))))
        return self.head(x.mean(dim=(2, 3)))


def model_fresh(label):
    return Cnn() if label == "cnn" else vit()


def vit():
    import transformers
    cfg = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=64,
                                 num_hidden_layers=2, num_attention_heads=4,
                                 intermediate_size=128, num_labels=10)
    torch.manual_seed(1)
    return transformers.ViTForImageClassification(cfg)


X, y = torch.randn(256, 3, 32, 32), torch.arange(256) % 10
run("cnn", Cnn(), X, y)
if importlib.util.find_spec("transformers") is not None:
    run("vit", vit(), X, y)
width = max(len(n) for n, _, _ in results)
for name, outcome, seconds in results:
    print(f"{name:<{width}}  {seconds:7.2f} s  {outcome}")
failed = [n for n, o, _ in results if o != "ok"]
print(f"gpu_check: {len(results) - len(failed)} of {len(results)} CUDA paths passed")
sys.exit(1 if failed else 0)
EOF
